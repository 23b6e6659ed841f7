/**
 * Reading a state stream: header, sections chunk by chunk, END with the
 * checksum, section count and end-of-stream checks.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import { pwrite } from "../../ffi/mod.ts";
import type { ByteSource } from "./byte_stream.ts";
import { StateFormatError, StateStreamError } from "./errors.ts";
import { ExtentParser, type ExtentTotals } from "./ram_disk_extents.ts";
import {
  CHUNK_PREFIX_LENGTH,
  END_PAYLOAD_LENGTH,
  KNOWN_SECTION_TYPES,
  MAGIC,
  MAX_CHUNK_LENGTH,
  SECTION_FLAG_MANDATORY,
  SECTION_FLAGS_KNOWN,
  SECTION_HEADER_LENGTH,
  sectionName,
  SectionType,
} from "./state_format.ts";
import {
  checkHeaderPrefix,
  decodeHeader,
  HEADER_PREFIX_LENGTH,
  type StateHeader,
} from "./state_header.ts";

export type { StateHeader } from "./state_header.ts";

const INPUT_BUFFER_LENGTH = 1024 * 1024;
/** Extents shorter than this skip a direct data path: per-extent reads and writes would cost more. */
const DIRECT_MIN_EXTENT = 64 * 1024;

/** Options of a {@linkcode StateReader}. */
export interface StateReaderOptions {
  /** Called after each read from the source with the bytes read so far. */
  onProgress?: (bytes: number) => void;
  /**
   * Section types this reader understands (default: every registered type).
   * A mandatory section of another type is refused by
   * {@linkcode StateReader.nextSection}.
   */
  knownTypes?: ReadonlySet<number>;
  /**
   * When false, unknown mandatory sections are returned instead of refused
   * (for `state inspect`, which shows streams it could not load). Default true.
   */
  refuseUnknownMandatory?: boolean;
}

/** A section that {@linkcode StateReader.nextSection} opened. */
export interface SectionInfo {
  /** Section type. */
  type: number;
  /** True when a reader that does not know the type must refuse the stream. */
  mandatory: boolean;
  /** Registered name ("RAM_DISK") or "type N". */
  name: string;
}

/** How much of the current (or last) section's payload has been read. */
export interface SectionProgress {
  /** Payload bytes. */
  bytes: number;
  /** Non-empty chunks. */
  chunks: number;
}

type ReaderState = "header" | "between" | "section" | "done";

/**
 * A way for RAM disk data to reach the staging fd without passing through
 * the reader's buffer (and, for an asynchronous one, while the reader goes
 * on reading). See {@linkcode StateReader.readRamDiskInto}.
 */
export interface DirectDataPath {
  /**
   * Takes up to `length` next bytes of the stream (all of them data for
   * disk `offset` on), places them there, and returns them for the checksum
   * (a view valid until the next call); empty at end of stream.
   */
  move(offset: number, length: number): Uint8Array;
  /** Waits until every byte moved is in place; throws StateStreamError when one is not. */
  finish(): void;
}

/**
 * The reader's side of a direct path, given the payload bytes left in the
 * chunk: data moved directly, or how many bytes at most to read the
 * ordinary way (while the parser wants an extent record).
 */
type DirectHook = (left: number) => Uint8Array | number;

/**
 * Reads one state stream from `source`, in order: {@linkcode readHeader},
 * then {@linkcode nextSection} repeatedly, consuming each section it returns
 * with {@linkcode readChunks}, {@linkcode readWhole}, {@linkcode skipSection}
 * or {@linkcode readRamDiskInto}, until `nextSection()` returns undefined.
 *
 * **Nothing this reader returns is trustworthy until `nextSection()` has
 * returned undefined**: only then have the checksum, the section count and
 * the end of the stream been verified. A loader therefore stages everything
 * (RAM disk contents into a fresh memfd, metadata in memory) and applies it
 * only afterwards; on any error it drops the staged state. Likewise, parse
 * and check section contents (METADATA JSON) after verification, so that a
 * corrupt stream is reported as a checksum mismatch rather than as a
 * confusing content error. Only the header's kind and fingerprint are worth
 * checking at once, to refuse a stream for another device before reading it.
 *
 * Bad data throws {@linkcode StateFormatError}; a failing fd throws
 * {@linkcode StateStreamError}. After any error every call throws it again.
 */
export class StateReader {
  readonly #source: ByteSource;
  readonly #onProgress: ((bytes: number) => void) | undefined;
  readonly #knownTypes: ReadonlySet<number>;
  readonly #refuseUnknownMandatory: boolean;
  readonly #buffer = new Uint8Array(INPUT_BUFFER_LENGTH);
  readonly #view = new DataView(this.#buffer.buffer);
  #start = 0;
  #end = 0;
  #bytesRead = 0;
  #consumed = 0;
  #crc = 0;
  #state: ReaderState = "header";
  #header: StateHeader | undefined;
  #section: SectionInfo | undefined;
  #sectionBytes = 0;
  #sectionChunks = 0;
  #sections = 0;
  #failure: unknown;
  /** Set while readRamDiskInto has a direct data path. */
  #direct: DirectHook | undefined;

  /** Reads from `source`; the caller keeps ownership of it. */
  constructor(source: ByteSource, opts: StateReaderOptions = {}) {
    this.#source = source;
    this.#onProgress = opts.onProgress;
    this.#knownTypes = opts.knownTypes ?? KNOWN_SECTION_TYPES;
    this.#refuseUnknownMandatory = opts.refuseUnknownMandatory ?? true;
  }

  /** The header, once {@linkcode readHeader} succeeded. */
  get header(): StateHeader | undefined {
    return this.#header;
  }

  /** Bytes of the stream consumed so far. */
  get bytesConsumed(): number {
    return this.#consumed;
  }

  /** Sections before END read so far. */
  get sectionCount(): number {
    return this.#sections;
  }

  /** The section being read (or the last one read). */
  get section(): SectionInfo | undefined {
    return this.#section;
  }

  /** Payload read so far of the current (or last) section. */
  get sectionProgress(): SectionProgress {
    return { bytes: this.#sectionBytes, chunks: this.#sectionChunks };
  }

  /** True once END was read and the checksum, section count and end of stream verified. */
  get verified(): boolean {
    return this.#state === "done";
  }

  /**
   * Reads and validates the header: magic, format version (newer ones are
   * refused), header length (extra bytes of a longer header are skipped),
   * flags, reserved bytes, kind. Comparing kind and fingerprint with the
   * device is the caller's job (see `checkDeviceMatch` in `metadata.ts`).
   */
  readHeader(): StateHeader {
    this.#checkNotFailed();
    if (this.#state !== "header") throw new Error("the header was already read");
    return this.#guard(() => {
      if (!this.#fillAtLeast(HEADER_PREFIX_LENGTH)) {
        const available = this.#buffer.subarray(this.#start, this.#end);
        if (available.length === 0) throw new StateFormatError("stream is empty");
        if (available.some((byte, i) => i < MAGIC.length && byte !== MAGIC[i])) {
          throw new StateFormatError("not a vhostd state stream (bad magic)");
        }
        throw new StateFormatError("stream truncated in the header");
      }
      const length = checkHeaderPrefix(
        this.#buffer.subarray(this.#start, this.#start + HEADER_PREFIX_LENGTH),
      );
      const header = decodeHeader(this.#take(length, "the header", true));
      this.#header = header;
      this.#state = "between";
      return header;
    });
  }

  /**
   * Opens the next section and returns its type, or returns undefined once
   * END was read and verified (CRC, section count, nothing after it). The
   * previous section must have been consumed. Refuses unknown flags, non-zero
   * reserved bytes and (unless disabled) unknown mandatory types.
   */
  nextSection(): SectionInfo | undefined {
    this.#checkNotFailed();
    if (this.#state === "header") throw new Error("call readHeader() first");
    if (this.#state === "section") {
      throw new Error(`section ${this.#section?.name} was not consumed; call skipSection()`);
    }
    if (this.#state === "done") return undefined;
    return this.#guard(() => {
      if (!this.#fillAtLeast(SECTION_HEADER_LENGTH)) {
        throw new StateFormatError(
          this.#start === this.#end
            ? `stream truncated after ${this.#sections} sections (no END section)`
            : "stream truncated in a section header",
        );
      }
      const at = this.#start;
      const type = this.#view.getUint16(at, true);
      const flags = this.#view.getUint16(at + 2, true);
      const reserved = this.#view.getUint32(at + 4, true);
      if (type === SectionType.END) {
        this.#take(SECTION_HEADER_LENGTH, "section END", false);
        this.#readEnd(flags, reserved);
        return undefined;
      }
      this.#take(SECTION_HEADER_LENGTH, "a section header", true);
      const name = sectionName(type);
      if ((flags & ~SECTION_FLAGS_KNOWN) !== 0) {
        throw new StateFormatError(
          `section ${name} has unknown flags 0x${flags.toString(16)}: refusing the stream`,
        );
      }
      if (reserved !== 0) {
        throw new StateFormatError(
          `section ${name} has non-zero reserved bytes: stream is corrupt`,
        );
      }
      const mandatory = (flags & SECTION_FLAG_MANDATORY) !== 0;
      if (mandatory && this.#refuseUnknownMandatory && !this.#knownTypes.has(type)) {
        throw new StateFormatError(`unknown mandatory section type ${type}`);
      }
      this.#section = { type, mandatory, name };
      this.#sectionBytes = 0;
      this.#sectionChunks = 0;
      this.#state = "section";
      return this.#section;
    });
  }

  /**
   * Passes the current section's payload to `consumer` in order, in pieces:
   * a piece never spans two chunks, but a chunk may arrive in several pieces
   * (their boundaries mean nothing). A piece is a view into the reader's
   * buffer, valid only during the call. An error thrown by `consumer` ends
   * the read and poisons the reader.
   */
  readChunks(consumer: (piece: Uint8Array) => void): void {
    this.#checkNotFailed();
    const section = this.#currentSection();
    this.#guard(() => {
      const context = `section ${section.name}`;
      for (;;) {
        const length = this.#view.getUint32(
          this.#take(CHUNK_PREFIX_LENGTH, context, true).byteOffset,
          true,
        );
        if (length === 0) break;
        if (length > MAX_CHUNK_LENGTH) {
          throw new StateFormatError(
            `chunk length ${length} in ${context} exceeds the ${MAX_CHUNK_LENGTH}-byte limit: ` +
              "stream is corrupt",
          );
        }
        this.#sectionChunks++;
        this.#readPayload(length, context, consumer);
      }
      this.#sections++;
      this.#state = "between";
    });
  }

  /**
   * The current section's payload as one buffer (for METADATA). Refuses a
   * payload longer than `limit` bytes.
   */
  readWhole(limit: number): Uint8Array {
    const pieces: Uint8Array[] = [];
    let total = 0;
    this.readChunks((piece) => {
      total += piece.length;
      if (total > limit) {
        throw new StateFormatError(
          `section ${this.#section?.name} is longer than its ${limit}-byte limit`,
        );
      }
      pieces.push(piece.slice());
    });
    const whole = new Uint8Array(total);
    let at = 0;
    for (const piece of pieces) {
      whole.set(piece, at);
      at += piece.length;
    }
    return whole;
  }

  /** Reads past the current section's payload (an optional section this reader does not use). */
  skipSection(): void {
    this.readChunks(() => {});
  }

  /**
   * Applies the current RAM_DISK section to `fd` with pwrite: `fd` must read
   * as zeros where no extent lands (a fresh memfd truncated to `size`). It is
   * a staging copy: its contents mean nothing until `nextSection()` returned
   * undefined. Refuses extents beyond `size`, overlapping or out of order.
   * A failing pwrite throws StateStreamError.
   */
  readRamDiskInto(fd: number, size: number, direct?: DirectDataPath): ExtentTotals {
    this.#checkNotFailed();
    if (this.#currentSection().type !== SectionType.RAM_DISK) {
      throw new Error("the current section is not RAM_DISK");
    }
    const parser = new ExtentParser(size, (offset, bytes) => writeFully(fd, bytes, offset));
    const hook: DirectHook | undefined = direct &&
      ((left) => {
        if (parser.dataLeft === 0) return Math.min(left, parser.recordBytesLeft);
        // Small extents (a sparse disk) are cheaper read with the rest of their chunk at once.
        if (parser.dataLeft < DIRECT_MIN_EXTENT) return left;
        const moved = direct.move(parser.dataOffset, Math.min(left, parser.dataLeft));
        parser.skipData(moved.length);
        return moved;
      });
    this.#direct = hook;
    try {
      this.readChunks((piece) => parser.push(piece));
    } finally {
      this.#direct = undefined;
    }
    return this.#guard(() => {
      direct?.finish();
      return parser.finish();
    });
  }

  #currentSection(): SectionInfo {
    if (this.#state !== "section" || this.#section === undefined) {
      throw new Error("no section is open; call nextSection()");
    }
    return this.#section;
  }

  #readEnd(flags: number, reserved: number): void {
    const context = "section END";
    if (flags !== SECTION_FLAG_MANDATORY || reserved !== 0) {
      throw new StateFormatError("END section header is malformed: stream is corrupt");
    }
    const crc = this.#crc;
    const length = this.#view.getUint32(
      this.#take(CHUNK_PREFIX_LENGTH, context, false).byteOffset,
      true,
    );
    if (length !== END_PAYLOAD_LENGTH) {
      throw new StateFormatError("END section is malformed: stream is corrupt");
    }
    const payloadAt = this.#take(END_PAYLOAD_LENGTH, context, false).byteOffset;
    const storedCrc = this.#view.getUint32(payloadAt, true);
    const storedCount = this.#view.getUint32(payloadAt + 4, true);
    if (storedCrc !== crc) throw new StateFormatError("checksum mismatch: stream is corrupt");
    if (storedCount !== this.#sections) {
      throw new StateFormatError(
        `section count mismatch: END says ${storedCount}, the stream has ${this.#sections}: ` +
          "stream is corrupt",
      );
    }
    const terminator = this.#view.getUint32(
      this.#take(CHUNK_PREFIX_LENGTH, context, false).byteOffset,
      true,
    );
    if (terminator !== 0) throw new StateFormatError("END section is malformed: stream is corrupt");
    if (this.#start !== this.#end || this.#readMore() > 0) {
      throw new StateFormatError("trailing bytes after the END section: stream is corrupt");
    }
    this.#state = "done";
  }

  #checkNotFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** Runs `action`; whatever it throws poisons the reader (its position is lost). */
  #guard<T>(action: () => T): T {
    try {
      return action();
    } catch (error) {
      this.#failure = error;
      throw error;
    }
  }

  /**
   * Reads what the source has (at most `limit` bytes) into the free end of
   * the buffer; returns the count.
   */
  #readMore(limit = Number.POSITIVE_INFINITY): number {
    const free = this.#buffer.length - this.#end;
    const n = this.#source.read(
      this.#buffer.subarray(this.#end, this.#end + Math.min(free, limit)),
    );
    if (n > 0) {
      this.#end += n;
      this.#counted(n);
    }
    return n;
  }

  #counted(n: number): void {
    this.#bytesRead += n;
    this.#onProgress?.(this.#bytesRead);
  }

  /**
   * Makes at least `n` (≤ buffer length) bytes available; false at end of
   * stream. While a direct data path is set, it reads no more than needed,
   * so that RAM disk data stays in the source for the direct path.
   */
  #fillAtLeast(n: number): boolean {
    while (this.#end - this.#start < n) {
      if (this.#start + n > this.#buffer.length) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const limit = this.#direct ? n - (this.#end - this.#start) : undefined;
      if (this.#readMore(limit) === 0) return false;
    }
    return true;
  }

  /**
   * Consumes the next `n` bytes and returns them as a view into the buffer
   * (valid until the next read). `checksummed` is false only for END, which
   * the checksum does not cover.
   */
  #take(n: number, context: string, checksummed: boolean): Uint8Array {
    if (!this.#fillAtLeast(n)) throw new StateFormatError(`stream truncated in ${context}`);
    const view = this.#buffer.subarray(this.#start, this.#start + n);
    this.#start += n;
    this.#consumed += n;
    if (checksummed) this.#crc = crc32(view, this.#crc);
    return view;
  }

  #readPayload(length: number, context: string, consumer: (piece: Uint8Array) => void): void {
    let left = length;
    while (left > 0) {
      if (this.#start === this.#end) {
        this.#start = this.#end = 0;
        const direct = this.#direct?.(left);
        if (direct instanceof Uint8Array) {
          // Already in place: only the checksum and the counts are left to do.
          if (direct.length === 0) throw new StateFormatError(`stream truncated in ${context}`);
          this.#crc = crc32(direct, this.#crc);
          this.#consumed += direct.length;
          this.#sectionBytes += direct.length;
          this.#counted(direct.length);
          left -= direct.length;
          continue;
        }
        if (this.#readMore(direct) === 0) {
          throw new StateFormatError(`stream truncated in ${context}`);
        }
      }
      const n = Math.min(left, this.#end - this.#start);
      const piece = this.#buffer.subarray(this.#start, this.#start + n);
      this.#start += n;
      this.#consumed += n;
      this.#sectionBytes += n;
      left -= n;
      this.#crc = crc32(piece, this.#crc);
      consumer(piece);
    }
  }
}

/** pwrites all of `bytes` at `offset` of the staging fd; a failure is a StateStreamError. */
export function writeFully(fd: number, bytes: Uint8Array, offset: number): void {
  let done = 0;
  while (done < bytes.length) {
    let n: number;
    try {
      n = pwrite(fd, bytes.subarray(done), offset + done);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      throw new StateStreamError(`writing the RAM disk state failed: ${detail}`, { cause: error });
    }
    if (n === 0) throw new StateStreamError("writing the RAM disk state failed: 0 bytes written");
    done += n;
  }
}
