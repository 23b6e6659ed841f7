/**
 * Per-queue request statistics in shared memory: the queue Worker serving a
 * ring writes its slots with plain stores (one writer per ring, so no
 * Atomics), the main thread reads them when scraped. A read may see a
 * request counted in one slot and not yet in the next; a scrape is a
 * snapshot of moving numbers anyway, and every slot is exact on its own.
 *
 * Slots are float64: counts stay exact up to 2^53, which one ring would take
 * centuries to reach.
 *
 * @module
 */

import { bucketIndex, LATENCY_BOUNDS_SECONDS } from "./histogram.ts";

// Slot offsets inside one queue's block.
/** Chains taken from the ring (popped or resubmitted). */
const STARTED = 0;
/** Chains returned to the driver (used elements published). */
const COMPLETED = 1;
/** Sum of the used elements' len: bytes written into guest buffers. */
const WRITTEN_BYTES = 2;
/** Requests taken and not completed (a gauge). */
const IN_FLIGHT = 3;
/** Requests the device's data half threw for (failed with len 0). */
const DEVICE_EXCEPTIONS = 4;
/** Completions refused because the chain was not in flight. */
const STRAY_COMPLETIONS = 5;
/** Times the ring broke and stopped being served. */
const RING_BREAKS = 6;
/** Sum of request latencies in seconds. */
const LATENCY_SUM = 7;
/** First latency bucket. */
const BUCKETS = 8;

/** Latency bucket upper bounds in milliseconds (what performance.now() measures). */
const BOUNDS_MS = Float64Array.from(LATENCY_BOUNDS_SECONDS, (s) => s * 1000);
/**
 * Slots per queue, rounded up to whole 64-byte cache lines: rings of
 * different Workers then never write to one line (no false sharing).
 */
const BLOCK_SLOTS = Math.ceil((BUCKETS + BOUNDS_MS.length + 1) / 8) * 8;

/** Bytes of shared memory the statistics of `queues` queues take. */
export function queueStatsBytes(queues: number): number {
  return queues * BLOCK_SLOTS * Float64Array.BYTES_PER_ELEMENT;
}

/** Number of queues a statistics buffer holds. */
export function queueStatsQueues(buffer: SharedArrayBuffer): number {
  return Math.floor(buffer.byteLength / (BLOCK_SLOTS * Float64Array.BYTES_PER_ELEMENT));
}

/**
 * The Worker's side for one ring: counts what the ring runner does. Only
 * the Worker serving the ring writes to it.
 */
export class QueueStatsWriter {
  readonly #slots: Float64Array;
  /** When each head in flight was taken (performance.now()), for its latency. */
  readonly #startedAt: Float64Array;
  /** When the ring runner began taking the current burst of chains. */
  #burstStart = 0;
  /** Start times of requests completed in this round, timed together at its end. */
  readonly #pending: Float64Array;
  #pendingCount = 0;

  /** Statistics of `queue` in `buffer`; `ringSize` heads can be in flight. */
  constructor(buffer: SharedArrayBuffer, queue: number, ringSize: number) {
    this.#slots = new Float64Array(buffer, queue * BLOCK_SLOTS * 8, BLOCK_SLOTS);
    this.#startedAt = new Float64Array(ringSize);
    this.#pending = new Float64Array(ringSize);
    // A ring (re)starting has nothing in flight yet; what a lost Worker held is gone.
    this.#slots[IN_FLIGHT] = 0;
  }

  /**
   * The ring runner begins taking a burst of chains. Their latencies count
   * from here: one clock reading per burst rather than per request (a
   * reading costs about 0.1 µs in Deno), and a request popped late in a
   * burst did wait in the ring while the ones before it were handled.
   */
  beginBurst(): void {
    this.#burstStart = performance.now();
  }

  /** A chain at `head` was taken; `tracked` is false for a head outside the ring. */
  started(head: number, tracked: boolean): void {
    const s = this.#slots;
    s[STARTED]++;
    s[IN_FLIGHT]++;
    if (tracked) this.#startedAt[head] = this.#burstStart;
  }

  /** The chain at `head` was returned with `written` bytes; it is timed at the round's end. */
  completed(head: number, tracked: boolean, written: number): void {
    const s = this.#slots;
    s[COMPLETED]++;
    s[IN_FLIGHT]--;
    s[WRITTEN_BYTES] += written;
    if (!tracked) return;
    if (this.#pendingCount === this.#pending.length) this.endRound();
    this.#pending[this.#pendingCount++] = this.#startedAt[head];
  }

  /**
   * The driver is about to see what completed: at the Worker's round end,
   * or before each reply is published when the device signals each
   * completion. One clock reading times every request completed since the
   * last call.
   */
  endRound(): void {
    const count = this.#pendingCount;
    if (count === 0) return;
    this.#pendingCount = 0;
    const now = performance.now();
    const s = this.#slots;
    let sumMs = 0;
    for (let i = 0; i < count; i++) {
      const ms = now - this.#pending[i];
      s[BUCKETS + bucketIndex(BOUNDS_MS, ms)]++;
      sumMs += ms;
    }
    s[LATENCY_SUM] += sumMs / 1000;
  }

  /** A request was taken and will never be completed (its ring detached first). */
  dropped(): void {
    this.#slots[IN_FLIGHT]--;
  }

  /** The device threw while handling a request. */
  deviceException(): void {
    this.#slots[DEVICE_EXCEPTIONS]++;
  }

  /** A completion for a chain that is not in flight was refused. */
  strayCompletion(): void {
    this.#slots[STRAY_COMPLETIONS]++;
  }

  /** The ring broke. */
  ringBroken(): void {
    this.#slots[RING_BREAKS]++;
  }
}

/** What one queue's statistics say at the moment of reading. */
export interface QueueStatsSnapshot {
  /** Chains taken. */
  started: number;
  /** Chains completed. */
  completed: number;
  /** Bytes written into guest buffers (used len). */
  writtenBytes: number;
  /** Requests in flight. */
  inFlight: number;
  /** Requests failed because the device threw. */
  deviceExceptions: number;
  /** Completions refused (chain not in flight). */
  strayCompletions: number;
  /** Ring breaks. */
  ringBreaks: number;
  /** Latency bucket bounds in seconds. */
  latencyBounds: readonly number[];
  /** Latency observations per bucket (not cumulative; last: above every bound). */
  latencyCounts: Float64Array;
  /** Sum of latencies in seconds. */
  latencySum: number;
}

/** Reads queue `queue`'s statistics from `buffer` (the main thread, at a scrape). */
export function readQueueStats(buffer: SharedArrayBuffer, queue: number): QueueStatsSnapshot {
  const s = new Float64Array(buffer, queue * BLOCK_SLOTS * 8, BLOCK_SLOTS);
  return {
    started: s[STARTED],
    completed: s[COMPLETED],
    writtenBytes: s[WRITTEN_BYTES],
    inFlight: s[IN_FLIGHT],
    deviceExceptions: s[DEVICE_EXCEPTIONS],
    strayCompletions: s[STRAY_COMPLETIONS],
    ringBreaks: s[RING_BREAKS],
    latencyBounds: LATENCY_BOUNDS_SECONDS,
    latencyCounts: s.slice(BUCKETS, BUCKETS + BOUNDS_MS.length + 1),
    latencySum: s[LATENCY_SUM],
  };
}
