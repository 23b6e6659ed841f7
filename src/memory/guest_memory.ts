/**
 * Guest memory as seen by the back-end: a set of regions, each a host view of
 * a piece of guest-physical address space, with bounds-checked translation.
 *
 * Addresses are plain JS numbers: guest-physical and front-end virtual
 * addresses on x86-64 fit in 53 bits, and numbers are far cheaper than bigints
 * on the request path. This module does no I/O; `mapped_region.ts` builds
 * regions from mmap'd file descriptors, tests build them from ArrayBuffers.
 *
 * @module
 */

/** One contiguous piece of guest memory visible to the back-end. */
export interface GuestRegion {
  /** Guest-physical address of the first byte. */
  readonly guestAddr: number;
  /** Length in bytes. */
  readonly size: number;
  /** The front-end's virtual address of the first byte (used by SET_VRING_ADDR). */
  readonly userAddr: number;
  /** Host address of the first byte, for iovecs handed to syscalls. */
  readonly hostAddr: number;
  /** Byte view of the whole region. */
  readonly bytes: Uint8Array;
  /** DataView over the same bytes (little-endian accessors are used throughout). */
  readonly view: DataView;
}

/** Receives every guest-physical range the back-end writes (dirty-page logging). */
export interface WriteObserver {
  /** Called after the back-end wrote `len` bytes at guest-physical `gpa`. */
  markWritten(gpa: number, len: number): void;
}

/**
 * Longest copy out of guest memory made byte by byte rather than through a
 * view: in Deno 2.9.6 a byte loop took 9 ns for 16 bytes and 33 ns for 40,
 * `subarray` and `set` 50–60 ns for any of 16–256 (the loop 69 ns for 80).
 */
const SHORT_COPY_BYTES = 48;

/** A resolved guest range: the region and the byte offset inside it. */
export interface ResolvedRange {
  /** Region that holds the whole range. */
  region: GuestRegion;
  /** Offset of the range's first byte inside `region`. */
  offset: number;
}

/**
 * The guest memory table. Lookups check that the whole range lies inside one
 * region; a range that straddles two regions or leaves guest memory resolves
 * to `undefined`, never to a partial view.
 *
 * Translation stays cheap with hundreds of regions (GET_MAX_MEM_SLOTS offers
 * 509): the last region hit is tried first (consecutive segments of a request
 * usually share one), then a binary search over the region starts, kept in
 * sorted Float64Arrays for guest-physical and for front-end addresses.
 */
export class GuestMemory {
  /** Regions sorted by guest address. */
  readonly regions: readonly GuestRegion[];
  /** Set while dirty-page logging is on; every back-end write is reported to it. */
  writeObserver: WriteObserver | undefined;
  /** `regions[i].guestAddr`, ascending. */
  readonly #guestStarts: Float64Array;
  /** Offset in its region of the range `#regionOf` found last. */
  #offset = 0;
  /** Regions sorted by front-end virtual address. */
  readonly #byUser: readonly GuestRegion[];
  /** `#byUser[i].userAddr`, ascending. */
  readonly #userStarts: Float64Array;
  /** The region of the last successful guest-physical lookup (tried first). */
  #lastGuest: GuestRegion | undefined;
  /** The region of the last successful front-end address lookup. */
  #lastUser: GuestRegion | undefined;

  /** Builds a table from regions; regions overlapping in guest or front-end addresses are refused. */
  constructor(regions: readonly GuestRegion[]) {
    const sorted = [...regions].sort((a, b) => a.guestAddr - b.guestAddr);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1];
      if (prev.guestAddr + prev.size > sorted[i].guestAddr) {
        throw new RangeError(
          `guest memory regions overlap at 0x${sorted[i].guestAddr.toString(16)}`,
        );
      }
    }
    const byUser = [...sorted].sort((a, b) => a.userAddr - b.userAddr);
    for (let i = 1; i < byUser.length; i++) {
      const prev = byUser[i - 1];
      if (prev.userAddr + prev.size > byUser[i].userAddr) {
        throw new RangeError(
          `guest memory regions overlap in user addresses at 0x${byUser[i].userAddr.toString(16)}`,
        );
      }
    }
    this.regions = sorted;
    this.#guestStarts = new Float64Array(sorted.length);
    this.#userStarts = new Float64Array(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      this.#guestStarts[i] = sorted[i].guestAddr;
      this.#userStarts[i] = byUser[i].userAddr;
    }
    this.#byUser = byUser;
    this.#lastGuest = sorted[0];
    this.#lastUser = byUser[0];
  }

  /** Resolves guest-physical `[gpa, gpa+len)`; `undefined` when not entirely inside one region. */
  resolve(gpa: number, len: number): ResolvedRange | undefined {
    const r = this.#regionOf(gpa, len);
    return r === undefined ? undefined : { region: r, offset: this.#offset };
  }

  /** True when guest-physical `[gpa, gpa+len)` lies inside one region ({@linkcode resolve} without a result). */
  contains(gpa: number, len: number): boolean {
    return this.#regionOf(gpa, len) !== undefined;
  }

  /**
   * The region holding all of `[gpa, gpa+len)`: what {@linkcode resolve}
   * finds, without the result object (the copies below run several times
   * per request, and that object was 40 bytes each). The range's offset in
   * it is left in `#offset`.
   */
  #regionOf(gpa: number, len: number): GuestRegion | undefined {
    if (!(len >= 0) || !(gpa >= 0)) return undefined;
    let r = this.#lastGuest;
    if (r === undefined) return undefined;
    let offset = gpa - r.guestAddr;
    if (!(offset >= 0 && offset < r.size)) {
      const i = lastAtOrBelow(this.#guestStarts, gpa);
      if (i < 0) return undefined;
      r = this.regions[i];
      offset = gpa - r.guestAddr;
      if (offset >= r.size) return undefined;
      this.#lastGuest = r;
    }
    this.#offset = offset;
    return offset + len <= r.size ? r : undefined;
  }

  /** Resolves a front-end virtual range (ring addresses); `undefined` when outside the table. */
  resolveUserAddr(uaddr: number, len: number): ResolvedRange | undefined {
    if (!(len >= 0) || !(uaddr >= 0)) return undefined;
    let r = this.#lastUser;
    if (r === undefined) return undefined;
    let offset = uaddr - r.userAddr;
    if (!(offset >= 0 && offset < r.size)) {
      const i = lastAtOrBelow(this.#userStarts, uaddr);
      if (i < 0) return undefined;
      r = this.#byUser[i];
      offset = uaddr - r.userAddr;
      if (offset >= r.size) return undefined;
      this.#lastUser = r;
    }
    return offset + len <= r.size ? { region: r, offset } : undefined;
  }

  /** The first guest-physical address past the highest region (0 for an empty table). */
  get guestEnd(): number {
    const last = this.regions[this.regions.length - 1];
    return last ? last.guestAddr + last.size : 0;
  }

  /** Byte view of guest-physical `[gpa, gpa+len)`, or `undefined` when out of bounds. */
  slice(gpa: number, len: number): Uint8Array | undefined {
    const r = this.#regionOf(gpa, len);
    return r === undefined ? undefined : r.bytes.subarray(this.#offset, this.#offset + len);
  }

  /**
   * Copies `src` to guest-physical `gpa` (no view of guest memory is made:
   * replies are written several times per request). False, with nothing
   * written, when the range is not inside one region. Does not report the
   * write to the dirty log: the caller calls {@linkcode markWritten}.
   */
  copyIn(gpa: number, src: Uint8Array): boolean {
    const r = this.#regionOf(gpa, src.length);
    if (r === undefined) return false;
    r.bytes.set(src, this.#offset);
    return true;
  }

  /**
   * Copies guest-physical `[gpa, gpa+len)` into `dest` at `at`; a short
   * range without making a view of guest memory (see SHORT_COPY_BYTES).
   * False, with nothing copied, when the range is not inside one region or
   * `dest` has no room for it.
   */
  copyOut(gpa: number, dest: Uint8Array, at: number, len: number): boolean {
    if (!(at >= 0) || !(at + len <= dest.length)) return false;
    const r = this.#regionOf(gpa, len);
    if (r === undefined) return false;
    const from = this.#offset;
    const bytes = r.bytes;
    if (len <= SHORT_COPY_BYTES) {
      for (let i = 0; i < len; i++) dest[at + i] = bytes[from + i];
    } else {
      dest.set(bytes.subarray(from, from + len), at);
    }
    return true;
  }

  /** Host address of guest-physical `gpa` for a `len`-byte access, or `undefined`. */
  hostAddress(gpa: number, len: number): number | undefined {
    const r = this.#regionOf(gpa, len);
    return r === undefined ? undefined : r.hostAddr + this.#offset;
  }

  /** Records that the back-end wrote guest-physical `[gpa, gpa+len)`. */
  markWritten(gpa: number, len: number): void {
    this.writeObserver?.markWritten(gpa, len);
  }

  /** Guest-physical address of a front-end virtual address, or `undefined`. */
  userToGuest(uaddr: number): number | undefined {
    const hit = this.resolveUserAddr(uaddr, 0);
    return hit ? hit.region.guestAddr + hit.offset : undefined;
  }
}

/** Index of the last element of ascending `starts` that is <= `addr`, or -1. */
function lastAtOrBelow(starts: Float64Array, addr: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  if (hi < 0 || addr < starts[0]) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (starts[mid] <= addr) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * A region backed by a plain ArrayBuffer: the test double for guest memory
 * (the mock split queue and unit tests use it). `userAddr` defaults to a
 * distinct fake address so tests notice gpa/uaddr mix-ups.
 */
export function arrayBufferRegion(
  guestAddr: number,
  size: number,
  userAddr = guestAddr + 0x7f00_0000_0000,
): GuestRegion {
  const bytes = new Uint8Array(size);
  const hostAddr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes)));
  return { guestAddr, size, userAddr, hostAddr, bytes, view: new DataView(bytes.buffer) };
}
