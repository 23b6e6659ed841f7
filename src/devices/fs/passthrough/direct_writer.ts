/**
 * A second descriptor, opened with O_DIRECT, for the WRITEs of a file on a
 * FUSE host file system that go to io_uring.
 *
 * Why: io_uring runs a write it cannot issue without blocking in its worker
 * threads, where writes to one regular file are hashed by inode. A buffered
 * write to a FUSE file is such a write: the kernel sends it to the FUSE
 * server and a worker waits for the answer (writes still overlap in the
 * server, but each costs a blocked worker). With O_DIRECT the kernel sends
 * it asynchronously instead, as virtiofsd's thread pool gets its writes
 * overlapped (fio, 4 KiB random writes, 32 in flight, on the
 * benchmark's latency_fs: io_uring 8k IOPS buffered, 36k with O_DIRECT; 32
 * threads of pwrite 36k). Other file systems complete buffered writes in the
 * page cache, inline, and keep their one descriptor.
 *
 * Reads keep the buffered descriptor: io_uring does not order them, and a
 * caching FUSE server's page cache still serves them. A direct write
 * invalidates the cached pages it covers, so the two descriptors stay
 * coherent. FUSE itself sets no alignment for direct I/O; a server that
 * passes O_DIRECT on to a backing which does answers EINVAL, and the caller
 * then writes through the buffered descriptor and stops using this one
 * (it stays open until the handle closes).
 *
 * @module
 */

import {
  closeQuietly,
  fstatfs,
  O_ACCMODE,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECT,
  O_EXCL,
  O_RDONLY,
  O_TRUNC,
  O_WRONLY,
  reopenFd,
} from "../../../../ffi/mod.ts";

/** `statfs.f_type` of a FUSE file system (linux/magic.h). */
export const FUSE_SUPER_MAGIC = 0x65735546;

/** A handle whose direct writer was not looked for yet. */
export const DIRECT_WRITER_UNKNOWN = -2;
/** A handle that has no direct writer (not on FUSE, read-only, O_DIRECT already, or refused). */
export const DIRECT_WRITER_NONE = -1;

/**
 * Opens the O_DIRECT write descriptor for `fd`, a file opened with host
 * `flags`, when it lives on a FUSE file system; DIRECT_WRITER_NONE when it
 * does not, when it is opened read-only or with O_DIRECT already, or when
 * the reopen fails (then writes simply keep the buffered descriptor).
 * Reopens through /proc/self/fd, so the guest's name is never resolved
 * again; O_TRUNC, O_CREAT and O_EXCL are not repeated, O_APPEND and the sync
 * flags are.
 */
export function openDirectWriter(fd: number, flags: number): number {
  if ((flags & O_ACCMODE) === O_RDONLY || (flags & O_DIRECT) !== 0) return DIRECT_WRITER_NONE;
  try {
    if (fstatfs(fd).type !== FUSE_SUPER_MAGIC) return DIRECT_WRITER_NONE;
    const kept = flags & ~(O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC);
    return reopenFd(fd, kept | O_WRONLY | O_DIRECT | O_CLOEXEC);
  } catch {
    return DIRECT_WRITER_NONE;
  }
}

/** Closes a direct writer (nothing for the two markers). */
export function closeDirectWriter(directFd: number): void {
  if (directFd >= 0) closeQuietly(directFd);
}
