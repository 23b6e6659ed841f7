/**
 * A virtio-blk driver in TypeScript: brings a vhost-user-blk back-end up the
 * way a guest and its VMM would, then issues requests through real split
 * rings in shared memory. Requests are built as separate header / data /
 * status descriptors (optionally behind an indirect table), with buffers
 * from a reusable pool in guest memory.
 *
 * Two interfaces: one-call helpers (`read`, `write`, ...) that wait for
 * their own completion, and a batched one (`submit` + `waitCompletions`)
 * for benchmarks. Everything is synchronous; waits are bounded.
 *
 * @module
 */

import { BlkConfigOffset, BlkFeature, REQUEST_HEADER_SIZE } from "../devices/blk/blk_spec.ts";
import { bit, hasBit, maskOf, ProtocolFeature, VirtioFeature } from "../protocol/mod.ts";
import type { Segment } from "../virtqueue/descriptor_chain.ts";
import { DESC_SIZE } from "../virtqueue/layout.ts";
import type { UsedElement } from "../virtqueue/driver_queue.ts";
import { BLK_CONFIG_READ_SIZE, type BlkConfig, decodeBlkConfig } from "./blk_config.ts";
import { type BlkRequest, planBlkRequest, splitRange, writeBlkHeader } from "./blk_requests.ts";
import { GuestBufferPool } from "./buffer_pool.ts";
import { DeviceSession, type DeviceSessionOptions } from "./device_session.ts";
import type { DriverRing } from "./driver_ring.ts";
import { BackendTimeout } from "./errors.ts";
import type { SharedGuestMemory } from "./shared_memory.ts";
import type { VhostUserClient } from "./vhost_user_client.ts";

/** Header (16 bytes) and status byte of one request share a 32-byte control block. */
const CONTROL_BLOCK_SIZE = 32;
const STATUS_OFFSET = REQUEST_HEADER_SIZE;
/** Written into the status byte before submission, so an untouched status is visible. */
export const STATUS_UNSET = 0xff;
/** Data buffers are sector aligned. */
const DATA_ALIGN = 512;
/** Default size of the request buffer pool. */
const DEFAULT_POOL_BYTES = 16 * 2 ** 20;

/** Options of {@linkcode BlkDriver.setup}. */
export interface BlkDriverOptions {
  /** Number of queues to use. */
  numQueues: number;
  /** Size of each queue (power of two, at most the back-end's `--queue-size`). */
  queueSize: number;
  /** Negotiate VIRTIO_F_RING_EVENT_IDX when offered. Default false. */
  eventIdx?: boolean;
  /** Negotiate VIRTIO_F_RING_INDIRECT_DESC and put every request in an indirect table. Default false. */
  indirect?: boolean;
  /** Protocol features to accept when offered (see DeviceSession). */
  protocolFeatures?: bigint;
  /**
   * Bytes of guest memory for request buffers (at most what is free). Default:
   * 16 MiB, or half of the free memory if that is less.
   */
  bufferPoolBytes?: number;
  /** Limit for each helper call and default for waits, in ms. Default: the client's timeout. */
  timeoutMs?: number;
}

/** One finished request. */
export interface BlkCompletion {
  /** The token `submit` returned. */
  token: number;
  /** Head descriptor index the back-end returned in the used ring. */
  head: number;
  /** Status byte (BlkStatus); `undefined` for a raw chain the driver did not build. */
  status: number | undefined;
  /** Bytes the back-end reported written (used element `len`). */
  written: number;
  /** A copy of the bytes the device wrote into a driver-allocated data buffer (reads, GET_ID). */
  data?: Uint8Array;
}

interface InFlight {
  token: number;
  /** Header + status block, undefined for raw chains. */
  control: number | undefined;
  /** Data buffer allocated by the driver. */
  ownedData: number | undefined;
  /** Writable data bytes expected before the status byte. */
  inLength: number;
  indirectTable: number | undefined;
}

/** Virtio-blk features this driver understands. */
const DRIVER_FEATURES = maskOf([
  VirtioFeature.VERSION_1,
  BlkFeature.SIZE_MAX,
  BlkFeature.SEG_MAX,
  BlkFeature.RO,
  BlkFeature.BLK_SIZE,
  BlkFeature.FLUSH,
  BlkFeature.TOPOLOGY,
  BlkFeature.CONFIG_WCE,
  BlkFeature.MQ,
  BlkFeature.DISCARD,
  BlkFeature.WRITE_ZEROES,
]);

/** Drives a vhost-user-blk back-end. */
export class BlkDriver {
  /** The negotiated session (features, rings). */
  readonly session: DeviceSession;
  /** Configuration space read right after set-up. */
  readonly config: BlkConfig;
  /** Limit for helper calls, in ms. */
  timeoutMs: number;
  readonly #pool: GuestBufferPool;
  readonly #memory: SharedGuestMemory;
  readonly #indirect: boolean;
  readonly #inFlight: Map<number, InFlight>[];
  /** Completions collected while waiting for another one, per queue. */
  readonly #ready: BlkCompletion[][];
  #nextToken = 1;

  private constructor(
    session: DeviceSession,
    config: BlkConfig,
    pool: GuestBufferPool,
    timeoutMs: number,
  ) {
    this.session = session;
    this.config = config;
    this.timeoutMs = timeoutMs;
    this.#pool = pool;
    this.#memory = session.memory;
    this.#indirect = hasBit(session.features, VirtioFeature.RING_INDIRECT_DESC);
    this.#inFlight = session.rings.map(() => new Map());
    this.#ready = session.rings.map(() => []);
  }

  /**
   * Negotiates with the back-end (see {@linkcode DeviceSession.open}; the
   * CONFIG protocol feature is required), starts `numQueues` rings, reads
   * the configuration space and sets aside the request buffer pool. The
   * client and the memory stay the caller's to close.
   */
  static setup(
    client: VhostUserClient,
    memory: SharedGuestMemory,
    options: BlkDriverOptions,
  ): BlkDriver {
    let driverFeatures = DRIVER_FEATURES;
    if (options.eventIdx) driverFeatures |= bit(VirtioFeature.RING_EVENT_IDX);
    if (options.indirect) driverFeatures |= bit(VirtioFeature.RING_INDIRECT_DESC);
    const sessionOptions: DeviceSessionOptions = {
      numQueues: options.numQueues,
      queueSize: options.queueSize,
      driverFeatures,
      protocolFeatures: options.protocolFeatures,
      requiredProtocolFeatures: bit(ProtocolFeature.CONFIG), // the only way to read the capacity
    };
    const session = DeviceSession.open(client, memory, sessionOptions);
    try {
      const config = decodeBlkConfig(client.getConfig(0, BLK_CONFIG_READ_SIZE));
      // By default leave half of the free memory for the caller's own buffers.
      const free = memory.largestFree(4096);
      const wanted = options.bufferPoolBytes ?? Math.min(DEFAULT_POOL_BYTES, free / 2);
      const poolBytes = Math.floor(Math.min(wanted, free) / 4096) * 4096;
      if (poolBytes < 4096) throw new RangeError("no guest memory left for request buffers");
      const pool = new GuestBufferPool(memory.alloc(poolBytes, 4096), poolBytes);
      return new BlkDriver(session, config, pool, options.timeoutMs ?? client.timeoutMs);
    } catch (e) {
      session.close();
      throw e;
    }
  }

  /** Virtio features accepted with SET_FEATURES. */
  get features(): bigint {
    return this.session.features;
  }

  /** Virtio features the back-end offered. */
  get offeredFeatures(): bigint {
    return this.session.offeredFeatures;
  }

  /** The ring of queue `index` (raw descriptor access for hostile tests). */
  ring(index: number): DriverRing {
    return this.session.ring(index);
  }

  /** Reads the configuration space again (GET_CONFIG). */
  readConfig(): BlkConfig {
    return decodeBlkConfig(this.session.client.getConfig(0, BLK_CONFIG_READ_SIZE));
  }

  /** Turns the writeback cache on or off (SET_CONFIG of the `writeback` byte). */
  setWriteback(on: boolean): void {
    this.session.client.setConfig(BlkConfigOffset.writeback, Uint8Array.of(on ? 1 : 0));
  }

  // ---- one-call helpers ------------------------------------------------------

  /** Reads `length` bytes from `sector`; `data` holds them when `status` is OK. */
  read(
    queue: number,
    sector: number,
    length: number,
    options: { segments?: number } = {},
  ): BlkCompletion {
    return this.#run(queue, { op: "read", sector, length, ...options });
  }

  /** Writes `data` at `sector`. */
  write(
    queue: number,
    sector: number,
    data: Uint8Array,
    options: { segments?: number } = {},
  ): BlkCompletion {
    return this.#run(queue, { op: "write", sector, data, ...options });
  }

  /** FLUSH: makes completed writes durable. */
  flush(queue: number): BlkCompletion {
    return this.#run(queue, { op: "flush" });
  }

  /** GET_ID: the device serial (20 bytes, NUL padded) in `data`. */
  getId(queue: number): BlkCompletion {
    return this.#run(queue, { op: "get-id" });
  }

  /** DISCARD of `sectors` sectors from `sector`. */
  discard(queue: number, sector: number, sectors: number): BlkCompletion {
    return this.#run(queue, { op: "discard", sector, sectors });
  }

  /** WRITE_ZEROES of `sectors` sectors from `sector`, allowing deallocation when `unmap`. */
  writeZeroes(queue: number, sector: number, sectors: number, unmap: boolean): BlkCompletion {
    return this.#run(queue, { op: "write-zeroes", sector, sectors, unmap });
  }

  /** Submits one request and waits for its completion. */
  #run(queue: number, request: BlkRequest): BlkCompletion {
    const token = this.submit(queue, request);
    return this.waitFor(queue, token, this.timeoutMs);
  }

  // ---- batched interface -------------------------------------------------------

  /**
   * Builds `request` in guest memory and publishes it on `queue`; returns a
   * token that its completion will carry. The back-end is notified at the
   * next {@linkcode waitCompletions}, {@linkcode waitFor} or
   * {@linkcode notify} call, so a batch costs one kick.
   * Throws RangeError when the queue or the buffer pool is full.
   */
  submit(queue: number, request: BlkRequest): number {
    const ring = this.ring(queue);
    const plan = planBlkRequest(request);
    const allocated: number[] = [];
    try {
      const control = this.#pool.alloc(CONTROL_BLOCK_SIZE);
      allocated.push(control);
      const block = this.#memory.bytes(control, CONTROL_BLOCK_SIZE);
      writeBlkHeader(block, plan.type, plan.sector);
      block[STATUS_OFFSET] = STATUS_UNSET;

      const dataLength = plan.outLength + plan.inLength;
      let data = plan.callerBuffer;
      let ownedData: number | undefined;
      if (data === undefined && dataLength > 0) {
        data = ownedData = this.#pool.alloc(dataLength, DATA_ALIGN);
        allocated.push(ownedData);
      }
      if (plan.out !== undefined && data !== undefined) {
        this.#memory.bytes(data, plan.outLength).set(plan.out);
      }

      const segments: Segment[] = [{ addr: control, len: REQUEST_HEADER_SIZE, writable: false }];
      if (data !== undefined && plan.outLength > 0) {
        for (const piece of splitRange(data, plan.outLength, plan.dataSegments)) {
          segments.push({ ...piece, writable: false });
        }
      }
      if (data !== undefined && plan.inLength > 0) {
        for (const piece of splitRange(data + plan.outLength, plan.inLength, plan.dataSegments)) {
          segments.push({ ...piece, writable: true });
        }
      }
      segments.push({ addr: control + STATUS_OFFSET, len: 1, writable: true });

      let indirectTable: number | undefined;
      if (this.#indirect) {
        indirectTable = this.#pool.alloc(segments.length * DESC_SIZE);
        allocated.push(indirectTable);
      }
      const head = ring.publish(segments, indirectTable);
      const token = this.#nextToken++;
      this.#inFlight[queue].set(head, {
        token,
        control,
        ownedData,
        inLength: plan.inLength,
        indirectTable,
      });
      return token;
    } catch (e) {
      allocated.forEach((gpa) => this.#pool.free(gpa));
      throw e;
    }
  }

  /**
   * Publishes a chain the caller wrote itself with
   * `ring(queue).queue.writeRawDescriptor` (head may be any u16, even out of
   * range) and returns a token for its completion, whose `status` is then
   * undefined: the caller knows where its status byte is.
   */
  submitRaw(queue: number, head: number): number {
    const ring = this.ring(queue);
    ring.queue.publishRaw(head);
    const token = this.#nextToken++;
    this.#inFlight[queue].set(head, {
      token,
      control: undefined,
      ownedData: undefined,
      inLength: 0,
      indirectTable: undefined,
    });
    return token;
  }

  /** Kicks `queue` if it has unseen submissions and the back-end wants a kick. */
  notify(queue: number): boolean {
    return this.ring(queue).notify();
  }

  /**
   * Guest-physical address of the data buffer the driver allocated for the
   * in-flight request `token` of `queue` (where a read lands), or undefined.
   */
  dataBufferGpa(queue: number, token: number): number | undefined {
    for (const entry of this.#inFlight[queue].values()) {
      if (entry.token === token) return entry.ownedData;
    }
    return undefined;
  }

  /** Requests submitted on `queue` and not yet completed. */
  inFlight(queue: number): number {
    this.ring(queue);
    return this.#inFlight[queue].size;
  }

  /**
   * Notifies the back-end if needed, then returns every completion available
   * on `queue`, waiting (used ring first, then the call eventfd) until there
   * are at least `min`. Throws {@linkcode BackendTimeout} when fewer than
   * `min` arrive within `timeoutMs`; those that did arrive are kept for the
   * next call.
   */
  waitCompletions(
    queue: number,
    min: number,
    timeoutMs: number = this.timeoutMs,
  ): BlkCompletion[] {
    const ring = this.ring(queue);
    const collected = this.#ready[queue];
    this.#ready[queue] = [];
    try {
      this.#collect(ring, collected, min, performance.now() + timeoutMs, timeoutMs);
    } catch (e) {
      // Keep what did arrive for the next call.
      this.#ready[queue] = collected.concat(this.#ready[queue]);
      throw e;
    }
    return collected;
  }

  /** Waits for the completion of `token` on `queue`; others that arrive meanwhile are kept. */
  waitFor(queue: number, token: number, timeoutMs: number = this.timeoutMs): BlkCompletion {
    const ring = this.ring(queue);
    const ready = this.#ready[queue];
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const at = ready.findIndex((c) => c.token === token);
      if (at >= 0) return ready.splice(at, 1)[0];
      this.#collect(ring, ready, ready.length + 1, deadline, timeoutMs);
    }
  }

  /** Takes used elements into `into` until it holds `min`; the wait ends at `deadline`. */
  #collect(
    ring: DriverRing,
    into: BlkCompletion[],
    min: number,
    deadline: number,
    timeoutMs: number,
  ): void {
    ring.notify();
    for (;;) {
      for (let used = ring.takeUsed(); used !== undefined; used = ring.takeUsed()) {
        into.push(this.#complete(ring.index, used));
      }
      if (into.length >= min) return;
      if (!ring.waitForUsed(deadline)) {
        throw new BackendTimeout(
          `${min} completions on queue ${ring.index} (${into.length} arrived, ${
            this.#inFlight[ring.index].size
          } in flight)`,
          timeoutMs,
        );
      }
    }
  }

  #complete(queue: number, used: UsedElement): BlkCompletion {
    const entry = this.#inFlight[queue].get(used.id);
    if (entry === undefined) {
      // The back-end returned a head nobody submitted: report it rather than lose it.
      return { token: 0, head: used.id, status: undefined, written: used.len };
    }
    this.#inFlight[queue].delete(used.id);
    const completion: BlkCompletion = {
      token: entry.token,
      head: used.id,
      status: undefined,
      written: used.len,
    };
    if (entry.control !== undefined) {
      completion.status = this.#memory.bytes(entry.control + STATUS_OFFSET, 1)[0];
      this.#pool.free(entry.control);
    }
    if (entry.ownedData !== undefined) {
      if (entry.inLength > 0) {
        const got = Math.max(0, Math.min(entry.inLength, used.len - 1));
        completion.data = this.#memory.bytes(entry.ownedData, got).slice();
      }
      this.#pool.free(entry.ownedData);
    }
    if (entry.indirectTable !== undefined) this.#pool.free(entry.indirectTable);
    return completion;
  }

  // ---- ring life cycle ---------------------------------------------------------

  /**
   * Stops queue `index` on the back-end (GET_VRING_BASE: it finishes what it
   * has taken first) and returns the next available index it would read.
   */
  stopQueue(index: number): number {
    return this.ring(index).stop(this.session.client);
  }

  /** Restarts a stopped queue from `base` (default: the driver's avail index): BASE + ADDR + KICK. */
  restartQueue(index: number, base?: number): void {
    this.ring(index).start(this.session.client, base);
  }

  /** Releases the rings' eventfds. The client and memory are closed by their owner. */
  close(): void {
    this.session.close();
  }
}
