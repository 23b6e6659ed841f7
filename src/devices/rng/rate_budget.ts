/**
 * The entropy budget of `vhostd rng --max-bytes N --period MS`: at most N
 * bytes per period. A period starts when bytes are first taken from a full
 * budget; when it ends the budget is full again. No clock here: the data
 * half arms a Worker timer for the period and calls `refill` when it fires.
 *
 * @module
 */

/** A byte budget that is full again at the end of every period. */
export class RateBudget {
  /** Bytes per period. */
  readonly maxBytes: number;
  /** Period length in milliseconds. */
  readonly periodMs: number;
  #remaining: number;

  /** A full budget; throws RangeError for a limit that is not positive. */
  constructor(maxBytes: number, periodMs: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) {
      throw new RangeError(`max bytes must be a positive integer, got ${maxBytes}`);
    }
    if (!Number.isFinite(periodMs) || periodMs <= 0) {
      throw new RangeError(`period must be a positive number of ms, got ${periodMs}`);
    }
    this.maxBytes = maxBytes;
    this.periodMs = periodMs;
    this.#remaining = maxBytes;
  }

  /** Bytes left in the current period. */
  get remaining(): number {
    return this.#remaining;
  }

  /** True while no byte of the budget is spent (no period is running). */
  get full(): boolean {
    return this.#remaining === this.maxBytes;
  }

  /** Takes up to `bytes`; returns what was granted. */
  take(bytes: number): number {
    const granted = Math.max(0, Math.min(bytes, this.#remaining));
    this.#remaining -= granted;
    return granted;
  }

  /** The period ended: the budget is full again. */
  refill(): void {
    this.#remaining = this.maxBytes;
  }

  /** Sets what remains (a loaded state), clamped to `0..maxBytes`. */
  restore(remaining: number): void {
    const whole = Number.isFinite(remaining) ? Math.floor(remaining) : this.maxBytes;
    this.#remaining = Math.max(0, Math.min(this.maxBytes, whole));
  }
}
