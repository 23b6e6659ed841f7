/**
 * Inflight I/O tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) on the main
 * thread: the area a front-end keeps for the back-end so that requests in
 * flight survive a back-end crash.
 *
 * - GET_INFLIGHT_FD: a new zeroed memfd of
 *   `num_queues * ALIGN_UP(16 * queue_size + 2, 64)` bytes, offset 0, is
 *   sent with the reply (and closed here once sent). vhostd keeps nothing:
 *   the front-end owns the area and sends it back with SET_INFLIGHT_FD.
 *   QEMU asks once per device start when it has no area (first start, after
 *   a device reset, on a migration destination) and keeps it across
 *   back-end reconnects.
 * - SET_INFLIGHT_FD (only while no ring runs): the area is mapped, each
 *   queue's region checked (see `prepareInflightQueue`), and kept until the
 *   next SET_INFLIGHT_FD or the disconnect. RESET_DEVICE/RESET_OWNER keep it,
 *   as libvhost-user does; QEMU sends SET_INFLIGHT_FD before every start.
 * - Ring start: queue i gets the slice `[i * regionSize, (i + 1) * regionSize)`
 *   in the Worker's "start" command (`inflight: { hostAddr, size }`). Before
 *   that, the back-end runs `InflightQueue.recover()` on it with the used
 *   ring's idx from guest memory and starts the ring at
 *   `nextAvail = used.idx + (heads in flight)`, ignoring SET_VRING_BASE (as
 *   libvhost-user's vu_check_queue_inflights does): after a crash QEMU
 *   restarts the ring from used.idx, and everything popped since is either
 *   completed (counted by used.idx) or still in flight (recorded here). The
 *   Worker runs `recover()` again (it finds the same heads) and resubmits
 *   them; see src/virtqueue/inflight_region.ts for the order of its calls.
 *   A region that fails the checks is logged and the ring runs untracked.
 *
 * @module
 */

import { closeQuietly, ftruncate, mapArrayBuffer, memfdCreate, munmap } from "../../ffi/mod.ts";
import { mapFileRange, MappingError } from "../memory/mapped_regions.ts";
import type { InflightDesc } from "../protocol/mod.ts";
import {
  inflightQueueRegionSize,
  inflightRegionSize,
  MAX_INFLIGHT_QUEUE_SIZE,
  prepareInflightQueue,
} from "../virtqueue/inflight_region.ts";
import { log } from "../log.ts";
import { RequestError } from "./request_error.ts";
import type { InflightMapping } from "./worker_protocol.ts";

/** Largest mapping made for an area: its offset plus the bytes its queues use. */
const MAX_MAPPING = 2 ** 32;

/** One queue's share of the mapped area. */
export interface InflightSlice extends InflightMapping {
  /** A main-thread view of the slice (valid until the area is replaced or closed). */
  bytes: Uint8Array;
}

interface MappedArea {
  base: bigint;
  length: number;
  /** Host address of the area's first byte (base + mmap_offset). */
  hostAddr: bigint;
  numQueues: number;
  queueSize: number;
  regionSize: number;
  bytes: Uint8Array;
}

/** What GET_INFLIGHT_FD answers: the description and the memfd (the caller sends and closes it). */
export interface NewInflightArea {
  /** The reply payload. */
  desc: InflightDesc;
  /** The memfd holding the zeroed area. */
  fd: number;
}

/** The inflight area of one connection. */
export class InflightTracking {
  readonly #maxQueues: number;
  #area: MappedArea | undefined;

  /** Tracking for a device with `maxQueues` queues. */
  constructor(maxQueues: number) {
    this.#maxQueues = maxQueues;
  }

  /** True while an area from SET_INFLIGHT_FD is mapped. */
  get active(): boolean {
    return this.#area !== undefined;
  }

  #checkQueues(numQueues: number, queueSize: number): void {
    if (numQueues < 1 || numQueues > this.#maxQueues) {
      throw new RequestError(
        `inflight area for ${numQueues} queues, the device has ${this.#maxQueues}`,
      );
    }
    if (queueSize < 1 || queueSize > MAX_INFLIGHT_QUEUE_SIZE) {
      throw new RequestError(
        `inflight queue size ${queueSize} is outside 1..${MAX_INFLIGHT_QUEUE_SIZE}`,
      );
    }
  }

  /** GET_INFLIGHT_FD: a fresh zeroed area for `request.numQueues` queues of `request.queueSize`. */
  create(request: InflightDesc): NewInflightArea {
    const { numQueues, queueSize } = request;
    this.#checkQueues(numQueues, queueSize);
    const size = inflightRegionSize(numQueues, queueSize);
    const fd = memfdCreate("vhostd-inflight");
    try {
      ftruncate(fd, size); // a new memfd reads as zeros
    } catch (e) {
      closeQuietly(fd);
      throw new RequestError(
        `cannot size the inflight area: ${e instanceof Error ? e.message : e}`,
      );
    }
    log.debug(`inflight area created: ${numQueues} queues of ${queueSize}, ${size} bytes`);
    return { desc: { mmapSize: BigInt(size), mmapOffset: 0n, numQueues, queueSize }, fd };
  }

  /**
   * SET_INFLIGHT_FD: maps `desc` from `fd` (taking ownership of it) and
   * replaces the current area. The caller makes sure no ring runs. Throws
   * RequestError, keeping the current area, when the description does not
   * fit the device, the size is too small for its queues, the fd cannot be
   * mapped or a queue region is not acceptable.
   */
  install(desc: InflightDesc, fd: number): void {
    let area: MappedArea;
    try {
      this.#checkQueues(desc.numQueues, desc.queueSize);
      const needed = inflightRegionSize(desc.numQueues, desc.queueSize);
      if (desc.mmapSize < BigInt(needed)) {
        throw new RequestError(
          `inflight area of ${desc.mmapSize} bytes is too small for ${desc.numQueues} queues of ${desc.queueSize} (${needed} bytes)`,
        );
      }
      // The mapping starts at file offset 0 (see mapFileRange): keep it small.
      if (desc.mmapOffset > BigInt(MAX_MAPPING - needed)) {
        throw new RequestError(`inflight area offset ${desc.mmapOffset} is not usable`);
      }
      const offset = Number(desc.mmapOffset);
      // Only the part the queues use is mapped; a larger area is fine.
      const { base, length } = mapFileRange(fd, offset, needed, "inflight area");
      try {
        area = InflightTracking.#checkedArea(base, length, offset, desc);
      } catch (e) {
        munmap(base, length);
        throw e;
      }
    } catch (e) {
      throw e instanceof MappingError ? new RequestError(e.message) : e;
    } finally {
      closeQuietly(fd);
    }
    this.#release();
    this.#area = area;
    log.debug(
      `inflight area mapped: ${area.numQueues} queues of ${area.queueSize} (${area.regionSize} bytes each)`,
    );
  }

  /** The area over a fresh mapping, every queue region checked (throws RequestError). */
  static #checkedArea(
    base: bigint,
    length: number,
    offset: number,
    desc: InflightDesc,
  ): MappedArea {
    const needed = length - offset;
    const regionSize = inflightQueueRegionSize(desc.queueSize);
    const bytes = new Uint8Array(mapArrayBuffer(base, length), offset, needed);
    for (let q = 0; q < desc.numQueues; q++) {
      const problem = prepareInflightQueue(
        bytes.subarray(q * regionSize, (q + 1) * regionSize),
        desc.queueSize,
      );
      if (problem !== undefined) throw new RequestError(`queue ${q}: ${problem}`);
    }
    return {
      base,
      length,
      hostAddr: base + BigInt(offset),
      numQueues: desc.numQueues,
      queueSize: desc.queueSize,
      regionSize,
      bytes,
    };
  }

  /** Queue `queue`'s slice, or undefined without an area or when the area does not cover it. */
  slice(queue: number): InflightSlice | undefined {
    const a = this.#area;
    if (!a || queue < 0 || queue >= a.numQueues) return undefined;
    const start = queue * a.regionSize;
    return {
      hostAddr: a.hostAddr + BigInt(start),
      size: a.regionSize,
      bytes: a.bytes.subarray(start, start + a.regionSize),
    };
  }

  #release(): void {
    if (this.#area) munmap(this.#area.base, this.#area.length);
    this.#area = undefined;
  }

  /** Unmaps the area (no Worker may hold a view of it any more). */
  close(): void {
    this.#release();
  }
}
