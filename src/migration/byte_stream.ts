/**
 * Synchronous byte sinks and sources for the state stream. A transfer runs in
 * a Worker that blocks on its fd, so these calls block too.
 *
 * A transfer Worker must never block forever: with {@linkcode FdWaitOptions}
 * every wait for the fd (a non-blocking fd that said EAGAIN) is a poll on
 * the fd and a cancel eventfd together, bounded by a no-progress limit, and
 * the cancel fd is also looked at every few hundred calls when the fd never
 * has to be waited for.
 *
 * @module
 */

import {
  EAGAIN,
  EINVAL,
  EPIPE,
  isErrno,
  pollFd,
  pollFds,
  POLLIN,
  POLLOUT,
  readFd,
  splice,
  writeFd,
} from "../../ffi/mod.ts";
import { StateStreamError } from "./errors.ts";

/** How an fd sink or source waits for a non-blocking fd. */
export interface FdWaitOptions {
  /** An eventfd that, once readable, cancels the transfer (not read, not closed here). */
  cancelFd?: number;
  /** Longest wait for the fd to become ready, in ms (default: no limit). */
  stallMs?: number;
}

/** Thrown when the cancel fd fired. */
export class TransferCancelled extends StateStreamError {}

/** I/O calls between two looks at the cancel fd when the fd never needs waiting for. */
const CANCEL_CHECK_EVERY = 256;

/** Where a stream's bytes go. */
export interface ByteSink {
  /**
   * Takes all of `bytes` (blocking as needed) or throws. The sink may not
   * keep a reference: the caller reuses the buffer afterwards.
   */
  write(bytes: Uint8Array): void;
  /**
   * Optional: moves `length` bytes of file `fd` from `offset` to the sink
   * inside the kernel (splice), as `write` would have written them. Returns
   * false, having moved nothing, when this sink and `fd` cannot do that;
   * then the caller writes the bytes.
   */
  spliceFrom?(fd: number, offset: number, length: number): boolean;
}

/** Where a stream's bytes come from. */
export interface ByteSource {
  /**
   * Reads up to `into.length` bytes into `into`, blocking until at least one
   * is available; returns the count, 0 only at end of stream.
   */
  read(into: Uint8Array): number;
  /**
   * Optional: moves up to `length` next bytes of the stream into file `fd`
   * at `offset` inside the kernel (splice), as `read` and a write at
   * `offset` would have. Returns the count, 0 only at end of stream, or -1,
   * having moved nothing, when this source and `fd` cannot do that; then
   * the caller reads the bytes.
   */
  spliceTo?(fd: number, offset: number, length: number): number;
}

/** Waits for `fd` (and the cancel fd); shared by FdSink and FdSource. */
class FdWaiter {
  readonly #fd: number;
  readonly #cancelFd: number | undefined;
  readonly #stallMs: number | undefined;
  #calls = 0;

  constructor(fd: number, opts: FdWaitOptions) {
    this.#fd = fd;
    this.#cancelFd = opts.cancelFd;
    this.#stallMs = opts.stallMs;
  }

  /** Throws TransferCancelled once the cancel fd fired (looked at every few hundred calls). */
  checkCancel(): void {
    if (this.#cancelFd === undefined || ++this.#calls % CANCEL_CHECK_EVERY !== 0) return;
    if (pollFd(this.#cancelFd, POLLIN, 0) & POLLIN) throw cancelled();
  }

  /** Waits until the fd is ready for `events`; throws when cancelled or stalled. */
  wait(events: number): void {
    const stall = this.#stallMs;
    const deadline = stall === undefined ? undefined : performance.now() + stall;
    for (;;) {
      const left = deadline === undefined
        ? -1
        : Math.max(0, Math.ceil(deadline - performance.now()));
      if (this.#cancelFd === undefined) {
        if (pollFd(this.#fd, events, left) !== 0) return;
      } else {
        const [ready, cancel] = pollFds([
          { fd: this.#fd, events },
          { fd: this.#cancelFd, events: POLLIN },
        ], left);
        if (cancel & POLLIN) throw cancelled();
        if (ready !== 0) return;
      }
      // 0: a timeout, or a signal interrupted the poll (then wait on).
      if (deadline !== undefined && performance.now() >= deadline) {
        throw new StateStreamError(
          `no progress on state fd ${this.#fd} for ${(stall! / 1000).toFixed(0)} s`,
        );
      }
    }
  }
}

function cancelled(): TransferCancelled {
  return new TransferCancelled("transfer cancelled");
}

function ioFailure(what: string, fd: number, error: unknown): StateStreamError {
  const detail = error instanceof Error ? error.message : String(error);
  return new StateStreamError(`${what} state fd ${fd} failed: ${detail}`, { cause: error });
}

/**
 * Writes to an fd (a pipe end, a file), looping over short writes. A peer
 * that closed its end gives `StateStreamError("peer closed the stream")`.
 * Works on blocking and non-blocking fds; never closes the fd. Only a
 * non-blocking fd can be cancelled or time out (a blocking one never waits
 * in poll).
 */
export class FdSink implements ByteSink {
  /** The fd written to. */
  readonly fd: number;
  readonly #waiter: FdWaiter;

  /** Wraps `fd`; the caller keeps ownership. */
  constructor(fd: number, opts: FdWaitOptions = {}) {
    this.fd = fd;
    this.#waiter = new FdWaiter(fd, opts);
  }

  /** Writes all of `bytes`. */
  write(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) {
      this.#waiter.checkCancel();
      let n: number;
      try {
        n = writeFd(this.fd, done === 0 ? bytes : bytes.subarray(done));
      } catch (error) {
        if (isErrno(error, EAGAIN)) {
          this.#waiter.wait(POLLOUT);
          continue;
        }
        if (isErrno(error, EPIPE)) {
          throw new StateStreamError("peer closed the stream", { cause: error });
        }
        throw ioFailure("writing to", this.fd, error);
      }
      if (n === 0) throw ioFailure("writing to", this.fd, "0 bytes accepted");
      done += n;
    }
  }

  /**
   * Splices `length` bytes of `fd` from `offset` into this fd (one of them
   * must be a pipe): the bytes do not pass through this process, and from
   * a shmem or page-cache file the pipe takes references to its pages.
   * Waits and fails as {@linkcode write} does; false when splice is not
   * supported here (EINVAL before any byte moved).
   */
  spliceFrom(fd: number, offset: number, length: number): boolean {
    let done = 0;
    while (done < length) {
      this.#waiter.checkCancel();
      let n: number;
      try {
        n = splice(fd, offset + done, this.fd, undefined, length - done);
      } catch (error) {
        if (isErrno(error, EAGAIN)) {
          this.#waiter.wait(POLLOUT);
          continue;
        }
        if (done === 0 && isErrno(error, EINVAL)) return false;
        if (isErrno(error, EPIPE)) {
          throw new StateStreamError("peer closed the stream", { cause: error });
        }
        throw ioFailure("splicing to", this.fd, error);
      }
      if (n === 0) throw ioFailure("splicing to", this.fd, `fd ${fd} ended at ${offset + done}`);
      done += n;
    }
    return true;
  }
}

/** Reads from an fd (a pipe end, a file). Works on blocking and non-blocking fds. */
export class FdSource implements ByteSource {
  /** The fd read from. */
  readonly fd: number;
  readonly #waiter: FdWaiter;

  /** Wraps `fd`; the caller keeps ownership. */
  constructor(fd: number, opts: FdWaitOptions = {}) {
    this.fd = fd;
    this.#waiter = new FdWaiter(fd, opts);
  }

  /** Reads what is available (at least one byte), 0 at end of stream. */
  read(into: Uint8Array): number {
    if (into.length === 0) return 0;
    for (;;) {
      this.#waiter.checkCancel();
      try {
        return readFd(this.fd, into);
      } catch (error) {
        if (!isErrno(error, EAGAIN)) throw ioFailure("reading from", this.fd, error);
        this.#waiter.wait(POLLIN);
      }
    }
  }

  /**
   * Splices what is available (at least one byte, at most `length`) into
   * `fd` at `offset`; 0 at end of stream, -1 when splice cannot move from
   * this fd into `fd` (EINVAL: neither is a pipe, or `fd` does not take
   * splices). Waits, fails and is cancelled as {@linkcode read} is.
   */
  spliceTo(fd: number, offset: number, length: number): number {
    if (length === 0) return 0;
    for (;;) {
      this.#waiter.checkCancel();
      try {
        return splice(this.fd, undefined, fd, offset, length);
      } catch (error) {
        if (isErrno(error, EINVAL)) return -1;
        if (!isErrno(error, EAGAIN)) throw ioFailure(`splicing into fd ${fd} from`, this.fd, error);
        this.#waiter.wait(POLLIN);
      }
    }
  }
}

/** Collects everything written in memory (tests, small state). */
export class MemorySink implements ByteSink {
  #buffer = new Uint8Array(64 * 1024);
  #length = 0;

  /** Appends a copy of `bytes`. */
  write(bytes: Uint8Array): void {
    const needed = this.#length + bytes.length;
    if (needed > this.#buffer.length) {
      const grown = new Uint8Array(Math.max(needed, this.#buffer.length * 2));
      grown.set(this.#buffer.subarray(0, this.#length));
      this.#buffer = grown;
    }
    this.#buffer.set(bytes, this.#length);
    this.#length = needed;
  }

  /** Everything written so far (a view; later writes may replace the buffer). */
  bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }

  /** Number of bytes written so far. */
  get length(): number {
    return this.#length;
  }
}

/** Reads from a byte array; `maxRead` caps each read to simulate short reads. */
export class MemorySource implements ByteSource {
  readonly #bytes: Uint8Array;
  readonly #maxRead: number;
  #position = 0;

  /** Serves `bytes`, at most `maxRead` per call (default: unlimited). */
  constructor(bytes: Uint8Array, maxRead: number = Number.POSITIVE_INFINITY) {
    if (!(maxRead >= 1)) throw new RangeError(`maxRead must be at least 1, got ${maxRead}`);
    this.#bytes = bytes;
    this.#maxRead = maxRead;
  }

  /** Copies the next bytes into `into`. */
  read(into: Uint8Array): number {
    const n = Math.min(into.length, this.#maxRead, this.#bytes.length - this.#position);
    into.set(this.#bytes.subarray(this.#position, this.#position + n));
    this.#position += n;
    return n;
  }

  /** Bytes served so far. */
  get position(): number {
    return this.#position;
  }
}

/**
 * Counts the bytes passing through to `inner` (or discards them when there is
 * no inner sink) and reports the running total to `onProgress`.
 */
export class CountingSink implements ByteSink {
  readonly #inner: ByteSink | undefined;
  readonly #onProgress: ((bytes: number) => void) | undefined;
  #count = 0;

  /** Wraps `inner`; without one, bytes are only counted. */
  constructor(inner?: ByteSink, onProgress?: (bytes: number) => void) {
    this.#inner = inner;
    this.#onProgress = onProgress;
  }

  /** Passes `bytes` on and counts them. */
  write(bytes: Uint8Array): void {
    this.#inner?.write(bytes);
    this.#count += bytes.length;
    this.#onProgress?.(this.#count);
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.#count;
  }
}
