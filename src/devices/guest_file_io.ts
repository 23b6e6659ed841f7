/**
 * Zero-copy I/O between a file and guest buffers: the descriptor chain's
 * segments become iovecs pointing straight into guest memory, and one
 * preadv/pwritev moves the data (resumed after a short transfer). Shared by
 * the devices' data halves (virtio-blk sectors, virtio-fs READ/WRITE).
 *
 * @module
 */

import { IovecArray, preadv, pwritev, SyscallError } from "../../ffi/mod.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";
import type { Segment } from "../virtqueue/descriptor_chain.ts";

/** The guest's buffers cannot hold the transfer (too short, or outside guest memory). */
export class GuestBufferError extends Error {}

/**
 * Points the entries of `iov` at the guest pieces of bytes `[start, start +
 * length)` of the byte stream `segments` form (readable ones first), one
 * entry per piece, until the array is full; records each piece's guest
 * address in `gpas` (to mark what a read filled) and, when given, its
 * length in `lengths`. Returns the entries set: fewer bytes than `length`
 * are covered when the segments end first or the array is full. The walk of
 * forEachPiece, without a callback: it runs once per READ and WRITE.
 *
 * @throws {GuestBufferError} when a piece lies outside guest memory
 */
export function pointIovecsAt(
  iov: IovecArray,
  gpas: number[],
  segments: readonly Segment[],
  memory: GuestMemory,
  start: number,
  length: number,
  lengths?: number[],
): number {
  let toSkip = start;
  let at = 0;
  let count = 0;
  for (let i = 0; i < segments.length && at < length && count < iov.capacity; i++) {
    const seg = segments[i];
    if (toSkip >= seg.len) {
      toSkip -= seg.len;
      continue;
    }
    const gpa = seg.addr + toSkip;
    const len = Math.min(seg.len - toSkip, length - at);
    const host = memory.hostAddress(gpa, len);
    if (host === undefined) throw new GuestBufferError("buffer outside guest memory");
    gpas[count] = gpa;
    if (lengths !== undefined) lengths[count] = len;
    iov.set(count++, host, len);
    at += len;
    toSkip = 0;
  }
  return count;
}

/** Moves bytes between files and guest buffers, reusing one iovec array. */
export class GuestFileIo {
  readonly #iov: IovecArray;
  /** Guest-physical address of each iovec entry (to mark what a read filled). */
  readonly #gpas: number[];

  /** An I/O helper for chains of at most `maxSegments` segments per system call. */
  constructor(maxSegments: number) {
    this.#iov = new IovecArray(Math.max(1, maxSegments));
    this.#gpas = new Array(this.#iov.capacity).fill(0);
  }

  /**
   * Moves up to `length` bytes between `fd` at `fileOffset` and the guest
   * buffers of `segments`, skipping their first `skip` bytes (a request
   * header). A read marks the guest bytes it filled (dirty logging) once
   * they have landed, and only those. Stops early
   * at end of file; a failure after some bytes moved returns those (as
   * read(2) and write(2) do), a failure before any throws the SyscallError.
   * Returns the bytes moved.
   */
  transfer(
    fd: number,
    segments: readonly Segment[],
    memory: GuestMemory,
    skip: number,
    length: number,
    fileOffset: number,
    toFile: boolean,
  ): number {
    const iov = this.#iov;
    let done = 0;
    while (done < length) {
      const count = pointIovecsAt(iov, this.#gpas, segments, memory, skip + done, length - done);
      if (count === 0) throw new GuestBufferError("guest buffers shorter than the request");
      let n: number;
      try {
        n = toFile
          ? pwritev(fd, iov, count, fileOffset + done)
          : preadv(fd, iov, count, fileOffset + done);
      } catch (e) {
        if (e instanceof SyscallError && done > 0) break;
        throw e;
      }
      if (n <= 0) break;
      if (!toFile) this.#markFilled(memory, count, n);
      done += n;
    }
    return done;
  }

  /** Marks the first `bytes` bytes of the first `count` iovec entries as written by the host. */
  #markFilled(memory: GuestMemory, count: number, bytes: number): void {
    const iov = this.#iov;
    for (let i = 0; i < count && bytes > 0; i++) {
      const len = Math.min(iov.length(i), bytes);
      memory.markWritten(this.#gpas[i], len);
      bytes -= len;
    }
  }
}
