/**
 * `splice(2)`: moving bytes between a pipe and another fd inside the kernel,
 * without a copy through user memory (from a shmem or page-cache file into a
 * pipe, the pipe holds references to the file's pages).
 *
 * @module
 */

import { EINTR } from "./errno.ts";
import { lastErrno, libc, throwLastError } from "./libc.ts";

/** splice flag: do not block on the pipe (the other fd's own mode still applies). */
export const SPLICE_F_NONBLOCK = 0x02;
/** splice flag: more data follows (a hint for sockets). */
export const SPLICE_F_MORE = 0x04;

/**
 * Moves up to `length` bytes from `fdIn` to `fdOut` (`splice`); one of them
 * must be a pipe. `offsetIn`/`offsetOut` give a file position to read or
 * write at (the fd's own offset is then left alone); omit them for a pipe
 * or to use the fd's offset. Returns the byte count, 0 at end of input.
 * Throws SyscallError: EINVAL when neither fd supports splicing this way
 * (callers fall back to read and write), EAGAIN for a non-blocking fd.
 */
export function splice(
  fdIn: number,
  offsetIn: number | undefined,
  fdOut: number,
  offsetOut: number | undefined,
  length: number,
  flags = 0,
): number {
  const symbols = libc();
  const inCell = offsetIn === undefined ? null : new BigInt64Array([BigInt(offsetIn)]);
  const outCell = offsetOut === undefined ? null : new BigInt64Array([BigInt(offsetOut)]);
  const count = BigInt(length);
  for (;;) {
    const n = symbols.splice(fdIn, inCell, fdOut, outCell, count, flags);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("splice", `fd ${fdIn} to fd ${fdOut}`);
  }
}

/** ioctl request: bytes waiting to be read (on a pipe, from either end). */
const FIONREAD = 0x541b;

/**
 * Bytes in a pipe not read yet (`ioctl` FIONREAD; works on either end).
 * After splicing file pages into a pipe, the pipe still refers to those
 * pages until this is 0: a later write to the file shows in the pipe.
 */
export function pipeBytesQueued(fd: number): number {
  const count = new Int32Array(1);
  if (libc().ioctl(fd, BigInt(FIONREAD), count) < 0) throwLastError("ioctl", `FIONREAD fd ${fd}`);
  return count[0];
}
