/**
 * Synchronous byte sinks and sources for the state stream. A transfer runs in
 * a Worker that blocks on its fd, so these calls block too.
 *
 * @module
 */

import { EAGAIN, EPIPE, isErrno, pollFd, POLLIN, POLLOUT, readFd, writeFd } from "../../ffi/mod.ts";
import { StateStreamError } from "./errors.ts";

/** Where a stream's bytes go. */
export interface ByteSink {
  /**
   * Takes all of `bytes` (blocking as needed) or throws. The sink may not
   * keep a reference: the caller reuses the buffer afterwards.
   */
  write(bytes: Uint8Array): void;
}

/** Where a stream's bytes come from. */
export interface ByteSource {
  /**
   * Reads up to `into.length` bytes into `into`, blocking until at least one
   * is available; returns the count, 0 only at end of stream.
   */
  read(into: Uint8Array): number;
}

/** Waits until `fd` is ready; used when a peer handed over a non-blocking fd. */
function waitReady(fd: number, events: number): void {
  // A 0 result is a signal interruption: retrying the I/O call is harmless.
  pollFd(fd, events, -1);
}

function ioFailure(what: string, fd: number, error: unknown): StateStreamError {
  const detail = error instanceof Error ? error.message : String(error);
  return new StateStreamError(`${what} state fd ${fd} failed: ${detail}`, { cause: error });
}

/**
 * Writes to an fd (a pipe end, a file), looping over short writes. A peer
 * that closed its end gives `StateStreamError("peer closed the stream")`.
 * Works on blocking and non-blocking fds; never closes the fd.
 */
export class FdSink implements ByteSink {
  /** The fd written to. */
  readonly fd: number;

  /** Wraps `fd`; the caller keeps ownership. */
  constructor(fd: number) {
    this.fd = fd;
  }

  /** Writes all of `bytes`. */
  write(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) {
      let n: number;
      try {
        n = writeFd(this.fd, done === 0 ? bytes : bytes.subarray(done));
      } catch (error) {
        if (isErrno(error, EAGAIN)) {
          waitReady(this.fd, POLLOUT);
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
}

/** Reads from an fd (a pipe end, a file). Works on blocking and non-blocking fds. */
export class FdSource implements ByteSource {
  /** The fd read from. */
  readonly fd: number;

  /** Wraps `fd`; the caller keeps ownership. */
  constructor(fd: number) {
    this.fd = fd;
  }

  /** Reads what is available (at least one byte), 0 at end of stream. */
  read(into: Uint8Array): number {
    if (into.length === 0) return 0;
    for (;;) {
      try {
        return readFd(this.fd, into);
      } catch (error) {
        if (!isErrno(error, EAGAIN)) throw ioFailure("reading from", this.fd, error);
        waitReady(this.fd, POLLIN);
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
