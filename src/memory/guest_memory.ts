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
 */
export class GuestMemory {
  /** Regions sorted by guest address. */
  readonly regions: readonly GuestRegion[];
  /** Set while dirty-page logging is on; every back-end write is reported to it. */
  writeObserver: WriteObserver | undefined;

  /** Builds a table from regions; overlapping guest ranges are refused. */
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
    this.regions = sorted;
  }

  /** Resolves guest-physical `[gpa, gpa+len)`; `undefined` when not entirely inside one region. */
  resolve(gpa: number, len: number): ResolvedRange | undefined {
    if (!(len >= 0) || !(gpa >= 0)) return undefined;
    const regions = this.regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i];
      const offset = gpa - r.guestAddr;
      if (offset >= 0 && offset < r.size) {
        return offset + len <= r.size ? { region: r, offset } : undefined;
      }
    }
    return undefined;
  }

  /** Resolves a front-end virtual range (ring addresses); `undefined` when outside the table. */
  resolveUserAddr(uaddr: number, len: number): ResolvedRange | undefined {
    if (!(len >= 0) || !(uaddr >= 0)) return undefined;
    for (const r of this.regions) {
      const offset = uaddr - r.userAddr;
      if (offset >= 0 && offset < r.size) {
        return offset + len <= r.size ? { region: r, offset } : undefined;
      }
    }
    return undefined;
  }

  /** Byte view of guest-physical `[gpa, gpa+len)`, or `undefined` when out of bounds. */
  slice(gpa: number, len: number): Uint8Array | undefined {
    const hit = this.resolve(gpa, len);
    return hit ? hit.region.bytes.subarray(hit.offset, hit.offset + len) : undefined;
  }

  /** Host address of guest-physical `gpa` for a `len`-byte access, or `undefined`. */
  hostAddress(gpa: number, len: number): number | undefined {
    const hit = this.resolve(gpa, len);
    return hit ? hit.region.hostAddr + hit.offset : undefined;
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
