/**
 * A synchronous pause for the blocking front-end (connection retries).
 *
 * @module
 */

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the calling thread for `ms` milliseconds. */
export function sleepSync(ms: number): void {
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
}
