/**
 * The test double for a device's data half: plays the guest driver and the
 * queue Worker, with no VMM, no Worker thread and no real clock.
 *
 * It builds the handler from its factory as a queue Worker would, runs each
 * ring through the framework's own `RingRunner` over a mock split queue in
 * ArrayBuffer memory, and implements `QueueContext`: completions land in the
 * used ring, watched host fds run when the test says they are ready
 * (`fireFd`), timers run when the test advances the clock (`advance`).
 * Every step ends like a Worker round: `submitQueued`, then interrupts.
 *
 * ```ts
 * const h = new DeviceHarness(createRngHandler, setup, { queues: 1 });
 * h.addChain(0, { writable: [64] });
 * h.kick(0);
 * const [used] = h.takeUsed(0); // { head, len, data: [the 64 bytes written] }
 * ```
 *
 * @module
 */

import { arrayBufferRegion, GuestMemory } from "../../src/memory/guest_memory.ts";
import { DriverQueue } from "../../src/virtqueue/driver_queue.ts";
import type { DescriptorChain, Segment } from "../../src/virtqueue/descriptor_chain.ts";
import { SplitQueue } from "../../src/virtqueue/split_queue.ts";
import { RingRunner } from "../../src/backend/ring_runner.ts";
import type {
  FdReadyCallback,
  QueueContext,
  QueueHandler,
  QueueHandlerFactory,
  WorkerSetup,
} from "../../src/devices/device.ts";

/** Options of {@linkcode DeviceHarness}. */
export interface DeviceHarnessOptions {
  /** Number of queues to run (indexes 0..queues-1). */
  queues: number;
  /** Size of every queue; default 64. */
  queueSize?: number;
  /** VIRTIO_F_RING_EVENT_IDX; default true. */
  eventIdx?: boolean;
  /** Guest memory in bytes; default 16 MiB. */
  memorySize?: number;
}

/** What the guest offers in one chain: bytes the device reads, sizes of buffers it writes. */
export interface ChainSpec {
  /** Device-readable buffers, in order. */
  readable?: Uint8Array[];
  /** Sizes of device-writable buffers, in order. */
  writable?: number[];
}

/** A used element with the bytes the device wrote into the chain's writable buffers. */
export interface UsedChain {
  /** Head descriptor index. */
  head: number;
  /** Used length the device reported. */
  len: number;
  /** The first `len` bytes of the chain's writable buffers (fewer if `len` exceeds them). */
  data: Uint8Array;
}

interface Watch {
  events: number;
  onReady: FdReadyCallback;
}

const RING_AREA_SIZE = 0x10_0000;

/** A device data half driven by a test that plays the guest. */
export class DeviceHarness implements QueueContext {
  /** The handler under test. */
  readonly handler: QueueHandler;
  readonly #memory: GuestMemory;
  readonly #drivers: DriverQueue[] = [];
  readonly #runners: RingRunner[] = [];
  readonly #writable = new Map<string, Segment[]>();
  readonly #watches = new Map<number, Watch>();
  readonly #timers = new Map<number, { due: number; onFire: () => void }>();
  readonly #interrupts: number[];
  #nextTimerId = 1;
  #nextBuffer: number;
  readonly #memoryEnd: number;
  /** The harness clock in ms (moved only by `advance`). */
  now = 0;

  /** Builds the handler with `factory(setup)` and starts `opts.queues` rings. */
  constructor(factory: QueueHandlerFactory, setup: WorkerSetup, opts: DeviceHarnessOptions) {
    const size = opts.queueSize ?? 64;
    this.#memoryEnd = opts.memorySize ?? 16 * 2 ** 20;
    this.#memory = new GuestMemory([arrayBufferRegion(0, this.#memoryEnd)]);
    this.#interrupts = new Array(opts.queues).fill(0);
    this.handler = factory(setup);
    this.handler.attach?.(this);
    let at = 0x1000;
    for (let q = 0; q < opts.queues; q++) {
      const layout = DriverQueue.layout(at, size);
      at = Math.ceil(layout.end / 0x1000) * 0x1000;
      const eventIdx = opts.eventIdx ?? true;
      this.#drivers.push(new DriverQueue(this.#memory, { size, ...layout, eventIdx }));
      const queue = new SplitQueue({
        size,
        ...layout,
        nextAvail: 0,
        nextUsed: 0,
        eventIdx,
        indirect: true,
      });
      const error = queue.attach(this.#memory);
      if (error !== undefined) throw new Error(`queue ${q}: ${error}`);
      this.#runners.push(new RingRunner(q, queue, this.handler, this.#memory));
    }
    if (at > RING_AREA_SIZE) throw new RangeError("queues do not fit the ring area");
    this.#nextBuffer = RING_AREA_SIZE;
    for (const runner of this.#runners) runner.process();
    this.#endOfRound();
  }

  // ---- the guest's side --------------------------------------------------

  /** The driver side of queue `q` (for raw descriptor tricks). */
  driver(q: number): DriverQueue {
    return this.#drivers[q];
  }

  /** Offers a chain on queue `q` (not kicked yet); returns its head. */
  addChain(q: number, spec: ChainSpec): number {
    const segments: Segment[] = [];
    for (const bytes of spec.readable ?? []) {
      const addr = this.#allocate(bytes.length);
      const place = this.#memory.resolve(addr, bytes.length)!;
      place.region.bytes.set(bytes, place.offset);
      segments.push({ addr, len: bytes.length, writable: false });
    }
    const writable: Segment[] = [];
    for (const len of spec.writable ?? []) {
      const seg = { addr: this.#allocate(len), len, writable: true };
      segments.push(seg);
      writable.push(seg);
    }
    const head = this.#drivers[q].addChain(segments);
    this.#writable.set(`${q}:${head}`, writable);
    return head;
  }

  /** Kicks queue `q`, as the guest's notification would; then ends the round. */
  kick(q: number): void {
    this.#runners[q].process();
    this.#endOfRound();
  }

  /** Used elements of queue `q` since the last call, with the bytes written. */
  takeUsed(q: number): UsedChain[] {
    const out: UsedChain[] = [];
    for (let u = this.#drivers[q].takeUsed(); u; u = this.#drivers[q].takeUsed()) {
      const segments = this.#writable.get(`${q}:${u.id}`) ?? [];
      this.#writable.delete(`${q}:${u.id}`);
      const total = segments.reduce((n, s) => n + s.len, 0);
      const data = new Uint8Array(Math.min(u.len, total));
      let at = 0;
      for (const s of segments) {
        if (at >= data.length) break;
        const n = Math.min(s.len, data.length - at);
        const place = this.#memory.resolve(s.addr, n)!;
        data.set(place.region.bytes.subarray(place.offset, place.offset + n), at);
        at += n;
      }
      out.push({ head: u.id, len: u.len, data });
    }
    return out;
  }

  /** Interrupts raised for queue `q` so far. */
  interrupts(q: number): number {
    return this.#interrupts[q];
  }

  // ---- the host's side ---------------------------------------------------

  /** Host fds the handler watches, with their events. */
  get watched(): ReadonlyMap<number, { events: number }> {
    return this.#watches;
  }

  /** Reports `events` on watched `fd` (throws when it is not watched); then ends the round. */
  fireFd(fd: number, events: number): void {
    const watch = this.#watches.get(fd);
    if (!watch) throw new Error(`fd ${fd} is not watched`);
    watch.onReady(events);
    this.#endOfRound();
  }

  /** Moves the clock by `ms` and runs the timers that became due, in due order. */
  advance(ms: number): void {
    this.now += ms;
    for (;;) {
      let next: [number, { due: number; onFire: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].due <= this.now && (!next || entry[1].due < next[1].due)) next = entry;
      }
      if (!next) break;
      this.#timers.delete(next[0]);
      next[1].onFire();
    }
    this.#endOfRound();
  }

  /** Timers pending. */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /**
   * Stops queue `q` as GET_VRING_BASE does: no new chains, `quiesce`.
   * Returns the requests still in flight (the Worker would wait for them).
   */
  pause(q: number): number {
    this.#runners[q].pause();
    this.#endOfRound();
    return this.#runners[q].inflightCount;
  }

  /** Serves queue `q` again after `pause`. */
  resume(q: number): void {
    this.#runners[q].resume(this.#memory);
    this.#endOfRound();
  }

  /** Why queue `q` broke, if it did. */
  broken(q: number): string | undefined {
    return this.#runners[q].broken;
  }

  // ---- QueueContext --------------------------------------------------------

  /** @inheritdoc */
  complete(queueIndex: number, chain: DescriptorChain, written: number): void {
    const runner = this.#runners[queueIndex];
    if (!runner) throw new Error(`completion for queue ${queueIndex}, which does not exist`);
    if (!runner.complete(chain, written)) {
      throw new Error(`queue ${queueIndex}: request ${chain.head} completed but not in flight`);
    }
  }

  /** @inheritdoc */
  watchFd(fd: number, events: number, onReady: FdReadyCallback): void {
    this.#watches.set(fd, { events, onReady });
  }

  /** @inheritdoc */
  unwatchFd(fd: number): void {
    this.#watches.delete(fd);
  }

  /** @inheritdoc */
  inflightCount(queueIndex: number): number {
    return this.#runners[queueIndex]?.inflightCount ?? 0;
  }

  /** @inheritdoc */
  pop(queueIndex: number): DescriptorChain | undefined {
    return this.#runners[queueIndex]?.pop();
  }

  /** @inheritdoc */
  get memory(): GuestMemory {
    return this.#memory;
  }

  /** @inheritdoc */
  setTimer(delayMs: number, onFire: () => void): number {
    const id = this.#nextTimerId++;
    this.#timers.set(id, { due: this.now + Math.max(0, delayMs), onFire });
    return id;
  }

  /** @inheritdoc */
  clearTimer(id: number): void {
    this.#timers.delete(id);
  }

  // ---- internals -----------------------------------------------------------

  #allocate(len: number): number {
    const addr = this.#nextBuffer;
    this.#nextBuffer = Math.ceil((addr + Math.max(len, 1)) / 16) * 16;
    if (this.#nextBuffer > this.#memoryEnd) throw new RangeError("guest memory exhausted");
    return addr;
  }

  #endOfRound(): void {
    this.handler.submitQueued?.();
    this.#runners.forEach((runner, q) => {
      if (runner.takeNotification()) this.#interrupts[q]++;
    });
  }
}
