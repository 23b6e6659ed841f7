/**
 * Guest bytes waiting for a host socket that did not take them at once, in
 * order. The vsock credit the guest was given bounds how much can wait.
 *
 * @module
 */

import { WOULD_BLOCK, writeSome } from "./host_socket_io.ts";

/** What a flush did. */
export interface FlushResult {
  /** Bytes the socket took. */
  written: number;
  /** Negative errno of a failed write (not WOULD_BLOCK), else 0. */
  error: number;
}

/** A FIFO of byte chunks drained into a non-blocking fd. */
export class PendingOutput {
  readonly #chunks: Uint8Array[] = [];
  /** Bytes of the first chunk already written. */
  #headOffset = 0;
  #size = 0;

  /** Bytes waiting. */
  get size(): number {
    return this.#size;
  }

  /** Appends `chunk`, which the queue owns from now on. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#size += chunk.length;
  }

  /** Forgets everything waiting. */
  clear(): void {
    this.#chunks.length = 0;
    this.#headOffset = 0;
    this.#size = 0;
  }

  /** Writes as much as `fd` takes now, oldest first. */
  flush(fd: number): FlushResult {
    let written = 0;
    while (this.#chunks.length > 0) {
      const head = this.#chunks[0];
      const n = writeSome(fd, this.#headOffset === 0 ? head : head.subarray(this.#headOffset));
      if (n < 0) return { written, error: n === WOULD_BLOCK ? 0 : n };
      written += n;
      this.#size -= n;
      this.#headOffset += n;
      if (this.#headOffset < head.length) break; // short write: the socket is full
      this.#chunks.shift();
      this.#headOffset = 0;
    }
    return { written, error: 0 };
  }
}
