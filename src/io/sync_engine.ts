/**
 * The synchronous file I/O engine: the fallback where io_uring is missing or
 * disabled. Each operation runs inside the submitting call (preadv,
 * pwritev2, fsync, fallocate) and its completion runs before that call
 * returns, so a queue Worker using it waits for every I/O in turn.
 *
 * @module
 */

import { RWF_DSYNC } from "../../ffi/constants.ts";
import { EINTR, EINVAL, ENOSYS, EOPNOTSUPP } from "../../ffi/errno.ts";
import type { IovecArray } from "../../ffi/iovec.ts";
import { lastErrno, libc } from "../../ffi/libc.ts";
import type { FileIoEngine, IoCompletion } from "./file_io_engine.ts";

const IOVEC_SIZE = 16;

/**
 * Drops the first `moved` bytes from the first `count` entries of `iov`, in
 * place: entries wholly transferred (and empty ones in front) are removed by
 * shifting the rest down to index 0, and the entry the transfer stopped in
 * starts after its transferred part. Returns the number of entries left.
 * Both engines resume a short read or write with it, so the remainder always
 * starts at entry 0 and can be passed by the array's base address.
 *
 * @example
 * ```ts
 * import { IovecArray } from "../../ffi/mod.ts";
 * import { advanceIovecs } from "./sync_engine.ts";
 * const iov = new IovecArray(2);
 * iov.set(0, 0x1000, 100);
 * iov.set(1, 0x2000, 100);
 * advanceIovecs(iov, 2, 150); // 1: entry 0 is now {0x2032, 50}
 * ```
 */
export function advanceIovecs(iov: IovecArray, count: number, moved: number): number {
  let index = 0;
  let left = moved;
  while (index < count) {
    const length = iov.length(index);
    if (left < length) break;
    left -= length;
    index++;
  }
  if (index < count && left > 0) {
    iov.set(index, iov.address(index) + left, iov.length(index) - left);
  }
  if (index > 0 && index < count) {
    iov.buffer.copyWithin(0, index * IOVEC_SIZE, count * IOVEC_SIZE);
  }
  return count - index;
}

/**
 * True when a readv/writev request is one the kernel may safely be given: an
 * iovec count within the array (a larger one would make the kernel read past
 * it) and a file offset that is a non-negative safe integer.
 */
export function validTransfer(iov: IovecArray, count: number, offset: number): boolean {
  return Number.isInteger(count) && count >= 0 && count <= iov.capacity &&
    Number.isSafeInteger(offset) && offset >= 0;
}

/**
 * {@linkcode FileIoEngine} that performs every operation inside the call.
 * `completionFd` is `undefined` and `inflight` is 0 whenever no call is
 * running; `submit()` and `reap()` have nothing to do.
 *
 * Short transfers are resumed until every byte moved, end of file (a 0
 * result) or an error; EINTR is retried. Other errors end the operation with
 * the bytes moved so far, or `-errno` when none moved. EAGAIN (only possible
 * on a non-blocking fd) is reported rather than retried, since retrying in a
 * loop would spin.
 *
 * With `dsync`, writes use pwritev2(RWF_DSYNC); if the kernel or filesystem
 * refuses that flag, this engine switches for good to pwritev followed by
 * fdatasync, which gives the same durability.
 */
export class SyncFileIoEngine implements FileIoEngine {
  /** Always `"sync"`. */
  readonly kind = "sync" as const;
  /** Always `undefined`: completions run before the submitting call returns. */
  readonly completionFd: undefined = undefined;
  #rwfDsyncWorks = true;
  #closed = false;

  /** Always 0: no operation outlives its call. */
  get inflight(): number {
    return 0;
  }

  /** Runs preadv until done; calls `done` before returning. */
  readv(fd: number, iov: IovecArray, count: number, offset: number, done: IoCompletion): void {
    this.#checkOpen();
    done(validTransfer(iov, count, offset) ? this.#read(fd, iov, count, offset) : -EINVAL);
  }

  /** Runs pwritev/pwritev2 until done; calls `done` before returning. */
  writev(
    fd: number,
    iov: IovecArray,
    count: number,
    offset: number,
    dsync: boolean,
    done: IoCompletion,
  ): void {
    this.#checkOpen();
    done(validTransfer(iov, count, offset) ? this.#write(fd, iov, count, offset, dsync) : -EINVAL);
  }

  /** Runs fsync or fdatasync; calls `done` before returning. */
  fsync(fd: number, dataOnly: boolean, done: IoCompletion): void {
    this.#checkOpen();
    done(this.#sync(fd, dataOnly));
  }

  /** Runs fallocate; calls `done` before returning. */
  fallocate(fd: number, mode: number, offset: number, length: number, done: IoCompletion): void {
    this.#checkOpen();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) {
      done(-EINVAL);
      return;
    }
    const symbols = libc();
    const position = BigInt(offset);
    const size = BigInt(length);
    for (;;) {
      if (symbols.fallocate(fd, mode, position, size) >= 0) {
        done(0);
        return;
      }
      const errno = lastErrno();
      if (errno !== EINTR) {
        done(-errno);
        return;
      }
    }
  }

  /** Nothing to submit: every operation already ran. */
  submit(): void {}

  /** Nothing to reap: every completion already ran. Returns 0. */
  reap(): number {
    return 0;
  }

  /** Marks the engine closed; it holds no resources. */
  close(): void {
    this.#closed = true;
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("SyncFileIoEngine used after close()");
  }

  #read(fd: number, iov: IovecArray, count: number, offset: number): number {
    const symbols = libc();
    let moved = 0;
    let left = count;
    // At least one call even for an empty transfer, so a bad fd is reported
    // as it is by io_uring.
    do {
      const n = Number(symbols.preadv(fd, iov.buffer, left, BigInt(offset + moved)));
      if (n < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        return moved > 0 ? moved : -errno;
      }
      if (n === 0) return moved;
      moved += n;
      left = advanceIovecs(iov, left, n);
    } while (left > 0);
    return moved;
  }

  #write(fd: number, iov: IovecArray, count: number, offset: number, dsync: boolean): number {
    const symbols = libc();
    const viaFlag = dsync && this.#rwfDsyncWorks;
    let moved = 0;
    let left = count;
    do {
      const position = BigInt(offset + moved);
      const n = viaFlag
        ? Number(symbols.pwritev2(fd, iov.buffer, left, position, RWF_DSYNC))
        : Number(symbols.pwritev(fd, iov.buffer, left, position));
      if (n < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (viaFlag && moved === 0 && (errno === EOPNOTSUPP || errno === ENOSYS)) {
          this.#rwfDsyncWorks = false;
          return this.#write(fd, iov, count, offset, dsync);
        }
        return moved > 0 ? this.#flushAfter(fd, dsync && !viaFlag, moved) : -errno;
      }
      if (n === 0) break;
      moved += n;
      left = advanceIovecs(iov, left, n);
    } while (left > 0);
    return this.#flushAfter(fd, dsync && !viaFlag, moved);
  }

  /** fdatasync after plain pwritev when durability was asked for. */
  #flushAfter(fd: number, flush: boolean, moved: number): number {
    if (!flush) return moved;
    const result = this.#sync(fd, true);
    return result < 0 ? result : moved;
  }

  #sync(fd: number, dataOnly: boolean): number {
    const symbols = libc();
    for (;;) {
      const rc = dataOnly ? symbols.fdatasync(fd) : symbols.fsync(fd);
      if (rc >= 0) return 0;
      const errno = lastErrno();
      if (errno !== EINTR) return -errno;
    }
  }
}
