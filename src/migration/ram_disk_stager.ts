/**
 * LOAD's staging writes in parallel with the stream: RAM disk data is read
 * from the state fd into one of a few 1 MiB slots and handed to io_uring
 * as a write to the staging memfd, while the reader goes on with the next
 * slot. The kernel runs buffered writes to a memfd in its own worker
 * thread, so the costly part of a LOAD (allocating the staging memfd's
 * pages and copying into them, about two thirds of its CPU time) runs on
 * another core than the reading, the checksum and the parsing. Each range
 * the stream is about to fill is first allocated with one fallocate: the
 * worker runs operations on one file in order, and one fallocate of many
 * pages costs less than allocating them one by one inside the writes.
 *
 * @module
 */

import { errnoName, IoUring, IovecArray, pointerValue } from "../../ffi/mod.ts";
import { probeIoUring } from "../io/open_engine.ts";
import type { ByteSource } from "./byte_stream.ts";
import { StateStreamError } from "./errors.ts";
import { type DirectDataPath, writeFully } from "./state_reader.ts";

/** Bytes of a slot: one read and one write. */
export const SLOT_LENGTH = 1 << 20;
/** Slots, so writes in flight at most. */
export const SLOT_COUNT = 8;
/** Most bytes allocated by one fallocate ahead of the writes. */
export const ALLOCATE_STEP = 8 << 20;
/** user_data of a fallocate (slot indexes are below it). */
const ALLOCATION = SLOT_COUNT;

interface Slot {
  bytes: Uint8Array;
  /** Disk offset and length of the write in flight, or undefined when the slot is free. */
  offset?: number;
  length: number;
}

/**
 * A {@linkcode DirectDataPath} writing to `stagingFd` through io_uring.
 * {@linkcode close} must be called on every way out: it waits for the
 * writes still in flight (their buffers must outlive them).
 */
export class UringStager implements DirectDataPath {
  readonly #source: ByteSource;
  readonly #fd: number;
  readonly #ring: IoUring;
  readonly #iovecs = new IovecArray(SLOT_COUNT);
  readonly #slots: Slot[] = [];
  #next = 0;
  #inFlight = 0;
  /** Staging bytes below this were allocated ahead (or are being). */
  #allocatedTo = 0;
  #failure: StateStreamError | undefined;
  #closed = false;
  #moved = 0;

  /** Reads from `source`, writes to `stagingFd` (neither is closed here). */
  constructor(source: ByteSource, stagingFd: number) {
    this.#source = source;
    this.#fd = stagingFd;
    this.#ring = new IoUring(SLOT_COUNT * 4);
    for (let i = 0; i < SLOT_COUNT; i++) {
      const bytes = new Uint8Array(SLOT_LENGTH);
      this.#iovecs.set(i, pointerValue(bytes), SLOT_LENGTH);
      this.#slots.push({ bytes, length: 0 });
    }
  }

  /**
   * A stager when io_uring works here (and VHOSTD_DISABLE_IO_URING is not
   * set), otherwise undefined: the reader then writes synchronously.
   */
  static tryCreate(source: ByteSource, stagingFd: number): UringStager | undefined {
    if (probeIoUring() !== undefined) return undefined;
    try {
      return new UringStager(source, stagingFd);
    } catch {
      return undefined;
    }
  }

  /**
   * Reads up to `length` bytes (at most a slot) and starts writing them at
   * `offset`; `length` (the data left in this part of the stream) is also
   * what may be allocated ahead.
   */
  move(offset: number, length: number): Uint8Array {
    this.#throwIfFailed();
    this.#allocateAhead(offset, length);
    const index = this.#next;
    const slot = this.#slots[index];
    while (slot.offset !== undefined) this.#wait();
    this.#throwIfFailed();
    const wanted = Math.min(length, SLOT_LENGTH);
    let got = 0;
    while (got < wanted) {
      const n = this.#source.read(slot.bytes.subarray(got, wanted));
      if (n === 0) break;
      got += n;
    }
    if (got === 0) return slot.bytes.subarray(0, 0);
    this.#iovecs.set(index, pointerValue(slot.bytes), got);
    slot.offset = offset;
    slot.length = got;
    if (
      !this.#ring.prepWritev(this.#fd, this.#iovecs.bufferAddress + index * 16, 1, offset, 0, index)
    ) {
      // Cannot happen (the ring has room for every slot); write it here then.
      slot.offset = undefined;
      writeFully(this.#fd, slot.bytes.subarray(0, got), offset);
    } else {
      this.#inFlight++;
      this.#ring.submit(0);
    }
    this.#ring.reap(this.#onCompletion);
    this.#next = (index + 1) % SLOT_COUNT;
    this.#moved += got;
    return slot.bytes.subarray(0, got);
  }

  /**
   * Queues fallocates for what of [offset, offset + length) is not yet
   * allocated: only ranges the stream is sure to fill, so a sparse disk
   * stays sparse. A failed fallocate is ignored: the write there allocates
   * (or reports why it cannot).
   */
  #allocateAhead(offset: number, length: number): void {
    const end = offset + length;
    let from = Math.max(offset, this.#allocatedTo);
    while (from < end) {
      const step = Math.min(ALLOCATE_STEP, end - from);
      if (!this.#ring.prepFallocate(this.#fd, 0, from, step, ALLOCATION)) break;
      this.#inFlight++;
      from += step;
    }
    this.#allocatedTo = Math.max(this.#allocatedTo, from);
  }

  /** Bytes taken by {@linkcode move} so far. */
  get bytesMoved(): number {
    return this.#moved;
  }

  /** Waits for every write; throws the first failure. */
  finish(): void {
    while (this.#inFlight > 0) this.#wait();
    this.#throwIfFailed();
  }

  /** Waits for the writes in flight (ignoring failures) and closes the ring. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      while (this.#inFlight > 0) this.#wait();
    } finally {
      this.#ring.close();
    }
  }

  #wait(): void {
    this.#ring.submit(1);
    this.#ring.reap(this.#onCompletion);
  }

  readonly #onCompletion = (index: number, res: number): void => {
    this.#inFlight--;
    if (index === ALLOCATION) return;
    const slot = this.#slots[index];
    const offset = slot.offset!;
    slot.offset = undefined;
    if (res < 0) {
      this.#failure ??= new StateStreamError(
        `writing the RAM disk state failed at offset ${offset}: ${errnoName(-res)}`,
      );
    } else if (res < slot.length && this.#failure === undefined) {
      // A short write (the memfd hit a limit?): the rest synchronously, which reports why.
      try {
        writeFully(this.#fd, slot.bytes.subarray(res, slot.length), offset + res);
      } catch (error) {
        this.#failure = error instanceof StateStreamError
          ? error
          : new StateStreamError(String(error));
      }
    }
  };

  #throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }
}
