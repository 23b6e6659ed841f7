/**
 * Fixed-bucket histograms: log-spaced upper bounds (1, 2.5, 5 per decade),
 * so recording an observation is a short scan and one increment, with no
 * allocation.
 *
 * @module
 */

/** 1, 2.5 and 5 times each power of ten from `min` (a power of ten) up to `max`. */
function decadeBounds(min: number, max: number): number[] {
  const bounds: number[] = [];
  for (let decade = min; decade <= max * 1.000001; decade *= 10) {
    for (const step of [1, 2.5, 5]) {
      // Rounded to 12 significant digits so the labels read 0.00025, not 0.00025000000000000006.
      const bound = Number((decade * step).toPrecision(12));
      if (bound <= max * 1.000001) bounds.push(bound);
    }
  }
  return bounds;
}

/** Request latency bounds in seconds: 10 µs to 10 s. */
export const LATENCY_BOUNDS_SECONDS: readonly number[] = decadeBounds(1e-5, 10);

/** State transfer duration bounds in seconds: 1 ms to 1000 s. */
export const TRANSFER_BOUNDS_SECONDS: readonly number[] = decadeBounds(1e-3, 1000);

/**
 * Index of the bucket `value` falls in: the first bound it does not exceed
 * (the format's buckets are `le`), or `bounds.length` above the last one.
 */
export function bucketIndex(bounds: ArrayLike<number>, value: number): number {
  let i = 0;
  while (i < bounds.length && value > bounds[i]) i++;
  return i;
}

/** A histogram kept on one thread. */
export class Histogram {
  /** Upper bounds of the buckets (without +Inf). */
  readonly bounds: readonly number[];
  /** Observations per bucket, not cumulative; the last counts those above every bound. */
  readonly counts: Float64Array;
  /** Sum of the observations. */
  sum = 0;

  /** An empty histogram over `bounds`. */
  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Records one observation. */
  observe(value: number): void {
    this.counts[bucketIndex(this.bounds, value)]++;
    this.sum += value;
  }
}
