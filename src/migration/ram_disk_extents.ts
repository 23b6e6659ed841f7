/**
 * Parsing and validating the extent list of a RAM_DISK section: 16-byte
 * records {offset u64, length u64} each followed by `length` bytes of data,
 * in increasing offset order, non-overlapping, inside the disk. Records and
 * data may be split anywhere by chunk boundaries, so the parser is fed
 * arbitrary pieces of the payload.
 *
 * @module
 */

import { StateFormatError } from "./errors.ts";
import { EXTENT_RECORD_LENGTH } from "./state_format.ts";

const TWO_POW_32 = 0x1_0000_0000;

/** Counts of a parsed RAM_DISK section. */
export interface ExtentTotals {
  /** Number of extents. */
  extents: number;
  /** Bytes of data carried (the rest of the disk is zero). */
  dataBytes: number;
}

/** Receives extent data: `bytes` belong at disk `offset` (a view valid during the call). */
export type ExtentDataHandler = (offset: number, bytes: Uint8Array) => void;

/**
 * Incremental parser of a RAM_DISK payload for a disk of `size` bytes. Feed
 * it with {@linkcode push} and call {@linkcode finish} at the end of the
 * section. Throws StateFormatError for an extent that is empty, out of
 * order, overlapping or beyond the disk.
 */
export class ExtentParser {
  readonly #size: number;
  readonly #onData: ExtentDataHandler | undefined;
  readonly #record = new Uint8Array(EXTENT_RECORD_LENGTH);
  readonly #recordView = new DataView(this.#record.buffer);
  #recordFill = 0;
  /** Disk offset where the next data byte of the current extent goes. */
  #dataOffset = 0;
  /** Data bytes still expected for the current extent. */
  #dataLeft = 0;
  /** End of the previous extent: the next must start at or after it. */
  #previousEnd = 0;
  #extents = 0;
  #dataBytes = 0;

  /** A parser for a disk of `size` bytes; `onData` receives the data (omit to only validate). */
  constructor(size: number, onData?: ExtentDataHandler) {
    this.#size = size;
    this.#onData = onData;
  }

  /** Parses the next piece of the section payload. */
  push(piece: Uint8Array): void {
    let at = 0;
    while (at < piece.length) {
      if (this.#dataLeft > 0) {
        const n = Math.min(this.#dataLeft, piece.length - at);
        this.#onData?.(this.#dataOffset, piece.subarray(at, at + n));
        this.#dataOffset += n;
        this.#dataLeft -= n;
        at += n;
        continue;
      }
      const n = Math.min(EXTENT_RECORD_LENGTH - this.#recordFill, piece.length - at);
      this.#record.set(piece.subarray(at, at + n), this.#recordFill);
      this.#recordFill += n;
      at += n;
      if (this.#recordFill === EXTENT_RECORD_LENGTH) this.#startExtent();
    }
  }

  /** Data bytes the current extent still expects (0 while a record is expected). */
  get dataLeft(): number {
    return this.#dataLeft;
  }

  /** Disk offset of the next data byte (meaningful while {@linkcode dataLeft} > 0). */
  get dataOffset(): number {
    return this.#dataOffset;
  }

  /** Bytes still missing of the record being read (while {@linkcode dataLeft} is 0). */
  get recordBytesLeft(): number {
    return EXTENT_RECORD_LENGTH - this.#recordFill;
  }

  /**
   * Accounts for `n` data bytes (at most {@linkcode dataLeft}) that the
   * caller placed itself, as {@linkcode push} would have passed them on.
   */
  skipData(n: number): void {
    if (!(n >= 0 && n <= this.#dataLeft)) {
      throw new RangeError(`skipData(${n}) with ${this.#dataLeft} data bytes expected`);
    }
    this.#dataOffset += n;
    this.#dataLeft -= n;
  }

  /** Checks that the section did not end inside an extent; returns the totals. */
  finish(): ExtentTotals {
    if (this.#recordFill !== 0 || this.#dataLeft !== 0) {
      throw new StateFormatError("RAM_DISK section ends inside an extent: stream is corrupt");
    }
    return { extents: this.#extents, dataBytes: this.#dataBytes };
  }

  #readU64(offset: number): number {
    const view = this.#recordView;
    // Values of 2^53 and more do not fit a number exactly; they are far
    // beyond any disk size, so Infinity is refused just the same.
    const high = view.getUint32(offset + 4, true);
    if (high >= 0x20_0000) return Number.POSITIVE_INFINITY;
    return high * TWO_POW_32 + view.getUint32(offset, true);
  }

  #startExtent(): void {
    this.#recordFill = 0;
    const offset = this.#readU64(0);
    const length = this.#readU64(8);
    if (length === 0) {
      const shown = this.#recordView.getBigUint64(0, true);
      throw new StateFormatError(`RAM_DISK extent at offset ${shown} is empty: stream is corrupt`);
    }
    if (offset < this.#previousEnd) {
      // offset is below previousEnd, a safe integer: it is exact here.
      throw new StateFormatError(
        `RAM_DISK extent at offset ${offset} overlaps or precedes the previous one ` +
          `(which ended at ${this.#previousEnd}): stream is corrupt`,
      );
    }
    if (offset + length > this.#size) {
      const view = this.#recordView;
      const shown = `${view.getBigUint64(0, true)}+${view.getBigUint64(8, true)}`;
      throw new StateFormatError(
        `RAM_DISK extent ${shown} goes beyond the disk size ${this.#size}`,
      );
    }
    this.#dataOffset = offset;
    this.#dataLeft = length;
    this.#previousEnd = offset + length;
    this.#extents++;
    this.#dataBytes += length;
  }
}
