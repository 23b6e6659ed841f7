/**
 * virtio-vsock device state for DEVICE_STATE and the `vhostd state` tools.
 * Connections do not move (a migrated guest gets a transport reset and its
 * sockets start over), so the state is the configuration: the guest CID,
 * which must match on load, and the negotiated features.
 *
 * @module
 */

import type { DeviceSnapshot, DeviceStateSupport, LoadStaging } from "../device.ts";

/** What vsock state support needs from the device. */
export interface VsockStateTarget {
  /** The guest's context id. */
  readonly guestCid: number;
  /** Features the device offers. */
  features(): bigint;
  /** Features the driver accepted. */
  ackedFeatures(): bigint;
  /** Installs verified loaded features. */
  installFeatures(features: bigint): void;
}

/** The decoded vsock state. */
export interface VsockState {
  /** The guest CID the state was saved with. */
  guestCid: number;
  /** Negotiated virtio features. */
  features: bigint;
}

/** Decodes and checks a vsock state; throws Error with a one-line reason. */
export function decodeVsockState(
  state: Record<string, unknown>,
  guestCid: number,
  offered: bigint,
): VsockState {
  const { guestCid: savedCid, features } = state;
  if (typeof savedCid !== "number" || !Number.isInteger(savedCid)) {
    throw new Error(
      `vsock state: guestCid must be a whole number, got ${JSON.stringify(savedCid)}`,
    );
  }
  if (savedCid !== guestCid) {
    throw new Error(`vsock state: saved for guest CID ${savedCid}, this device serves ${guestCid}`);
  }
  if (typeof features !== "string" || !/^0x[0-9a-f]{1,16}$/.test(features)) {
    throw new Error(`vsock state: features must be a hex string, got ${JSON.stringify(features)}`);
  }
  const mask = BigInt(features);
  if ((mask & ~offered) !== 0n) {
    throw new Error(
      `vsock state: negotiated features 0x${(mask & ~offered).toString(16)} are not offered`,
    );
  }
  return { guestCid: savedCid, features: mask };
}

/** DEVICE_STATE support of a vsock device. */
export class VsockStateSupport implements DeviceStateSupport {
  readonly #device: VsockStateTarget;

  /** State support for `device`. */
  constructor(device: VsockStateTarget) {
    this.#device = device;
  }

  /** The configuration a loaded state must match. */
  identity(): Record<string, unknown> {
    return { guestCid: this.#device.guestCid };
  }

  /** The guest CID and the negotiated features. */
  snapshot(): DeviceSnapshot {
    const d = this.#device;
    return {
      state: { guestCid: d.guestCid, features: `0x${d.ackedFeatures().toString(16)}` },
    };
  }

  /** Nothing to stage. */
  prepareLoad(): LoadStaging {
    return {};
  }

  /** Checks the state, then installs its features. */
  applyLoad(state: Record<string, unknown>): void {
    const d = this.#device;
    d.installFeatures(decodeVsockState(state, d.guestCid, d.features()).features);
  }

  /** Nothing staged. */
  discardLoad(): void {}
}

/** Lines about a saved vsock state for `vhostd state inspect` (untrusted input, never throws). */
export function describeVsockState(state: unknown): string[] {
  if (typeof state !== "object" || state === null || Array.isArray(state)) {
    return ["vsock: no device state object"];
  }
  const { guestCid, features } = state as Record<string, unknown>;
  return [
    `vsock: guest CID ${
      typeof guestCid === "number" ? guestCid : `<bad: ${JSON.stringify(guestCid)}>`
    }`,
    `vsock: negotiated features ${typeof features === "string" ? features : "<bad>"}`,
    "vsock: connections are not part of the state (they are reset on migration)",
  ];
}
