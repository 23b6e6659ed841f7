/**
 * How long a queue Worker busy-polls before it sleeps, and how many of the
 * process's Workers may busy-poll at once.
 *
 * A Worker about to sleep spins for a while first (see queue_worker.ts):
 * waking a sleeping thread costs more than a request. But every Worker
 * spinning at once takes every CPU, and the driver (or the guest's vCPUs, or
 * the Worker that has the next request) then waits for one. So the Workers
 * share a count in shared memory, and one that finds the others already
 * spinning on all but one CPU sleeps at once. Measured with blk on tmpfs,
 * four queues at depth 1 (two sync Workers on two CPUs), against
 * qemu-storage-daemon in the same run: 0.76–0.85× without the count,
 * 1.08–1.44× with it, and CPU per request 21–26 µs → 16–21 µs.
 *
 * A Worker that ends while it holds a place (terminated mid-spin) leaves the
 * count one too high: fewer Workers spin from then on, nothing else changes.
 *
 * @module
 */

/**
 * Adaptive busy polling (as QEMU's event loop does): before going to sleep
 * a Worker spins on its rings' avail indexes and its devices' completion
 * queues for up to a window, growing it while waits come out short and
 * shrinking it when they are long. Waking a sleeping thread costs more
 * than the request on fast storage; an idle Worker does not spin.
 *
 * The longest window depends on what the Worker waits for. With requests in
 * flight it waits for the host (an io_uring completion): 32 µs, QEMU's
 * default; longer would spin through a slow disk's whole latency (blk on
 * latency_fs at depth 1: 30 µs of CPU per request at 32 µs, 141 µs at 128).
 * With none it waits for the driver, and a request that finds the Worker
 * asleep costs it far more than the request itself (fs in a TCG guest:
 * epoll's return to the call eventfd's write 18 µs at the median, virtiofsd's
 * thread 7 µs, against 1.5–3 µs of CPU per request when the Worker is busy):
 * 128 µs covers a guest that answers within that, as a TCG guest's create
 * loop does (50–150 µs per round trip).
 */
export const POLL_MAX_DRIVER_US = 128;
/** The longest window while requests are in flight (see {@linkcode POLL_MAX_DRIVER_US}). */
export const POLL_MAX_HOST_US = 32;

/**
 * The longest busy-poll window, in ms, of a Worker about to sleep with
 * requests in flight or none; `limitUs` (`--poll-max-us`) replaces both
 * defaults (0: never spin).
 */
export function pollWindowMs(requestsInFlight: boolean, limitUs?: number): number {
  if (limitUs !== undefined) return limitUs / 1000;
  return (requestsInFlight ? POLL_MAX_HOST_US : POLL_MAX_DRIVER_US) / 1000;
}

/** The shared count (one Int32) for a process's Workers; the main thread makes one. */
export function newSpinBudget(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
}

/** Workers that may spin at once on `cpus` CPUs: all but one, and at least one. */
export function spinnersFor(cpus: number): number {
  return Number.isInteger(cpus) && cpus > 2 ? cpus - 1 : 1;
}

/** One Worker's side of the shared count. */
export class SpinSlot {
  readonly #count: Int32Array;
  readonly #limit: number;
  #held = false;

  /** A slot in `budget` (from {@linkcode newSpinBudget}) among at most `limit` spinners. */
  constructor(budget: SharedArrayBuffer, limit: number) {
    this.#count = new Int32Array(budget, 0, 1);
    this.#limit = Math.max(1, limit);
  }

  /** Takes a place among the spinners; false (nothing taken) when they are all taken. */
  take(): boolean {
    if (this.#held) return true;
    for (;;) {
      const now = Atomics.load(this.#count, 0);
      if (now >= this.#limit) return false;
      if (Atomics.compareExchange(this.#count, 0, now, now + 1) === now) {
        this.#held = true;
        return true;
      }
    }
  }

  /** Gives the place back (nothing when none is held). */
  give(): void {
    if (!this.#held) return;
    this.#held = false;
    Atomics.sub(this.#count, 0, 1);
  }
}
