/**
 * Many FUSE requests in flight at once, over several virtio-fs queues, for
 * the host-driven fs benchmark (scripts/bench_fs_host.ts). The
 * {@linkcode FsDriver} it builds on negotiates the device and sends one
 * request at a time (its `send` waits for each reply); this sends requests
 * into per-slot buffers of shared memory, kicks each queue once per batch
 * and hands every reply to the callback its request was sent with, in
 * whatever order the back-end returns them.
 *
 * While requests are in flight nothing else may use the driver's rings
 * (FsDriver's own calls would take this pipeline's used elements): call
 * {@linkcode FsPipeline.drain} first.
 *
 * @module
 */

import {
  closeQuietly,
  EPOLL_CTL_ADD,
  epollCreate,
  epollCtl,
  EpollEvents,
  EPOLLIN,
  epollWait,
  eventfdRead,
} from "../ffi/mod.ts";
import {
  encodeRequestInto,
  FUSE_OUT_HEADER,
  type FuseArgsInputByOpcode,
  type FuseDecodableOpcode,
  opcodeName,
} from "../src/devices/fs/fuse/mod.ts";
import type { DriverRing, FsDriver, SharedGuestMemory } from "../src/frontend/mod.ts";

/** A wait for replies longer than this means the back-end is stuck. */
const STUCK_MS = 5000;

/** What a request's callback gets. */
export interface FsPipelineReply {
  /** 0, or the positive errno of an error reply. */
  error: number;
  /**
   * The payload after the out header: a view of the slot's buffer, valid
   * only during the callback (the slot is reused right after).
   */
  payload: Uint8Array;
  /** Milliseconds from submission to the reply being taken. */
  latencyMs: number;
}

/** One request to send. */
export interface FsPipelineRequest<K extends FuseDecodableOpcode> {
  /** FUSE opcode. */
  opcode: K;
  /** Its arguments. */
  args: FuseArgsInputByOpcode[K];
  /** Node id in the header. */
  nodeid: bigint;
  /** Writable bytes offered for the reply payload, after the out header. */
  replyRoom: number;
  /** A request without reply (FORGET): no writable part. */
  noReply?: boolean;
  /** Queue index (0 is the high-priority queue). */
  queue: number;
}

interface Pending {
  slot: number;
  unique: bigint;
  opcode: number;
  /** Where the reply buffer starts in the slot (right after the request). */
  replyAt: number;
  /** Its size, out header included (0: no reply expected). */
  replySize: number;
  startedAt: number;
  onReply: (reply: FsPipelineReply) => void;
}

/** Keeps up to `depth` FUSE requests in flight on a driver's rings. */
export class FsPipeline {
  readonly #driver: FsDriver;
  readonly #slotBytes: number;
  readonly #slotBase: number[];
  /** Each slot's bytes and a DataView of them, made once (no view per request or reply). */
  readonly #slotBytesOf: Uint8Array[];
  readonly #slotViewOf: DataView[];
  readonly #freeSlots: number[];
  /** Per ring index: head → request in flight. */
  readonly #pending: Map<number, Pending>[];
  readonly #rings: readonly DriverRing[];
  readonly #kicked = new Set<number>();
  readonly #events: EpollEvents;
  readonly #epfd: number;
  #unique = 1n << 48n;

  /**
   * Sets aside `depth` + 1 buffers of `slotBytes` each (room for the
   * largest request plus its reply) in `memory` — the spare one lets a
   * callback send its next request while its own slot is still being read —
   * and an epoll set over the call eventfds of every ring of `driver`.
   */
  constructor(driver: FsDriver, memory: SharedGuestMemory, depth: number, slotBytes: number) {
    const slots = depth + 1;
    this.#driver = driver;
    this.#slotBytes = Math.ceil(slotBytes / 64) * 64;
    this.#slotBase = Array.from({ length: slots }, () => memory.alloc(this.#slotBytes, 4096));
    this.#slotBytesOf = this.#slotBase.map((base) => memory.bytes(base, this.#slotBytes));
    this.#slotViewOf = this.#slotBytesOf.map((b) => new DataView(b.buffer, b.byteOffset, b.length));
    this.#freeSlots = this.#slotBase.map((_, i) => slots - 1 - i);
    this.#rings = driver.session.rings;
    this.#pending = this.#rings.map(() => new Map());
    this.#events = new EpollEvents(this.#rings.length);
    this.#epfd = epollCreate();
    try {
      for (const ring of this.#rings) {
        epollCtl(this.#epfd, EPOLL_CTL_ADD, ring.callFd, EPOLLIN, ring.index);
      }
    } catch (e) {
      closeQuietly(this.#epfd);
      throw e;
    }
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.#pending.reduce((sum, map) => sum + map.size, 0);
  }

  /**
   * Puts `request` on its ring (the kick waits for {@linkcode flush} or the
   * next {@linkcode poll}); `onReply` runs when its reply is taken.
   *
   * @throws {RangeError} when every slot is in use or the request does not fit one
   */
  submit<K extends FuseDecodableOpcode>(
    request: FsPipelineRequest<K>,
    onReply: (reply: FsPipelineReply) => void,
  ): void {
    const slot = this.#freeSlots.pop();
    if (slot === undefined) throw new RangeError("every pipeline slot is in use");
    const unique = this.#unique++;
    const replySize = request.noReply ? 0 : FUSE_OUT_HEADER.size + request.replyRoom;
    // Encoded straight into the slot: no array per request (the pipeline's own cost per
    // request is part of what each row measures, on a machine with two CPUs).
    let length: number;
    try {
      length = encodeRequestInto(
        request.opcode,
        {
          unique,
          nodeid: request.nodeid,
          uid: this.#driver.uid,
          gid: this.#driver.gid,
          pid: 1,
        },
        request.args,
        this.#slotBytesOf[slot],
      );
      if (length + replySize > this.#slotBytes) throw new RangeError("no room for the reply");
    } catch (e) {
      this.#freeSlots.push(slot);
      if (!(e instanceof RangeError)) throw e;
      throw new RangeError(
        `${opcodeName(request.opcode)} needs more than a ${this.#slotBytes}-byte slot`,
      );
    }
    const base = this.#slotBase[slot];
    const segments = [{ addr: base, len: length, writable: false }];
    if (replySize > 0) segments.push({ addr: base + length, len: replySize, writable: true });
    const ring = this.#rings[request.queue];
    const head = ring.publish(segments);
    this.#pending[request.queue].set(head, {
      slot,
      unique,
      opcode: request.opcode,
      replyAt: length,
      replySize,
      startedAt: performance.now(),
      onReply,
    });
    this.#kicked.add(request.queue);
  }

  /** Kicks every ring that got requests since the last kick. */
  flush(): void {
    for (const queue of this.#kicked) this.#rings[queue].notify();
    this.#kicked.clear();
  }

  /**
   * Kicks, then takes every reply waiting on any ring and runs its
   * callback (which may submit again); when none is waiting, sleeps until
   * a ring signals one. Returns the number of replies taken.
   *
   * @throws {Error} when nothing is answered within 5 s, or a reply is malformed
   */
  poll(): number {
    this.flush();
    let taken = this.#takeAll();
    if (taken > 0) return taken;
    // Ask for an interrupt on every ring (event idx), re-check, then sleep.
    if (this.#rings.some((ring) => ring.waitForUsed(0))) return this.#takeAll();
    const n = epollWait(this.#epfd, this.#events, STUCK_MS);
    for (let i = 0; i < n; i++) eventfdRead(this.#rings[this.#events.data(i)].callFd);
    taken = this.#takeAll();
    if (n === 0 && taken === 0) {
      throw new Error(`no reply in ${STUCK_MS} ms (${this.inFlight} in flight)`);
    }
    return taken;
  }

  /** Polls until nothing is in flight. */
  drain(): void {
    while (this.inFlight > 0) this.poll();
  }

  /** Closes the epoll set; the slots stay allocated in guest memory. */
  close(): void {
    closeQuietly(this.#epfd);
  }

  #takeAll(): number {
    let taken = 0;
    for (const ring of this.#rings) {
      for (let used = ring.takeUsed(); used !== undefined; used = ring.takeUsed()) {
        this.#complete(ring.index, used.id, used.len);
        taken++;
      }
    }
    return taken;
  }

  #complete(queue: number, head: number, written: number): void {
    const request = this.#pending[queue].get(head);
    if (request === undefined) {
      throw new Error(`queue ${queue}: back-end returned head ${head}, never sent`);
    }
    this.#pending[queue].delete(head);
    const latencyMs = performance.now() - request.startedAt;
    const name = opcodeName(request.opcode);
    try {
      if (request.replySize === 0) {
        request.onReply({ error: 0, payload: new Uint8Array(0), latencyMs });
        return;
      }
      if (written < FUSE_OUT_HEADER.size || written > request.replySize) {
        throw new Error(`${name}: used length ${written} for a ${request.replySize}-byte reply`);
      }
      const at = request.replyAt;
      const view = this.#slotViewOf[request.slot];
      const len = view.getUint32(at, true);
      const error = view.getInt32(at + 4, true);
      const unique = view.getBigUint64(at + 8, true);
      if (unique !== request.unique) {
        throw new Error(`${name}: reply unique ${unique}, sent ${request.unique}`);
      }
      if (len !== written) throw new Error(`${name}: reply len ${len}, used length ${written}`);
      request.onReply({
        error: error === 0 ? 0 : -error,
        payload: this.#slotBytesOf[request.slot].subarray(at + FUSE_OUT_HEADER.size, at + written),
        latencyMs,
      });
    } finally {
      this.#freeSlots.push(request.slot);
    }
  }
}
