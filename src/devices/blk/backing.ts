/**
 * The storage behind a virtio-blk device: a raw image file or RAM.
 *
 * RAM is a memfd, so both kinds are a file descriptor and every request path
 * (pread/pwrite, fallocate, fdatasync) is the same; the memfd is filled
 * lazily by the kernel, so `--ram 1G` costs nothing until written.
 *
 * An image opened with `cache: "none"` uses O_DIRECT (as qemu-storage-daemon's
 * `cache.direct=on`): its direct-I/O alignment is read with statx
 * (STATX_DIOALIGN), or found by probing 512 then 4096 bytes, and a file
 * system that refuses O_DIRECT is a BackingError that names it.
 *
 * @module
 */

import {
  closeQuietly,
  dioAlignment,
  EINVAL,
  errnoDescription,
  fstat,
  fstatfs,
  ftruncate,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  mapArrayBuffer,
  memfdCreate,
  mmap,
  munmap,
  O_CLOEXEC,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  openFile,
  pread,
  PROT_READ,
  PROT_WRITE,
  S_IFBLK,
  S_IFMT,
  S_IFREG,
  SyscallError,
} from "../../../ffi/mod.ts";
import { SECTOR_SIZE } from "./blk_spec.ts";
import { isOnMemoryFileSystem, pathIsOnMemoryFileSystem } from "../../io/memory_file_system.ts";

/** Host page cache use: `writeback` (buffered I/O) or `none` (O_DIRECT). */
export type CacheMode = "writeback" | "none";

/** Where the disk's bytes live. */
export type BackingSpec =
  | { kind: "file"; path: string; readOnly: boolean; cache?: CacheMode }
  | { kind: "ram"; size: number; readOnly: boolean };

/** Direct-I/O requirements of a backing opened with O_DIRECT. */
export interface DirectIo {
  /** Guest buffer addresses must be multiples of this (stx_dio_mem_align). */
  readonly memAlign: number;
  /** File offsets and buffer lengths must be multiples of this (stx_dio_offset_align). */
  readonly offsetAlign: number;
  /**
   * The same image opened without O_DIRECT, for requests whose file offset
   * or length is not a multiple of `offsetAlign` (only opened when
   * `offsetAlign` is above 512, the sector size); -1 when not needed.
   */
  readonly bufferedFd: number;
}

/** An opened backing: its fd (shared by all queue Workers) and its identity. */
export interface Backing {
  /** Open file descriptor (process-wide, valid in every Worker). */
  readonly fd: number;
  /** Size in bytes (a multiple of 512). */
  readonly size: number;
  /** Writes are refused. */
  readonly readOnly: boolean;
  /** "file" or "ram". */
  readonly kind: "file" | "ram";
  /** The image path, or "ram". */
  readonly path: string;
  /** Set when `fd` was opened with O_DIRECT (`cache: "none"`). */
  readonly direct?: DirectIo;
}

/** Closes the backing's fds. */
export function closeBacking(backing: Backing): void {
  closeQuietly(backing.fd);
  if (backing.direct && backing.direct.bufferedFd >= 0) closeQuietly(backing.direct.bufferedFd);
}

/**
 * True when the backing's bytes live in memory (a RAM disk, an image on
 * tmpfs or ramfs): a read is a memory copy there, so there is no latency for
 * an asynchronous engine to hide.
 */
export function isMemoryBacked(backing: Backing): boolean {
  return backing.kind === "ram" || isOnMemoryFileSystem(backing.fd);
}

/** {@linkcode isMemoryBacked} for a backing not opened yet (false when it cannot be opened). */
export function specIsMemoryBacked(spec: BackingSpec): boolean {
  return spec.kind === "ram" || pathIsOnMemoryFileSystem(spec.path);
}

/** A backing that cannot be used, with a message for the user. */
export class BackingError extends Error {}

/** Opens a backing; throws BackingError with a one-line reason. */
export function openBacking(spec: BackingSpec): Backing {
  if (spec.kind === "ram") {
    if (!Number.isSafeInteger(spec.size) || spec.size <= 0 || spec.size % SECTOR_SIZE !== 0) {
      throw new BackingError(`RAM disk size must be a positive multiple of 512 bytes`);
    }
    const fd = memfdCreate("vhostd-ram-disk");
    try {
      ftruncate(fd, spec.size);
    } catch (e) {
      closeQuietly(fd);
      throw new BackingError(`cannot allocate a ${spec.size}-byte RAM disk: ${describe(e)}`);
    }
    return { fd, size: spec.size, readOnly: spec.readOnly, kind: "ram", path: "ram" };
  }
  const flags = (spec.readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  let fd: number;
  try {
    fd = openFile(spec.path, flags);
  } catch (e) {
    throw new BackingError(`cannot open image ${spec.path}: ${describe(e)}`);
  }
  try {
    const st = fstat(fd);
    const type = st.mode & S_IFMT;
    if (type !== S_IFREG && type !== S_IFBLK) {
      throw new BackingError(`image ${spec.path} is not a regular file`);
    }
    if (type === S_IFBLK) {
      throw new BackingError(
        `image ${spec.path} is a block device; only regular files are supported`,
      );
    }
    if (st.size < SECTOR_SIZE) {
      throw new BackingError(`image ${spec.path} is smaller than one 512-byte sector`);
    }
    // A trailing partial sector is not addressable by the guest.
    const size = st.size - (st.size % SECTOR_SIZE);
    if (spec.cache !== "none") {
      return { fd, size, readOnly: spec.readOnly, kind: "file", path: spec.path };
    }
    const { fd: directFd, ...direct } = openDirect(spec.path, fd, flags);
    return { fd: directFd, size, readOnly: spec.readOnly, kind: "file", path: spec.path, direct };
  } catch (e) {
    closeQuietly(fd);
    throw e instanceof BackingError
      ? e
      : new BackingError(`cannot use image ${spec.path}: ${describe(e)}`);
  }
}

/**
 * Opens `path` again with O_DIRECT and finds its alignment. `buffered` (the
 * image opened without O_DIRECT) is kept as the fallback fd when the offset
 * alignment is coarser than a sector, and closed otherwise.
 */
function openDirect(path: string, buffered: number, flags: number): DirectIo & { fd: number } {
  const refused = (why: string) =>
    new BackingError(
      `cannot use --cache none on ${path}: its file system (${
        fileSystemName(buffered)
      }) ${why}; use --cache writeback`,
    );
  const reported = dioAlignment(buffered);
  if (reported !== undefined && (reported.memAlign === 0 || reported.offsetAlign === 0)) {
    throw refused("does not support direct I/O (O_DIRECT) on this file");
  }
  let fd: number;
  try {
    fd = openFile(path, flags | O_DIRECT);
  } catch (e) {
    if (e instanceof SyscallError && e.errno === EINVAL) {
      throw refused("refuses O_DIRECT (EINVAL)");
    }
    throw new BackingError(`cannot open image ${path} with O_DIRECT: ${describe(e)}`);
  }
  try {
    let align = reported;
    if (align === undefined) {
      // No STATX_DIOALIGN: the sector size, or the common 4 KiB logical block.
      const works = [SECTOR_SIZE, 4096].find((n) => directReadWorks(fd, n));
      if (works === undefined) throw refused("fails aligned O_DIRECT reads (EINVAL)");
      align = { memAlign: works, offsetAlign: works };
    } else if (!directReadWorks(fd, Math.max(align.offsetAlign, align.memAlign))) {
      throw refused("fails aligned O_DIRECT reads (EINVAL)");
    }
    const keepBuffered = align.offsetAlign > SECTOR_SIZE;
    if (!keepBuffered) closeQuietly(buffered);
    return {
      fd,
      memAlign: Math.max(1, align.memAlign),
      offsetAlign: align.offsetAlign,
      bufferedFd: keepBuffered ? buffered : -1,
    };
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
}

/**
 * True when a `length`-byte O_DIRECT read at offset 0 into a page-aligned
 * buffer succeeds (EINVAL: the alignment is not enough, or direct I/O does
 * not work at all).
 */
function directReadWorks(fd: number, length: number): boolean {
  const size = Math.max(4096, length);
  const mapping = mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  try {
    pread(fd, new Uint8Array(mapArrayBuffer(mapping, size), 0, length), 0);
    return true;
  } catch (e) {
    if (e instanceof SyscallError && e.errno === EINVAL) return false;
    throw e;
  } finally {
    munmap(mapping, size);
  }
}

/** File system magic numbers (statfs f_type) worth naming in an error. */
const FILE_SYSTEMS: Record<number, string> = {
  0x01021994: "tmpfs",
  0xef53: "ext2/3/4",
  0x58465342: "xfs",
  0x9123683e: "btrfs",
  0x794c7630: "overlayfs",
  0x65735546: "fuse",
  0x6969: "nfs",
  0x01021997: "9p",
  0x2fc12fc1: "zfs",
  0xff534d42: "cifs",
  0x62656572: "sysfs",
  0x9fa0: "proc",
  0x4d44: "vfat",
  0x5346544e: "ntfs",
  0xf2f52010: "f2fs",
  0x858458f6: "ramfs",
};

/** "tmpfs", or the statfs magic in hex when it has no name here. */
function fileSystemName(fd: number): string {
  try {
    const type = fstatfs(fd).type;
    return FILE_SYSTEMS[type] ?? `type 0x${type.toString(16)}`;
  } catch {
    return "unknown type";
  }
}

function describe(e: unknown): string {
  if (e instanceof SyscallError) return `${errnoDescription(e.errno)} (${e.code})`;
  return e instanceof Error ? e.message : String(e);
}
