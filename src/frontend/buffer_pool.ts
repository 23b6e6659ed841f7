/**
 * Reusable guest buffers for the front-end's requests: a first-fit allocator
 * with coalescing over one block of shared guest memory, so that a
 * long-running workload (the benchmark) can allocate and free request
 * buffers forever.
 *
 * @module
 */

/** Allocation granule: every buffer starts and ends on it. */
const GRANULE = 16;

interface FreeRange {
  start: number;
  end: number;
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/** Allocates and frees buffers inside guest-physical `[base, base+size)`. */
export class GuestBufferPool {
  /** First guest-physical address of the pool. */
  readonly base: number;
  /** Size of the pool in bytes. */
  readonly size: number;
  /** Free ranges sorted by address, never adjacent (they are merged). */
  readonly #free: FreeRange[];
  readonly #allocated = new Map<number, number>();

  /** A pool over `[base, base+size)`; `base` must be 16-byte aligned. */
  constructor(base: number, size: number) {
    if (base % GRANULE !== 0 || !Number.isSafeInteger(base)) {
      throw new RangeError(`pool base 0x${base.toString(16)} is not 16-byte aligned`);
    }
    if (!Number.isSafeInteger(size) || size < GRANULE) {
      throw new RangeError(`bad pool size ${size}`);
    }
    this.base = base;
    this.size = size - (size % GRANULE);
    this.#free = [{ start: base, end: base + this.size }];
  }

  /**
   * Returns the guest-physical address of `len` free bytes aligned to
   * `align` (at least 16). Throws RangeError when no free range is large
   * enough.
   */
  alloc(len: number, align: number = GRANULE): number {
    if (!Number.isSafeInteger(len) || len <= 0) throw new RangeError(`bad length ${len}`);
    const alignment = Math.max(GRANULE, align);
    const rounded = alignUp(len, GRANULE);
    for (let i = 0; i < this.#free.length; i++) {
      const range = this.#free[i];
      const start = alignUp(range.start, alignment);
      const end = start + rounded;
      if (end > range.end) continue;
      const pieces: FreeRange[] = [];
      if (start > range.start) pieces.push({ start: range.start, end: start });
      if (end < range.end) pieces.push({ start: end, end: range.end });
      this.#free.splice(i, 1, ...pieces);
      this.#allocated.set(start, rounded);
      return start;
    }
    throw new RangeError(
      `buffer pool of ${this.size} bytes has no free ${rounded}-byte range (${this.#allocated.size} buffers in use)`,
    );
  }

  /** Returns a buffer from {@linkcode alloc}; throws RangeError for any other address. */
  free(gpa: number): void {
    const len = this.#allocated.get(gpa);
    if (len === undefined) throw new RangeError(`0x${gpa.toString(16)} is not an allocated buffer`);
    this.#allocated.delete(gpa);
    const freed: FreeRange = { start: gpa, end: gpa + len };
    let i = 0;
    while (i < this.#free.length && this.#free[i].start < freed.start) i++;
    const before = this.#free[i - 1];
    const after = this.#free[i];
    if (before !== undefined && before.end === freed.start) {
      before.end = freed.end;
      if (after !== undefined && after.start === before.end) {
        before.end = after.end;
        this.#free.splice(i, 1);
      }
    } else if (after !== undefined && after.start === freed.end) {
      after.start = freed.start;
    } else {
      this.#free.splice(i, 0, freed);
    }
  }

  /** Number of buffers currently allocated. */
  get inUse(): number {
    return this.#allocated.size;
  }

  /** Bytes currently free (possibly fragmented). */
  freeBytes(): number {
    return this.#free.reduce((sum, r) => sum + r.end - r.start, 0);
  }
}
