/**
 * Writing a state stream: header, sections of chunks, END with the checksum.
 * Everything is streamed: small pieces are gathered in one 64 KiB buffer,
 * large payloads go straight to the sink, and a RAM disk is read through one
 * reused buffer.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import { pread } from "../../ffi/mod.ts";
import type { ByteSink } from "./byte_stream.ts";
import { StateStreamError } from "./errors.ts";
import { canonicalJson, fingerprint } from "./fingerprint.ts";
import type { ExtentTotals } from "./ram_disk_extents.ts";
import {
  CHUNK_PREFIX_LENGTH,
  END_PAYLOAD_LENGTH,
  EXTENT_RECORD_LENGTH,
  MAX_CHUNK_LENGTH,
  SECTION_FLAG_MANDATORY,
  SECTION_HEADER_LENGTH,
  SectionType,
} from "./state_format.ts";
import { encodeHeader } from "./state_header.ts";
import { findDataRuns } from "./zero_runs.ts";

const STAGING_LENGTH = 64 * 1024;
/** Pieces up to this size are copied into the staging buffer; larger ones are written directly. */
const SMALL_PIECE = 8 * 1024;
const TWO_POW_32 = 0x1_0000_0000;
const MiB = 1024 * 1024;

/** What goes into the header of a new stream. */
export interface StateWriterHeader {
  /** Device kind ("blk"). */
  kind: string;
  /** The device's identity (fingerprinted; must match on load). */
  identity: Record<string, unknown>;
  /** Milliseconds since the epoch; default now. */
  createdAt?: number;
}

/** Options of a {@linkcode StateWriter}. */
export interface StateWriterOptions {
  /** Called after each write to the sink with the bytes written so far. */
  onProgress?: (bytes: number) => void;
}

/** The METADATA document. */
export interface StateMetadataInput {
  /** vhostd version that saved the state. */
  vhostd: string;
  /** Device kind (same as the header's). */
  kind: string;
  /** The fingerprinted identity (same as the header's). */
  identity: object;
  /** Device-specific state. */
  state: object;
}

/** Options of {@linkcode StateWriter.writeRamDiskFromFd}. */
export interface RamDiskWriteOptions {
  /** Bytes read per pread into the one reused buffer (default 1 MiB, at most 8 MiB). */
  chunkSize?: number;
  /** Granularity of zero detection: all-zero blocks of this size are not sent (default 4096). */
  zeroBlockSize?: number;
}

/** What {@linkcode StateWriter.finish} reports. */
export interface WriteTotals {
  /** Length of the whole stream. */
  bytes: number;
  /** The CRC-32 recorded in END. */
  crc: number;
}

/**
 * Writes one state stream to `sink`. Call order: (sections: beginSection,
 * writeChunk*, endSection — or writeMetadata / writeRamDiskFromFd)*, then
 * finish. The header is written on construction. After a sink failure every
 * call throws that failure again. The writer never closes anything: closing
 * the pipe afterwards is what tells the reader the stream ended.
 */
export class StateWriter {
  readonly #sink: ByteSink;
  readonly #onProgress: ((bytes: number) => void) | undefined;
  readonly #kind: string;
  readonly #identityJson: string;
  readonly #staging = new Uint8Array(STAGING_LENGTH);
  readonly #stagingView = new DataView(this.#staging.buffer);
  #stagingLength = 0;
  #crc = 0;
  #bytes = 0;
  #sections = 0;
  #openSection: number | undefined;
  #finished = false;
  #failure: unknown;
  #readBuffer: Uint8Array | undefined;
  /** Cleared when the sink said it cannot splice from the RAM disk. */
  #spliceWorks = true;
  readonly #runs: number[] = [];

  /** Starts a stream for the device described by `header`. */
  constructor(sink: ByteSink, header: StateWriterHeader, opts: StateWriterOptions = {}) {
    this.#sink = sink;
    this.#onProgress = opts.onProgress;
    this.#kind = header.kind;
    this.#identityJson = canonicalJson(header.identity);
    const createdAt = header.createdAt ?? Date.now();
    this.#put(encodeHeader(header.kind, fingerprint(header.identity), createdAt));
  }

  /** Bytes passed to the sink so far (buffered bytes not included). */
  get bytesWritten(): number {
    return this.#bytes;
  }

  /**
   * Writes the METADATA section. `meta.kind` and `meta.identity` must be
   * the header's (a RangeError otherwise: the stream would contradict itself).
   */
  writeMetadata(meta: StateMetadataInput): void {
    if (meta.kind !== this.#kind) {
      throw new RangeError(`metadata kind ${meta.kind} differs from the header's ${this.#kind}`);
    }
    if (canonicalJson(meta.identity) !== this.#identityJson) {
      throw new RangeError("metadata identity differs from the header's");
    }
    const document = JSON.stringify({
      vhostd: meta.vhostd,
      kind: meta.kind,
      identity: meta.identity,
      state: meta.state,
    });
    this.beginSection(SectionType.METADATA, true);
    this.writeChunk(new TextEncoder().encode(document));
    this.endSection();
  }

  /** Opens a section of `type` (1..0xFFFE); END is written by {@linkcode finish}. */
  beginSection(type: number, mandatory: boolean): void {
    this.#checkUsable();
    if (this.#openSection !== undefined) {
      throw new Error(`section type ${this.#openSection} is still open`);
    }
    if (!Number.isInteger(type) || type < 1 || type >= SectionType.END) {
      throw new RangeError(`section type must be 1..0xfffe, got ${type}`);
    }
    this.#guard(() => this.#putSectionHeader(type, mandatory ? SECTION_FLAG_MANDATORY : 0));
    this.#openSection = type;
  }

  /** Appends `bytes` to the open section, as several chunks when longer than 16 MiB. */
  writeChunk(bytes: Uint8Array): void {
    this.#checkInSection();
    this.#guard(() => {
      for (let at = 0; at < bytes.length; at += MAX_CHUNK_LENGTH) {
        const piece = bytes.subarray(at, Math.min(at + MAX_CHUNK_LENGTH, bytes.length));
        this.#putU32(piece.length);
        this.#put(piece);
      }
    });
  }

  /** Closes the open section (writes the 0-length chunk). */
  endSection(): void {
    this.#checkInSection();
    this.#guard(() => this.#putU32(0));
    this.#openSection = undefined;
    this.#sections++;
  }

  /**
   * Writes a RAM_DISK section with the first `size` bytes of `fd` (a memfd or
   * file), read with pread through one reused buffer. All-zero blocks are
   * skipped, and so is anything past the end of a shorter file. Each read
   * window becomes one chunk holding an extent per run of data blocks.
   */
  writeRamDiskFromFd(fd: number, size: number, opts: RamDiskWriteOptions = {}): ExtentTotals {
    const chunkSize = opts.chunkSize ?? MiB;
    const blockSize = opts.zeroBlockSize ?? 4096;
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad RAM disk size ${size}`);
    if (!Number.isInteger(blockSize) || blockSize < 8 || blockSize % 8 !== 0) {
      throw new RangeError(`zeroBlockSize must be a positive multiple of 8, got ${blockSize}`);
    }
    if (!Number.isInteger(chunkSize) || chunkSize % blockSize !== 0 || chunkSize > 8 * MiB) {
      throw new RangeError(
        `chunkSize must be a multiple of zeroBlockSize up to 8 MiB, got ${chunkSize}`,
      );
    }
    if (this.#readBuffer === undefined || this.#readBuffer.length !== chunkSize) {
      this.#readBuffer = new Uint8Array(chunkSize);
    }
    const buffer = this.#readBuffer;
    const runs = this.#runs;
    let extents = 0;
    let dataBytes = 0;
    this.beginSection(SectionType.RAM_DISK, true);
    this.#guard(() => {
      for (let position = 0; position < size; position += chunkSize) {
        const wanted = Math.min(chunkSize, size - position);
        const got = readFully(fd, buffer.subarray(0, wanted), position);
        const window = buffer.subarray(0, got);
        const count = findDataRuns(window, blockSize, runs);
        if (count > 0) {
          let chunkLength = 0;
          for (let i = 0; i < count; i++) {
            chunkLength += EXTENT_RECORD_LENGTH + runs[2 * i + 1] - runs[2 * i];
          }
          this.#putU32(chunkLength);
          for (let i = 0; i < count; i++) {
            const start = runs[2 * i];
            const end = runs[2 * i + 1];
            this.#putU64(position + start);
            this.#putU64(end - start);
            this.#putFileData(window.subarray(start, end), fd, position + start);
            dataBytes += end - start;
          }
          extents += count;
        }
        if (got < wanted) break;
      }
    });
    this.endSection();
    return { extents, dataBytes };
  }

  /**
   * Writes END (checksum and section count) and flushes. Returns the stream
   * length and its CRC. The writer is done afterwards.
   */
  finish(): WriteTotals {
    this.#checkUsable();
    if (this.#openSection !== undefined) {
      throw new Error(`section type ${this.#openSection} is still open`);
    }
    return this.#guard(() => {
      this.#flush();
      const crc = this.#crc;
      this.#putSectionHeader(SectionType.END, SECTION_FLAG_MANDATORY);
      this.#putU32(END_PAYLOAD_LENGTH);
      this.#putU32(crc);
      this.#putU32(this.#sections);
      this.#putU32(0);
      this.#flush();
      this.#finished = true;
      return { bytes: this.#bytes, crc };
    });
  }

  #checkUsable(): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#finished) throw new Error("the state stream is already finished");
  }

  #checkInSection(): void {
    this.#checkUsable();
    if (this.#openSection === undefined) throw new Error("no section is open");
  }

  /** Runs `action`; a failure poisons the writer (the stream is broken mid-way). */
  #guard<T>(action: () => T): T {
    try {
      return action();
    } catch (error) {
      this.#failure = error;
      throw error;
    }
  }

  #putSectionHeader(type: number, flags: number): void {
    this.#reserve(SECTION_HEADER_LENGTH);
    const view = this.#stagingView;
    view.setUint16(this.#stagingLength, type, true);
    view.setUint16(this.#stagingLength + 2, flags, true);
    view.setUint32(this.#stagingLength + 4, 0, true);
    this.#stagingLength += SECTION_HEADER_LENGTH;
  }

  #putU32(value: number): void {
    this.#reserve(CHUNK_PREFIX_LENGTH);
    this.#stagingView.setUint32(this.#stagingLength, value, true);
    this.#stagingLength += 4;
  }

  #putU64(value: number): void {
    this.#reserve(8);
    this.#stagingView.setUint32(this.#stagingLength, value >>> 0, true);
    this.#stagingView.setUint32(this.#stagingLength + 4, Math.floor(value / TWO_POW_32), true);
    this.#stagingLength += 8;
  }

  #reserve(length: number): void {
    if (this.#stagingLength + length > STAGING_LENGTH) this.#flush();
  }

  #put(bytes: Uint8Array): void {
    if (bytes.length <= SMALL_PIECE) {
      this.#reserve(bytes.length);
      this.#staging.set(bytes, this.#stagingLength);
      this.#stagingLength += bytes.length;
    } else {
      this.#flush();
      this.#send(bytes);
    }
  }

  /**
   * Sends `bytes`, which are also at `offset` of `fd`: large pieces go from
   * the file with splice when the sink can, so they are not copied again.
   */
  #putFileData(bytes: Uint8Array, fd: number, offset: number): void {
    if (bytes.length <= SMALL_PIECE || !this.#spliceWorks || !this.#sink.spliceFrom) {
      this.#put(bytes);
      return;
    }
    this.#flush();
    if (!this.#sink.spliceFrom(fd, offset, bytes.length)) {
      this.#spliceWorks = false;
      this.#send(bytes);
      return;
    }
    this.#counted(bytes);
  }

  #flush(): void {
    if (this.#stagingLength === 0) return;
    const pending = this.#staging.subarray(0, this.#stagingLength);
    this.#stagingLength = 0;
    this.#send(pending);
  }

  #send(bytes: Uint8Array): void {
    this.#sink.write(bytes);
    this.#counted(bytes);
  }

  /** Accounts for `bytes`, which reached the sink. */
  #counted(bytes: Uint8Array): void {
    this.#crc = crc32(bytes, this.#crc);
    this.#bytes += bytes.length;
    this.#onProgress?.(this.#bytes);
  }
}

/** Reads `into.length` bytes at `offset`, fewer only at end of file. */
function readFully(fd: number, into: Uint8Array, offset: number): number {
  let done = 0;
  while (done < into.length) {
    let n: number;
    try {
      n = pread(fd, into.subarray(done), offset + done);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      throw new StateStreamError(`reading the RAM disk failed: ${detail}`, { cause: error });
    }
    if (n === 0) break;
    done += n;
  }
  return done;
}
