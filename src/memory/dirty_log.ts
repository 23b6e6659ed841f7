/**
 * The dirty-page log of live migration: a bitmap shared with the front-end
 * (SET_LOG_BASE), one bit per 4 KiB page of guest-physical memory. While
 * VHOST_F_LOG_ALL is negotiated, every guest write the back-end makes sets
 * its pages' bits, so the VMM re-sends those pages to the destination.
 *
 * Bits are set with Atomics.or: several queue Workers may log into the same
 * byte at once, and the front-end clears bits concurrently while it syncs.
 *
 * @module
 */

import type { WriteObserver } from "./guest_memory.ts";

/** Size of a logged page (VHOST_LOG_PAGE). */
export const LOG_PAGE_SIZE = 4096;

/** Sets log bits for guest writes. */
export class DirtyLog implements WriteObserver {
  readonly #bits: Uint8Array;
  readonly #maxPage: number;
  /** Pages marked since `takeMarked()` was last called. */
  #marked = 0;
  /** Writes that fell outside the log (the front-end's log is too small). */
  outOfRange = 0;

  /** A log over `bits` (the mapped bitmap). */
  constructor(bits: Uint8Array) {
    this.#bits = bits;
    this.#maxPage = bits.length * 8;
  }

  /** Marks every page touched by `[gpa, gpa+len)`. */
  markWritten(gpa: number, len: number): void {
    if (len <= 0) return;
    const first = Math.floor(gpa / LOG_PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    for (let page = first; page <= last; page++) {
      if (page >= this.#maxPage) {
        this.outOfRange++;
        return;
      }
      Atomics.or(this.#bits, page >>> 3, 1 << (page & 7));
    }
    this.#marked += last - first + 1;
  }

  /** Number of pages marked since the previous call (to decide whether to signal the log eventfd). */
  takeMarked(): number {
    const n = this.#marked;
    this.#marked = 0;
    return n;
  }
}
