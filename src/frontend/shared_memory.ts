/**
 * Guest memory owned by the TypeScript front-end: one memfd mapped shared
 * into this process and described to the back-end as one or more regions,
 * exactly as QEMU does with `memory-backend-memfd,share=on`. Region
 * `userAddr`s are the real addresses of this process's mapping.
 *
 * @module
 */

import {
  closeQuietly,
  ftruncate,
  MAP_SHARED,
  mapArrayBuffer,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "../../ffi/mod.ts";
import { GuestMemory, type GuestRegion } from "../memory/guest_memory.ts";
import type { MemoryRegionDesc } from "../protocol/mod.ts";

/** Regions are whole pages. */
const PAGE_SIZE = 4096;

/** Options of {@linkcode SharedGuestMemory.create}. */
export interface SharedMemoryOptions {
  /** Total size in bytes; a positive multiple of 4096 per region. */
  size: number;
  /** Guest-physical address of the first byte. Default 0. */
  guestBase?: number;
  /**
   * Number of regions the memory is split into (equal, guest-contiguous,
   * all in the same memfd at increasing offsets). Default 1.
   */
  regions?: number;
  /** memfd name, shown in /proc. */
  name?: string;
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/** A memfd mapped into this process, seen as guest memory. */
export class SharedGuestMemory {
  /** The memfd (send it with SET_MEM_TABLE, once per region). */
  readonly fd: number;
  /** Total size in bytes. */
  readonly size: number;
  /** Guest-physical address of the first byte. */
  readonly guestBase: number;
  /** Address of this process's mapping of the whole memfd. */
  readonly mapAddress: bigint;
  /** Guest memory over the mapping (regions with real `userAddr` and `hostAddr`). */
  readonly guestMemory: GuestMemory;
  readonly #bytes: Uint8Array;
  readonly #regionSize: number;
  #nextFree: number;
  #closed = false;

  private constructor(
    fd: number,
    mapAddress: bigint,
    size: number,
    guestBase: number,
    regionCount: number,
  ) {
    this.fd = fd;
    this.mapAddress = mapAddress;
    this.size = size;
    this.guestBase = guestBase;
    this.#bytes = new Uint8Array(mapArrayBuffer(mapAddress, size));
    this.#regionSize = size / regionCount;
    const host = Number(mapAddress);
    const regions: GuestRegion[] = [];
    for (let i = 0; i < regionCount; i++) {
      const offset = i * this.#regionSize;
      const bytes = this.#bytes.subarray(offset, offset + this.#regionSize);
      regions.push({
        guestAddr: guestBase + offset,
        size: this.#regionSize,
        userAddr: host + offset,
        hostAddr: host + offset,
        bytes,
        view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      });
    }
    this.guestMemory = new GuestMemory(regions);
    this.#nextFree = guestBase;
  }

  /** Creates, sizes and maps a memfd. Throws RangeError on bad options, SyscallError on failure. */
  static create(options: SharedMemoryOptions): SharedGuestMemory {
    const { size } = options;
    const guestBase = options.guestBase ?? 0;
    const regionCount = options.regions ?? 1;
    if (!Number.isInteger(regionCount) || regionCount < 1 || regionCount > 8) {
      throw new RangeError(`regions must be 1..8, got ${regionCount}`);
    }
    if (!Number.isSafeInteger(size) || size <= 0 || size % (regionCount * PAGE_SIZE) !== 0) {
      throw new RangeError(
        `size must be a positive multiple of ${regionCount * PAGE_SIZE} bytes, got ${size}`,
      );
    }
    if (!Number.isSafeInteger(guestBase) || guestBase < 0 || guestBase % PAGE_SIZE !== 0) {
      throw new RangeError(`guestBase must be a page-aligned address, got ${guestBase}`);
    }
    const fd = memfdCreate(options.name ?? "vhostd-frontend-guest");
    try {
      ftruncate(fd, size);
      const address = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      return new SharedGuestMemory(fd, address, size, guestBase, regionCount);
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
  }

  /** The regions as SET_MEM_TABLE describes them. */
  regionDescs(): MemoryRegionDesc[] {
    return this.guestMemory.regions.map((r) => ({
      guestAddr: BigInt(r.guestAddr),
      size: BigInt(r.size),
      userAddr: BigInt(r.userAddr),
      mmapOffset: BigInt(r.guestAddr - this.guestBase),
    }));
  }

  /**
   * The memory described as `count` equal, guest-contiguous regions, all in
   * this memfd at increasing offsets: what a front-end adds one by one with
   * ADD_MEM_REG (QEMU's memory hot-plug uses up to 509 slots), each with
   * `fd`. Only descriptions: `guestMemory` and `alloc` keep the regions the
   * memory was created with, and `bytes`/`userAddr` work across all of them.
   * Throws RangeError unless the size is a multiple of `count` pages.
   */
  splitRegionDescs(count: number): MemoryRegionDesc[] {
    if (!Number.isInteger(count) || count < 1 || this.size % (count * PAGE_SIZE) !== 0) {
      throw new RangeError(`${this.size} bytes cannot be split into ${count} page-sized regions`);
    }
    const size = this.size / count;
    return Array.from({ length: count }, (_, i) => ({
      guestAddr: BigInt(this.guestBase + i * size),
      size: BigInt(size),
      userAddr: this.mapAddress + BigInt(i * size),
      mmapOffset: BigInt(i * size),
    }));
  }

  /** One fd per region (all the same memfd), in `regionDescs()` order. */
  regionFds(): number[] {
    return this.guestMemory.regions.map(() => this.fd);
  }

  /** The first guest-physical address past the memory. */
  get guestEnd(): number {
    return this.guestBase + this.size;
  }

  /**
   * Reserves `len` bytes aligned to `align` and returns their guest-physical
   * address. A simple bump allocator (nothing is ever freed): the range never
   * straddles two regions, so rings and tables fit the back-end's one-region
   * rule. Throws RangeError when the memory is used up.
   */
  alloc(len: number, align: number = 8): number {
    if (!Number.isSafeInteger(len) || len <= 0) throw new RangeError(`bad length ${len}`);
    if (!Number.isSafeInteger(align) || align <= 0) throw new RangeError(`bad alignment ${align}`);
    if (len > this.#regionSize) {
      throw new RangeError(`${len} bytes do not fit a ${this.#regionSize}-byte region`);
    }
    let start = alignUp(this.#nextFree, align);
    const regionEnd = this.guestBase +
      (Math.floor((start - this.guestBase) / this.#regionSize) + 1) * this.#regionSize;
    if (start + len > regionEnd) start = alignUp(regionEnd, align);
    if (start + len > this.guestEnd) {
      throw new RangeError(`shared guest memory exhausted: ${len} more bytes wanted`);
    }
    this.#nextFree = start + len;
    return start;
  }

  /** The largest `len` a following `alloc(len, align)` can satisfy (0 when full). */
  largestFree(align: number = 8): number {
    const offset = this.#nextFree - this.guestBase;
    const regionEnd = (Math.floor(offset / this.#regionSize) + 1) * this.#regionSize;
    const inThisRegion = Math.max(0, regionEnd - alignUp(offset, align));
    const laterRegionFree = regionEnd < this.size ? this.#regionSize : 0;
    return Math.max(inThisRegion, laterRegionFree);
  }

  /** A view of guest-physical `[gpa, gpa+len)`; throws RangeError outside the memory. */
  bytes(gpa: number, len: number): Uint8Array {
    this.#checkOpen();
    const offset = gpa - this.guestBase;
    if (!(offset >= 0 && len >= 0 && offset + len <= this.size)) {
      throw new RangeError(`guest range [0x${gpa.toString(16)}, +${len}) is outside the memory`);
    }
    return this.#bytes.subarray(offset, offset + len);
  }

  /** The front-end virtual address of guest-physical `gpa` (what SET_VRING_ADDR carries). */
  userAddr(gpa: number): bigint {
    const offset = gpa - this.guestBase;
    if (!(offset >= 0 && offset <= this.size)) {
      throw new RangeError(`guest address 0x${gpa.toString(16)} is outside the memory`);
    }
    return this.mapAddress + BigInt(offset);
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("shared guest memory is closed");
  }

  /** Unmaps the memory and closes the memfd (idempotent). Views must not be used afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    munmap(this.mapAddress, this.size);
    closeQuietly(this.fd);
  }
}
