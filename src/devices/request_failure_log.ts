/**
 * Warnings for failed guest requests, rate-limited: a misbehaving guest can
 * fail every request, and the log must stay readable (the first ten, then
 * every thousandth).
 *
 * @module
 */

import { log } from "../log.ts";

/** Counts failed requests of one data half and logs a bounded share of them. */
export class RequestFailureLog {
  #failures = 0;

  /** Records a failed request `head` on `queueIndex`, logging it when its turn comes. */
  warn(queueIndex: number, head: number, reason: string): void {
    this.#failures++;
    if (this.#failures <= 10 || this.#failures % 1000 === 0) {
      log.warn(
        `queue ${queueIndex}: request ${head} failed: ${reason}` +
          (this.#failures === 10 ? " (further failures are logged every 1000th)" : ""),
      );
    }
  }
}
