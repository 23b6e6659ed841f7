/**
 * File descriptor I/O: open/close, read/write (positional and vectored),
 * sync, stat, fallocate, fcntl flags and pipes.
 *
 * Calls that move data retry on EINTR; a non-blocking fd with nothing to do
 * throws a {@linkcode SyscallError} with code EAGAIN.
 *
 * @module
 */

import {
  AT_FDCWD,
  BLKGETSIZE64,
  F_DUPFD_CLOEXEC,
  F_GETFL,
  F_SETFL,
  F_SETPIPE_SZ,
  O_CLOEXEC,
  O_NONBLOCK,
} from "./constants.ts";
import { EINTR, EINVAL, EIO, ENAMETOOLONG, SyscallError } from "./errno.ts";
import type { IovecArray } from "./iovec.ts";
import { lastErrno, libc, throwLastError } from "./libc.ts";
import { allocateBytes, cString, readU64 } from "./struct.ts";

/** Opens `path` (`open`) and returns the fd. Add O_CLOEXEC yourself if wanted. */
export function openFile(path: string, flags: number, mode: number = 0o644): number {
  const fd = libc().open(cString("open", path), flags, mode);
  if (fd < 0) throwLastError("open", path);
  return fd;
}

/**
 * Closes `fd`; throws on error (EBADF, EIO). EINTR counts as success: Linux
 * has released the fd by then, and retrying could close someone else's.
 */
export function closeFd(fd: number): void {
  if (libc().close(fd) < 0) {
    const errno = lastErrno();
    if (errno !== EINTR) throw new SyscallError("close", errno, `fd ${fd}`);
  }
}

/** Closes `fd` ignoring every error; does nothing for a negative fd. */
export function closeQuietly(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/** Reads into `buf` (`read`); returns the byte count, 0 at end of file. */
export function readFd(fd: number, buf: Uint8Array): number {
  const symbols = libc();
  const length = BigInt(buf.length);
  for (;;) {
    const n = symbols.read(fd, buf, length);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("read", `fd ${fd}`);
  }
}

/** Writes from `buf` (`write`); returns the byte count, which may be short. */
export function writeFd(fd: number, buf: Uint8Array): number {
  const symbols = libc();
  const length = BigInt(buf.length);
  for (;;) {
    const n = symbols.write(fd, buf, length);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("write", `fd ${fd}`);
  }
}

/**
 * Writes all of `buf`, looping over short writes. On a non-blocking fd it
 * throws EAGAIN when the fd fills up, after an unknown part was written:
 * use it on blocking fds.
 */
export function writeAll(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.length) {
    const n = writeFd(fd, done === 0 ? buf : buf.subarray(done));
    if (n === 0) throw new SyscallError("write", EIO, `fd ${fd} accepted 0 bytes`);
    done += n;
  }
}

/** Reads into `buf` at file `offset` (`pread`); returns the byte count, 0 at end of file. */
export function pread(fd: number, buf: Uint8Array, offset: number): number {
  const symbols = libc();
  const length = BigInt(buf.length);
  const position = BigInt(offset);
  for (;;) {
    const n = symbols.pread(fd, buf, length, position);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("pread", `fd ${fd}, offset ${offset}`);
  }
}

/** Writes `buf` at file `offset` (`pwrite`); returns the byte count, which may be short. */
export function pwrite(fd: number, buf: Uint8Array, offset: number): number {
  const symbols = libc();
  const length = BigInt(buf.length);
  const position = BigInt(offset);
  for (;;) {
    const n = symbols.pwrite(fd, buf, length, position);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("pwrite", `fd ${fd}, offset ${offset}`);
  }
}

function checkIovecCount(syscall: string, iov: IovecArray, count: number): void {
  if (!(Number.isInteger(count) && count >= 0 && count <= iov.capacity)) {
    throw new SyscallError(syscall, EINVAL, `iovec count ${count}, capacity ${iov.capacity}`);
  }
}

/**
 * Reads into the first `count` entries of `iov` at file `offset` (`preadv`);
 * returns the byte count, 0 at end of file.
 */
export function preadv(fd: number, iov: IovecArray, count: number, offset: number): number {
  checkIovecCount("preadv", iov, count);
  const symbols = libc();
  const position = BigInt(offset);
  for (;;) {
    const n = symbols.preadv(fd, iov.buffer, count, position);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("preadv", `fd ${fd}, offset ${offset}`);
  }
}

/**
 * Writes the first `count` entries of `iov` at file `offset` (`pwritev`);
 * returns the byte count, which may be short.
 */
export function pwritev(fd: number, iov: IovecArray, count: number, offset: number): number {
  checkIovecCount("pwritev", iov, count);
  const symbols = libc();
  const position = BigInt(offset);
  for (;;) {
    const n = symbols.pwritev(fd, iov.buffer, count, position);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("pwritev", `fd ${fd}, offset ${offset}`);
  }
}

/** Flushes the file's data (not all metadata) to storage (`fdatasync`). */
export function fdatasync(fd: number): void {
  if (libc().fdatasync(fd) < 0) throwLastError("fdatasync", `fd ${fd}`);
}

/** Flushes the file's data and metadata to storage (`fsync`). */
export function fsync(fd: number): void {
  if (libc().fsync(fd) < 0) throwLastError("fsync", `fd ${fd}`);
}

/** Fields of `struct stat`. Times are nanoseconds since the epoch. */
export interface FileStat {
  /** Size in bytes (0 for block devices: use {@linkcode ioctlBlkGetSize64}). */
  size: number;
  /** File type (S_IF*) and permission bits. */
  mode: number;
  /** Device holding the file. */
  dev: number;
  /** Inode number. */
  ino: number;
  /** Preferred I/O block size. */
  blksize: number;
  /** Number of hard links. */
  nlink: number;
  /** Owner user id. */
  uid: number;
  /** Owner group id. */
  gid: number;
  /** Device number, for device files. */
  rdev: number;
  /** Last access time. */
  atimeNs: bigint;
  /** Last modification time. */
  mtimeNs: bigint;
  /** Last status change time. */
  ctimeNs: bigint;
  /** Allocated 512-byte blocks. */
  blocks: number;
}

/** Size of x86-64 `struct stat`. */
const STAT_SIZE = 144;

function readTimeNs(view: DataView, offset: number): bigint {
  return view.getBigInt64(offset, true) * 1_000_000_000n + view.getBigInt64(offset + 8, true);
}

/** Status of an open file (`fstat`). */
export function fstat(fd: number): FileStat {
  const bytes = allocateBytes(STAT_SIZE);
  if (libc().fstat(fd, bytes) < 0) throwLastError("fstat", `fd ${fd}`);
  const view = new DataView(bytes.buffer);
  // Offsets of the x86-64 kernel/glibc struct stat.
  return {
    dev: readU64(view, 0),
    ino: readU64(view, 8),
    nlink: readU64(view, 16),
    mode: view.getUint32(24, true),
    uid: view.getUint32(28, true),
    gid: view.getUint32(32, true),
    rdev: readU64(view, 40),
    size: Number(view.getBigInt64(48, true)),
    blksize: Number(view.getBigInt64(56, true)),
    blocks: Number(view.getBigInt64(64, true)),
    atimeNs: readTimeNs(view, 72),
    mtimeNs: readTimeNs(view, 88),
    ctimeNs: readTimeNs(view, 104),
  };
}

/** Manipulates allocated space (`fallocate`), e.g. FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE. */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  const symbols = libc();
  for (;;) {
    if (symbols.fallocate(fd, mode, BigInt(offset), BigInt(length)) >= 0) return;
    if (lastErrno() !== EINTR) {
      throwLastError("fallocate", `fd ${fd}, mode ${mode}, offset ${offset}, length ${length}`);
    }
  }
}

/** Turns O_NONBLOCK on or off (`fcntl` F_GETFL/F_SETFL). */
export function setNonBlocking(fd: number, on: boolean): void {
  const symbols = libc();
  const flags = symbols.fcntl(fd, F_GETFL, 0);
  if (flags < 0) throwLastError("fcntl", `F_GETFL fd ${fd}`);
  const wanted = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (wanted !== flags && symbols.fcntl(fd, F_SETFL, wanted) < 0) {
    throwLastError("fcntl", `F_SETFL fd ${fd}`);
  }
}

/** File status flags of `fd` (`fcntl` F_GETFL): access mode and O_* bits. */
export function getStatusFlags(fd: number): number {
  const flags = libc().fcntl(fd, F_GETFL, 0);
  if (flags < 0) throwLastError("fcntl", `F_GETFL fd ${fd}`);
  return flags;
}

/** Duplicates `fd` to the lowest free fd, with close-on-exec set (`fcntl` F_DUPFD_CLOEXEC). */
export function dupFd(fd: number): number {
  const copy = libc().fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throwLastError("fcntl", `F_DUPFD_CLOEXEC fd ${fd}`);
  return copy;
}

/** Creates a pipe (`pipe2`); returns `[readEnd, writeEnd]`. */
export function pipe2(flags: number = O_CLOEXEC): [number, number] {
  const fds = new Int32Array(new ArrayBuffer(8));
  if (libc().pipe2(fds, flags) < 0) throwLastError("pipe2");
  return [fds[0], fds[1]];
}

/** Size in bytes of a block device (`ioctl` BLKGETSIZE64); ENOTTY for other files. */
export function ioctlBlkGetSize64(fd: number): number {
  const bytes = allocateBytes(8);
  if (libc().ioctl(fd, BigInt(BLKGETSIZE64), bytes) < 0) throwLastError("ioctl", "BLKGETSIZE64");
  return readU64(new DataView(bytes.buffer), 0);
}

/**
 * Repositions (or, with SEEK_DATA/SEEK_HOLE, searches) the file offset;
 * returns the resulting offset. SEEK_DATA past the last data gives ENXIO.
 */
export function lseek(fd: number, offset: number, whence: number): number {
  const result = libc().lseek(fd, BigInt(offset), whence);
  if (result < 0n) throwLastError("lseek", `fd ${fd}`);
  return Number(result);
}

/** Sets a pipe's capacity (`fcntl` F_SETPIPE_SZ); returns the capacity the kernel chose. */
export function setPipeSize(fd: number, bytes: number): number {
  const size = libc().fcntl(fd, F_SETPIPE_SZ, bytes);
  if (size < 0) throwLastError("fcntl", `F_SETPIPE_SZ fd ${fd}`);
  return size;
}

/** What /proc/self/fd names an eventfd. */
export const EVENTFD_TARGET = "anon_inode:[eventfd]";

/** Longest /proc/self/fd link read (a path can be up to PATH_MAX). */
const FD_TARGET_MAX = 4096;

const fdTargetDecoder = new TextDecoder();

/**
 * What `fd` refers to, as Linux names it in `/proc/self/fd/N`: a path for a
 * file or directory (`/dev/null`, `/tmp/x`), `pipe:[INODE]`,
 * `socket:[INODE]`, or `anon_inode:[eventfd]`, `anon_inode:[eventpoll]`...
 * (`readlink`). Throws SyscallError: ENOENT when `fd` is not open (or /proc
 * is not mounted).
 */
export function fdTarget(fd: number): string {
  const path = cString("readlinkat", `/proc/self/fd/${fd}`);
  const buf = allocateBytes(FD_TARGET_MAX);
  const n = Number(libc().readlinkat(AT_FDCWD, path, buf, BigInt(FD_TARGET_MAX)));
  if (n < 0) throwLastError("readlinkat", `/proc/self/fd/${fd}`);
  if (n >= FD_TARGET_MAX) throw new SyscallError("readlinkat", ENAMETOOLONG, `fd ${fd}`);
  return fdTargetDecoder.decode(buf.subarray(0, n));
}

/** True when `fd` is an open eventfd; false for anything else, including a closed fd. */
export function isEventfd(fd: number): boolean {
  try {
    return fdTarget(fd) === EVENTFD_TARGET;
  } catch {
    return false;
  }
}
