/**
 * virtio-blk, control half: features, configuration space, writeback cache,
 * and the parameters its queue Workers are built from.
 *
 * @module
 */

import { fdatasync } from "../../../ffi/mod.ts";
import { releaseFileInBackground } from "../../io/background_release.ts";
import type { FileIoEngineKind } from "../../io/file_io_engine.ts";
import { bit, maskOf, RING_FEATURES } from "../../protocol/mod.ts";
import type { VirtioDevice, WorkerSetup } from "../device.ts";
import { type Backing, closeBacking } from "./backing.ts";
import {
  BLK_CONFIG_SIZE,
  BlkConfigOffset,
  BlkFeature,
  DEVICE_ID_LENGTH,
  encodeBlkConfig,
  SECTOR_SIZE,
} from "./blk_spec.ts";
import { type BlkCounter, BlkSharedState } from "./blk_shared_state.ts";
import { type BlkState, BlkStateSupport, type BlkStateTarget } from "./blk_state.ts";
import { blkMetricFamilies } from "./blk_metrics.ts";
import type { MetricFamily } from "../../metrics/exposition.ts";

/**
 * Most request queues a device offers: QEMU's limit on a virtio device's
 * queues (VIRTIO_QUEUE_MAX), so any count QEMU accepts can be offered.
 */
export const MAX_BLK_QUEUES = 1024;

/** Most queue Workers the sync engine gets unless `--workers` says otherwise. */
export const SYNC_DEFAULT_MAX_WORKERS = 4;

/** Options of a virtio-blk device besides its backing. */
export interface BlkOptions {
  /** Number of request queues offered (1..MAX_BLK_QUEUES); the front-end starts as many as it uses. */
  numQueues: number;
  /** Largest virtqueue size (power of two, up to 32768). */
  queueSize: number;
  /** GET_ID answer, at most 20 bytes. */
  serial: string;
  /** File I/O engine of the queue Workers (decided on the main thread); default "sync". */
  aio?: FileIoEngineKind;
}

/** Largest discard/write-zeroes request, in sectors (2 GiB). */
const MAX_DISCARD_SECTORS = 0x40_0000;
/** Largest number of segments in one discard/write-zeroes request. */
const MAX_DISCARD_SEGMENTS = 16;
/** Data segments per request: Linux sizes its scatterlists from this; queue size minus header and status. */
const SEG_MAX = 126;

/** Worker parameters of the blk data half. */
export interface BlkWorkerParams extends Record<string, unknown> {
  size: number;
  readOnly: boolean;
  serial: string;
  segMax: number;
  maxDiscardSectors: number;
  maxDiscardSegments: number;
  /** File I/O engine each Worker opens ("io_uring" or "sync"); absent means "sync". */
  aio?: FileIoEngineKind;
  /** Largest queue size (sizes the Worker's engine and request pool). */
  queueSize?: number;
  /** Number of request queues. */
  numQueues?: number;
  /**
   * Set when the backing fd has O_DIRECT (`--cache none`): guest buffers
   * whose address is not a multiple of `memAlign` or whose length is not a
   * multiple of `offsetAlign` go through bounce buffers; a request whose
   * file offset or length is not a multiple of `offsetAlign` goes to
   * `bufferedFd` (the image without O_DIRECT, -1 when offsetAlign <= 512).
   */
  direct?: { memAlign: number; offsetAlign: number; bufferedFd: number };
}

/** A virtio-blk device over a Backing. */
export class BlkDevice implements VirtioDevice, BlkStateTarget {
  /** Device kind. */
  readonly kind = "blk";
  /** Number of request queues. */
  readonly numQueues: number;
  /** Largest queue size accepted. */
  readonly maxQueueSize: number;
  /** The storage (its fd changes when a LOAD brings new RAM disk contents). */
  backing: Backing;
  /** GET_ID answer. */
  readonly serial: string;
  /** Flags and counters shared with the Workers. */
  readonly shared = new BlkSharedState();
  /** DEVICE_STATE save/load. */
  readonly stateSupport: BlkStateSupport = new BlkStateSupport(this);
  /** File I/O engine the queue Workers use. */
  readonly aio: FileIoEngineKind;
  /**
   * With io_uring one Worker serves every queue, as qemu-storage-daemon's
   * one iothread does: the kernel runs the I/O in parallel, and a Worker
   * that is already awake (polling) picks up the next request of any queue,
   * where Workers per queue would each be woken cold at low depth (README
   * "Benchmark": four queues at depth 1). The sync engine's Worker is the
   * I/O, so it has one Worker per queue, at most one per CPU and at most
   * SYNC_DEFAULT_MAX_WORKERS: the 64 queues offered by default must not
   * mean 64 Workers (`--workers` asks for more).
   */
  readonly preferredWorkers: number | undefined;
  #acked = 0n;
  /** Features were set since the last reset (the first SET_FEATURES initialises the cache mode). */
  #negotiated = false;
  /** A loaded state waits for the front-end's start sequence, which must not undo it. */
  #loadPending = false;

  /** Builds a device; the backing is owned by the device from now on. */
  constructor(backing: Backing, options: BlkOptions) {
    const q = options.numQueues;
    if (!Number.isInteger(q) || q < 1 || q > MAX_BLK_QUEUES) {
      closeBacking(backing);
      throw new RangeError(`number of request queues ${q} is outside 1..${MAX_BLK_QUEUES}`);
    }
    this.backing = backing;
    this.numQueues = options.numQueues;
    this.maxQueueSize = options.queueSize;
    this.serial = options.serial;
    this.aio = options.aio ?? "sync";
    this.preferredWorkers = this.aio === "io_uring" ? 1 : Math.max(
      1,
      Math.min(q, navigator.hardwareConcurrency || 1, SYNC_DEFAULT_MAX_WORKERS),
    );
    this.shared.writeback = true;
    this.shared.backingFd = backing.fd;
  }

  /** Disk size in bytes. */
  get size(): number {
    return this.backing.size;
  }

  /** Writes refused. */
  get readOnly(): boolean {
    return this.backing.readOnly;
  }

  /** "ram" or "file". */
  get backingKind(): "ram" | "file" {
    return this.backing.kind;
  }

  /** The fd holding the disk now. */
  get backingFd(): number {
    return this.backing.fd;
  }

  /** Writeback cache on. */
  get writeback(): boolean {
    return this.shared.writeback;
  }

  /** Request counters. */
  counters(): Record<BlkCounter, bigint> {
    return this.shared.counters();
  }

  /** The request counters as `--metrics` families. */
  metrics(): MetricFamily[] {
    return blkMetricFamilies(this.shared.counters());
  }

  /** Installs a verified loaded state (rings are stopped: no Worker is using the backing). */
  install(state: BlkState, ramFd: number | undefined): void {
    if (ramFd !== undefined) {
      const old = this.backing.fd;
      this.backing = { ...this.backing, fd: ramFd };
      this.shared.backingFd = ramFd;
      // Freeing a full disk takes a while: not before CHECK_DEVICE_STATE's reply.
      releaseFileInBackground(old, this.size);
    }
    this.#acked = state.features;
    this.shared.writeback = state.writeback;
    this.shared.setCounters(state.counters);
    this.#loadPending = true;
  }

  /** The first ring start ends the start sequence after a LOAD. */
  ringStarted(): void {
    this.#loadPending = false;
  }

  /** virtio-blk and ring features offered. */
  features(): bigint {
    const bits: number[] = [
      BlkFeature.SEG_MAX,
      BlkFeature.BLK_SIZE,
      BlkFeature.FLUSH,
      BlkFeature.TOPOLOGY,
      BlkFeature.CONFIG_WCE,
      BlkFeature.MQ,
    ];
    if (this.backing.readOnly) bits.push(BlkFeature.RO);
    else bits.push(BlkFeature.DISCARD, BlkFeature.WRITE_ZEROES);
    return RING_FEATURES | maskOf(bits);
  }

  /**
   * Remembers the accepted features and sets the cache mode as virtio 1.2
   * §5.2.5/§5.2.6.2 ask: without CONFIG_WCE the cache is writeback exactly
   * when FLUSH was negotiated (else write-through: every write is durable
   * before it completes). With CONFIG_WCE the first negotiation after a
   * reset initialises `writeback` the same way (0 when FLUSH is missing);
   * later SET_FEATURES (QEMU re-sends them to switch dirty logging) keep
   * what the driver chose. A loaded state keeps its cache mode.
   */
  setAckedFeatures(features: bigint): void {
    this.#acked = features;
    const first = !this.#negotiated;
    this.#negotiated = true;
    if (this.#loadPending) return;
    const flush = (features & bit(BlkFeature.FLUSH)) !== 0n;
    if ((features & bit(BlkFeature.CONFIG_WCE)) === 0n || first) this.shared.writeback = flush;
  }

  /** Features accepted by the driver. */
  ackedFeatures(): bigint {
    return this.#acked;
  }

  /** Current configuration space. */
  readConfig(): Uint8Array {
    return encodeBlkConfig({
      capacitySectors: this.backing.size / SECTOR_SIZE,
      segMax: SEG_MAX,
      blkSize: SECTOR_SIZE,
      writeback: this.shared.writeback ? 1 : 0,
      numQueues: this.numQueues,
      maxDiscardSectors: MAX_DISCARD_SECTORS,
      maxDiscardSeg: MAX_DISCARD_SEGMENTS,
    });
  }

  /** Only the writeback byte is writable (CONFIG_WCE). */
  writeConfig(offset: number, data: Uint8Array): string | undefined {
    if (offset + data.length > BLK_CONFIG_SIZE) {
      return "write past the end of the configuration space";
    }
    const end = offset + data.length;
    for (let i = offset; i < end; i++) {
      if (i !== BlkConfigOffset.writeback) {
        // Drivers rewrite whole fields; accept unchanged bytes, refuse real changes.
        if (data[i - offset] !== this.readConfig()[i]) {
          return `configuration byte ${i} is read-only`;
        }
      }
    }
    if (offset <= BlkConfigOffset.writeback && BlkConfigOffset.writeback < end) {
      const value = data[BlkConfigOffset.writeback - offset];
      if (value > 1) return `writeback must be 0 or 1, got ${value}`;
      this.shared.writeback = value === 1;
    }
    return undefined;
  }

  /** Device reset: accepted features forgotten, cache back to writeback. */
  reset(): void {
    this.#acked = 0n;
    this.#negotiated = false;
    // A reset in the start sequence that follows a LOAD keeps the loaded cache mode.
    if (!this.#loadPending) this.shared.writeback = true;
  }

  /** Plain parameters for queue Workers. */
  workerSetup(): WorkerSetup {
    const params: BlkWorkerParams = {
      size: this.backing.size,
      readOnly: this.backing.readOnly,
      serial: this.serial,
      segMax: SEG_MAX,
      maxDiscardSectors: MAX_DISCARD_SECTORS,
      maxDiscardSegments: MAX_DISCARD_SEGMENTS,
      aio: this.aio,
      queueSize: this.maxQueueSize,
      numQueues: this.numQueues,
    };
    const direct = this.backing.direct;
    if (direct) {
      params.direct = {
        memAlign: direct.memAlign,
        offsetAlign: direct.offsetAlign,
        bufferedFd: direct.bufferedFd,
      };
    }
    return { kind: this.kind, params, shared: this.shared.buffer };
  }

  /** fdatasync the image (no-op for RAM). */
  flush(): void {
    if (this.backing.kind === "file" && !this.backing.readOnly) fdatasync(this.backing.fd);
  }

  /** Closes the backing. */
  close(): void {
    closeBacking(this.backing);
  }

  /** One line for logs. */
  describe(): string {
    const what = this.backing.kind === "ram" ? "RAM" : this.backing.path;
    return `virtio-blk ${what}, ${this.backing.size} bytes${
      this.backing.readOnly ? ", read-only" : ""
    }, ${this.numQueues} queue(s) of up to ${this.maxQueueSize}, serial "${this.serial}", aio ${this.aio}, cache ${
      this.backing.direct ? "none (O_DIRECT)" : "writeback"
    }`;
  }
}

/** Checks a serial number: printable ASCII, at most 20 bytes. */
export function validateSerial(serial: string): string | undefined {
  if (new TextEncoder().encode(serial).length > DEVICE_ID_LENGTH) {
    return `serial must be at most ${DEVICE_ID_LENGTH} bytes`;
  }
  if (!/^[\x20-\x7e]*$/.test(serial)) return "serial must be printable ASCII";
  return undefined;
}
