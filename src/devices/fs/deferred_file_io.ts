/**
 * virtio-fs file I/O that completes later: READ and WRITE between a host fd
 * and guest buffers, and FSYNC, submitted to a file I/O engine (io_uring)
 * whose completions arrive in the queue Worker's event loop. A slow read or
 * fsync then holds back nothing but itself: the Worker takes the next
 * requests of every queue while it is in the kernel.
 *
 * Zero copy, as the synchronous path (guest_file_io.ts): the chain's
 * segments become iovecs pointing into guest memory. Pages a read fills are
 * marked in the dirty log when the data has landed, not at submission.
 *
 * @module
 */

import { IovecArray } from "../../../ffi/mod.ts";
import type { FileIoEngine } from "../../io/file_io_engine.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { Segment } from "../../virtqueue/descriptor_chain.ts";
import { GuestBufferError, pointIovecsAt } from "../guest_file_io.ts";

/** Receives an operation's result: bytes moved (0 for fsync), or a negative errno. */
export type FsIoDone = (result: number) => void;

/** One readv/writev in flight, reused once it completed. */
class Transfer {
  readonly iov: IovecArray;
  /** Guest address and length of each iovec entry as built (the engine may advance them). */
  readonly gpas: number[];
  readonly lengths: number[];
  count = 0;
  memory: GuestMemory | undefined;
  toFile = false;
  done: FsIoDone | undefined;
  readonly onDone: (result: number) => void;

  constructor(capacity: number, finished: (transfer: Transfer, result: number) => void) {
    this.iov = new IovecArray(capacity);
    this.gpas = new Array(capacity).fill(0);
    this.lengths = new Array(capacity).fill(0);
    this.onDone = (result) => finished(this, result);
  }
}

/** Submits fs data operations to an engine and reports them when they complete. */
export class DeferredFileIo {
  readonly #engine: FileIoEngine;
  readonly #capacity: number;
  readonly #free: Transfer[] = [];
  readonly #finished = (transfer: Transfer, result: number) => this.#transferred(transfer, result);
  #queued = 0;
  #inflight = 0;

  /** Uses `engine` for transfers of at most `maxSegments` guest buffers each. */
  constructor(engine: FileIoEngine, maxSegments: number) {
    this.#engine = engine;
    this.#capacity = Math.max(1, maxSegments);
  }

  /** Operations handed to the engine whose completion has not run yet. */
  get inflight(): number {
    return this.#inflight;
  }

  /**
   * Queues a transfer of `length` bytes between `fd` at `fileOffset` and the
   * guest buffers of `segments` after their first `skip` bytes; `done` gets
   * the bytes moved (short only at end of file or after an error), or
   * `-errno` when none moved. Returns false, queuing nothing, when the
   * buffers need more than `maxSegments` iovecs (the caller moves them
   * synchronously). Throws GuestBufferError, queuing nothing, when the
   * buffers are too short or outside guest memory.
   */
  transfer(
    fd: number,
    segments: readonly Segment[],
    memory: GuestMemory,
    skip: number,
    length: number,
    fileOffset: number,
    toFile: boolean,
    done: FsIoDone,
  ): boolean {
    const transfer = this.#free.pop() ?? new Transfer(this.#capacity, this.#finished);
    let count: number;
    try {
      count = pointIovecsAt(
        transfer.iov,
        transfer.gpas,
        segments,
        memory,
        skip,
        length,
        transfer.lengths,
      );
    } catch (e) {
      this.#free.push(transfer);
      throw e;
    }
    let covered = 0;
    for (let i = 0; i < count; i++) covered += transfer.lengths[i];
    if (covered < length) {
      this.#free.push(transfer);
      // A full array with bytes left: more pieces than one operation takes.
      if (count === this.#capacity) return false;
      throw new GuestBufferError("guest buffers shorter than the request");
    }
    transfer.count = count;
    transfer.memory = memory;
    transfer.toFile = toFile;
    transfer.done = done;
    this.#started();
    if (toFile) this.#engine.writev(fd, transfer.iov, count, fileOffset, false, transfer.onDone);
    else this.#engine.readv(fd, transfer.iov, count, fileOffset, transfer.onDone);
    return true;
  }

  /** Queues fsync(2) (fdatasync(2) with `dataOnly`) of `fd`; `done` gets 0 or `-errno`. */
  fsync(fd: number, dataOnly: boolean, done: FsIoDone): void {
    this.#started();
    this.#engine.fsync(fd, dataOnly, (result) => {
      this.#inflight--;
      done(result);
    });
  }

  /** Hands what was queued since the last call to the kernel. */
  submit(): void {
    if (this.#queued === 0) return;
    this.#queued = 0;
    this.#engine.submit();
  }

  #started(): void {
    this.#queued++;
    this.#inflight++;
  }

  #transferred(transfer: Transfer, result: number): void {
    this.#inflight--;
    const { memory, done } = transfer;
    if (!transfer.toFile && result > 0) {
      let left = result;
      for (let i = 0; i < transfer.count && left > 0; i++) {
        const len = Math.min(transfer.lengths[i], left);
        memory!.markWritten(transfer.gpas[i], len);
        left -= len;
      }
    }
    transfer.memory = undefined;
    transfer.done = undefined;
    this.#free.push(transfer);
    done!(result);
  }
}
