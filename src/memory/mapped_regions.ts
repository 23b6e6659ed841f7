/**
 * Guest memory regions mapped from the file descriptors a front-end sends
 * (SET_MEM_TABLE, ADD_MEM_REG), owned by the main thread.
 *
 * Each region is mapped whole from file offset 0 up to `mmap_offset + size`,
 * as libvhost-user does, so an `mmap_offset` that is not page-aligned still
 * works. Unmapping is the caller's job once no Worker holds a view any more.
 *
 * @module
 */

import {
  closeQuietly,
  fstat,
  MAP_NORESERVE,
  MAP_SHARED,
  mapArrayBuffer,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
  S_IFMT,
  S_IFREG,
} from "../../ffi/mod.ts";
import type { MemoryRegionDesc } from "../protocol/mod.ts";
import { GuestMemory, type GuestRegion } from "./guest_memory.ts";

/** Largest address the back-end accepts (53 bits: exact as a JS number). */
const MAX_ADDRESS = 2 ** 53;

/** One mapped region. */
export interface MappedRegion {
  /** The region as the front-end described it. */
  readonly desc: MemoryRegionDesc;
  /** Guest-physical address (number). */
  readonly guestAddr: number;
  /** Size in bytes. */
  readonly size: number;
  /** Front-end virtual address. */
  readonly userAddr: number;
  /** Address returned by mmap (start of the whole mapping). */
  readonly mapBase: bigint;
  /** Length of the whole mapping. */
  readonly mapLength: number;
  /** Host address of the region's first byte (mapBase + mmap_offset). */
  readonly hostAddr: bigint;
}

/** A region that cannot be mapped, with the reason. */
export class MappingError extends Error {}

/** A shared mapping of the first `length` bytes of a file. */
export interface FileMapping {
  /** Address returned by mmap. */
  base: bigint;
  /** Length of the mapping. */
  length: number;
}

/**
 * Maps bytes [0, `offset + size`) of `fd` read-write and shared, from offset
 * 0 so that an `offset` that is not page-aligned still works (as
 * libvhost-user does). Refuses a range reaching past the end of a regular
 * file: mmap would accept it, but the first touch of such a page kills the
 * process with SIGBUS. `what` names the range in errors.
 */
export function mapFileRange(fd: number, offset: number, size: number, what: string): FileMapping {
  let st;
  try {
    st = fstat(fd);
  } catch (e) {
    throw new MappingError(`${what} fd: ${e instanceof Error ? e.message : e}`);
  }
  if ((st.mode & S_IFMT) === S_IFREG && offset + size > st.size) {
    throw new MappingError(
      `${what} of ${size} bytes at offset ${offset} reaches past the end of its ${st.size}-byte file`,
    );
  }
  const length = offset + size;
  try {
    return {
      base: mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0),
      length,
    };
  } catch (e) {
    throw new MappingError(`cannot map ${what}: ${e instanceof Error ? e.message : e}`);
  }
}

/**
 * Maps `desc` from `fd`. The fd is not closed (the caller owns it; closing it
 * after mapping is fine, the mapping stays).
 */
export function mapRegion(desc: MemoryRegionDesc, fd: number): MappedRegion {
  const { guestAddr, size, userAddr, mmapOffset } = desc;
  if (size === 0n) throw new MappingError("memory region of size 0");
  for (
    const [name, v] of [["guest address", guestAddr + size], ["user address", userAddr + size], [
      "mmap offset",
      mmapOffset + size,
    ]] as const
  ) {
    if (v > BigInt(MAX_ADDRESS)) throw new MappingError(`memory region ${name} beyond 2^53`);
  }
  const { base: mapBase, length: mapLength } = mapFileRange(
    fd,
    Number(mmapOffset),
    Number(size),
    "memory region",
  );
  return {
    desc,
    guestAddr: Number(guestAddr),
    size: Number(size),
    userAddr: Number(userAddr),
    mapBase,
    mapLength,
    hostAddr: mapBase + mmapOffset,
  };
}

/** Unmaps a region (only once no thread holds a view of it). */
export function unmapRegion(region: MappedRegion): void {
  munmap(region.mapBase, region.mapLength);
}

/** Maps several regions; on failure unmaps the ones already mapped and closes nothing. */
export function mapRegions(
  descs: readonly MemoryRegionDesc[],
  fds: readonly number[],
): MappedRegion[] {
  const mapped: MappedRegion[] = [];
  try {
    descs.forEach((d, i) => mapped.push(mapRegion(d, fds[i])));
  } catch (e) {
    mapped.forEach(unmapRegion);
    throw e;
  }
  return mapped;
}

/** Where a region lives: the fields every isolate needs to view a mapping made elsewhere. */
export interface RegionPlacement {
  /** Guest-physical address of the first byte. */
  guestAddr: number;
  /** Size in bytes. */
  size: number;
  /** Front-end virtual address of the first byte. */
  userAddr: number;
  /** Host address of the first byte. */
  hostAddr: bigint;
}

/** A GuestRegion viewing an existing mapping (works in any isolate of the process). */
export function viewRegion(r: RegionPlacement): GuestRegion {
  const bytes = new Uint8Array(mapArrayBuffer(r.hostAddr, r.size));
  return {
    guestAddr: r.guestAddr,
    size: r.size,
    userAddr: r.userAddr,
    hostAddr: Number(r.hostAddr),
    bytes,
    view: new DataView(bytes.buffer),
  };
}

/**
 * The views made by the previous {@linkcode guestMemoryOf} call in this
 * isolate, by placement. QEMU adds regions one at a time (ADD_MEM_REG, up to
 * 509), and every add rebuilds the table in the main thread and in each
 * Worker: regions that did not move keep their views instead of a new
 * ArrayBuffer each. A view is only a pointer and a length, so reusing one for
 * an identical placement is exact even if the mapping was replaced meanwhile.
 */
let previousViews = new Map<number, GuestRegion>();

/** Builds a GuestMemory over mapped regions (views valid in this isolate). */
export function guestMemoryOf(regions: readonly RegionPlacement[]): GuestMemory {
  const views = new Map<number, GuestRegion>();
  const list = regions.map((r) => {
    const hostAddr = Number(r.hostAddr);
    const old = previousViews.get(hostAddr);
    const view = old !== undefined && old.size === r.size && old.guestAddr === r.guestAddr &&
        old.userAddr === r.userAddr
      ? old
      : viewRegion(r);
    views.set(hostAddr, view);
    return view;
  });
  const memory = new GuestMemory(list);
  previousViews = views;
  return memory;
}

/** Closes fds quietly (helper for callers that own region fds). */
export function closeAll(fds: readonly number[]): void {
  fds.forEach(closeQuietly);
}
