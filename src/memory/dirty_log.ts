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
import { log } from "../log.ts";

/** Size of a logged page (VHOST_LOG_PAGE). */
export const LOG_PAGE_SIZE = 4096;

/** Bytes of guest-physical memory a log of `logBytes` bytes covers (one bit per page). */
export function logCoverage(logBytes: number): number {
  return logBytes * 8 * LOG_PAGE_SIZE;
}

/**
 * Sets log bits for guest writes. A page beyond the log is never written
 * (the bitmap is exactly the front-end's mapping): it is counted in
 * `outOfRange` and the first one is logged as a warning, since the VMM will
 * not re-send it. SET_LOG_BASE refuses a log smaller than guest memory, so
 * this only happens when the memory table grew past the log afterwards.
 */
export class DirtyLog implements WriteObserver {
  readonly #bits: Uint8Array;
  readonly #maxPage: number;
  /** Pages marked since `takeMarked()` was last called. */
  #marked = 0;
  /** Pages written beyond the end of the log (the front-end's log is too small). */
  outOfRange = 0;

  /** A log over `bits` (the mapped bitmap). */
  constructor(bits: Uint8Array) {
    this.#bits = bits;
    this.#maxPage = bits.length * 8;
  }

  /** Marks every page touched by `[gpa, gpa+len)`. */
  markWritten(gpa: number, len: number): void {
    if (!(len > 0)) return;
    const first = Math.floor(gpa / LOG_PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    const end = Math.min(last, this.#maxPage - 1);
    for (let page = first; page <= end; page++) {
      // Not `page >>> 3`: pages past 2^32 (guest memory beyond 16 TiB) must not wrap.
      Atomics.or(this.#bits, Math.floor(page / 8), 1 << (page % 8));
    }
    if (end >= first) this.#marked += end - first + 1;
    if (last > end) this.#missed(Math.min(last - end, last - first + 1), gpa);
  }

  #missed(pages: number, gpa: number): void {
    if (this.outOfRange === 0) {
      log.warn(
        `dirty log of ${this.#bits.length} bytes covers guest memory up to 0x${
          logCoverage(this.#bits.length).toString(16)
        }: a write at 0x${
          gpa.toString(16)
        } is not logged (the front-end must send a larger SET_LOG_BASE)`,
      );
    }
    this.outOfRange += pages;
  }

  /** Number of pages marked since the previous call (to decide whether to signal the log eventfd). */
  takeMarked(): number {
    const n = this.#marked;
    this.#marked = 0;
    return n;
  }
}
