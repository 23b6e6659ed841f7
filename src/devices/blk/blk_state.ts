/**
 * virtio-blk device state for DEVICE_STATE and the `vhostd state` tools.
 *
 * Identity (must match to load): disk size, read-only, backing kind (RAM
 * contents only fit a RAM disk), serial, queue count, block size. State: the
 * negotiated features, the writeback-cache setting and the request
 * counters; a RAM disk also carries its contents (the RAM_DISK section).
 * An image file's contents are not part of the state: source and
 * destination share the file.
 *
 * @module
 */

import { closeQuietly, ftruncate, memfdCreate } from "../../../ffi/mod.ts";
import { releaseFileInBackground } from "../../io/background_release.ts";
import type { DeviceSnapshot, DeviceStateSupport, LoadStaging } from "../device.ts";
import { BLK_COUNTERS, type BlkCounter } from "./blk_shared_state.ts";
import { SECTOR_SIZE } from "./blk_spec.ts";

/** What blk state support needs from the device. */
export interface BlkStateTarget {
  /** Disk size in bytes. */
  readonly size: number;
  /** Writes refused. */
  readonly readOnly: boolean;
  /** "ram" or "file". */
  readonly backingKind: "ram" | "file";
  /** The fd holding the disk now. */
  readonly backingFd: number;
  /** GET_ID answer. */
  readonly serial: string;
  /** Number of request queues. */
  readonly numQueues: number;
  /** Features the device offers (a loaded feature set must be a subset). */
  features(): bigint;
  /** Features the driver accepted. */
  ackedFeatures(): bigint;
  /** Writeback cache on. */
  readonly writeback: boolean;
  /** Request counters. */
  counters(): Record<BlkCounter, bigint>;
  /** Installs a verified state; `ramFd` replaces the RAM disk (the device closes the old one). */
  install(state: BlkState, ramFd: number | undefined): void;
}

/** The decoded blk state. */
export interface BlkState {
  /** Negotiated virtio features. */
  features: bigint;
  /** Writeback cache on. */
  writeback: boolean;
  /** Request counters. */
  counters: Partial<Record<BlkCounter, bigint>>;
}

/** Decodes and checks the JSON state of a blk device; throws Error with a one-line reason. */
export function decodeBlkState(state: Record<string, unknown>, offered: bigint): BlkState {
  const { features, writeback, counters } = state;
  if (typeof features !== "string" || !/^0x[0-9a-f]{1,16}$/.test(features)) {
    throw new Error(`blk state: features must be a hex string, got ${JSON.stringify(features)}`);
  }
  const mask = BigInt(features);
  if ((mask & ~offered) !== 0n) {
    throw new Error(
      `blk state: negotiated features 0x${
        (mask & ~offered).toString(16)
      } are not offered by this device`,
    );
  }
  if (typeof writeback !== "boolean") throw new Error("blk state: writeback must be true or false");
  if (typeof counters !== "object" || counters === null || Array.isArray(counters)) {
    throw new Error("blk state: counters must be an object");
  }
  const decoded: Partial<Record<BlkCounter, bigint>> = {};
  for (const name of BLK_COUNTERS) {
    const value = (counters as Record<string, unknown>)[name];
    if (value === undefined) continue;
    if (typeof value !== "string" || !/^\d{1,20}$/.test(value)) {
      throw new Error(`blk state: counter ${name} must be a decimal string`);
    }
    decoded[name] = BigInt(value);
  }
  return { features: mask, writeback, counters: decoded };
}

/** DEVICE_STATE support of a blk device. */
export class BlkStateSupport implements DeviceStateSupport {
  readonly #device: BlkStateTarget;

  /** State support for `device`. */
  constructor(device: BlkStateTarget) {
    this.#device = device;
  }

  /** The configuration a loaded state must match. */
  identity(): Record<string, unknown> {
    const d = this.#device;
    return {
      size: d.size,
      readOnly: d.readOnly,
      backing: d.backingKind,
      serial: d.serial,
      numQueues: d.numQueues,
      blockSize: SECTOR_SIZE,
    };
  }

  /** Features, writeback, counters, and the RAM disk to stream. */
  snapshot(): DeviceSnapshot {
    const d = this.#device;
    const counters = Object.fromEntries(
      Object.entries(d.counters()).map(([name, value]) => [name, value.toString()]),
    );
    return {
      state: { features: `0x${d.ackedFeatures().toString(16)}`, writeback: d.writeback, counters },
      ramDisk: d.backingKind === "ram" ? { fd: d.backingFd, size: d.size } : undefined,
    };
  }

  /** A fresh memfd for a RAM disk's contents; nothing for an image file. */
  prepareLoad(): LoadStaging {
    const d = this.#device;
    if (d.backingKind !== "ram") return {};
    const fd = memfdCreate("vhostd-ram-disk-load");
    try {
      ftruncate(fd, d.size);
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
    return { ramDisk: { fd, size: d.size } };
  }

  /** Checks the state, then installs it (and the staged RAM disk). */
  applyLoad(state: Record<string, unknown>, staging: LoadStaging): void {
    const d = this.#device;
    const decoded = decodeBlkState(state, d.features());
    if (d.backingKind === "ram" && !staging.ramDisk) {
      throw new Error("blk state: no RAM disk contents");
    }
    d.install(decoded, staging.ramDisk?.fd);
  }

  /** Closes a staged RAM disk. */
  discardLoad(staging: LoadStaging): void {
    if (staging.ramDisk) releaseFileInBackground(staging.ramDisk.fd, staging.ramDisk.size);
  }

  /** A RAM disk does not follow a VM whose front-end does not move back-end state. */
  migrationWarning(): string | undefined {
    if (this.#device.backingKind !== "ram") return undefined;
    return "dirty-page logging started on a RAM disk, but this front-end does not move back-end " +
      "state (DEVICE_STATE not negotiated): the disk's contents will NOT follow the VM; " +
      "use a shared image (--file) for live migration";
  }
}
