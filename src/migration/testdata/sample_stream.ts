/**
 * Test helpers: a small RAM disk in a memfd with data at scattered offsets,
 * a complete sample stream built from it, and a walker that finds the
 * offsets of the stream's parts (to cut or corrupt it in chosen places).
 *
 * @module
 */

import { closeFd, ftruncate, memfdCreate, pread, pwrite } from "../../../ffi/mod.ts";
import { MemorySink } from "../byte_stream.ts";
import { StateWriter } from "../state_writer.ts";
import { HEADER_LENGTH, SectionType } from "../state_format.ts";

/** Disk size of the sample. */
export const SAMPLE_SIZE = 4 * 1024 * 1024;

/** Identity of the sample device. */
export const SAMPLE_IDENTITY = {
  size: SAMPLE_SIZE,
  readOnly: false,
  serial: "sample-disk",
  queues: [{ size: 256 }, { size: 128 }],
};

/** Device state of the sample. */
export const SAMPLE_STATE = { writeCache: true, generation: 7 };

/** Creation time of the sample (fixed so streams are reproducible). */
export const SAMPLE_CREATED_AT = 1_700_000_000_123;

/** Optional section type no reader knows; the round trip must skip it. */
export const UNKNOWN_OPTIONAL_TYPE = 0x4321;

/** Where the sample disk holds data: [offset, length, seed]. */
export const SAMPLE_EXTENTS: readonly [number, number, number][] = [
  [0, 100, 1], // start of the disk, shorter than a block
  [8192 + 17, 5000, 2], // unaligned, straddles two blocks
  [1024 * 1024 - 10, 30, 3], // straddles the first 1 MiB read window
  [2 * 1024 * 1024, 70_000, 4], // several blocks
  [SAMPLE_SIZE - 4096, 4096, 5], // the last block
];

/** Deterministic non-zero-ish bytes. */
export function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = (x >>> 0) & 0xff | 1;
  }
  return bytes;
}

/** A memfd of `size` bytes holding `extents` of patterned data; the caller closes it. */
export function makeDisk(
  size: number = SAMPLE_SIZE,
  extents: readonly [number, number, number][] = SAMPLE_EXTENTS,
): number {
  const fd = memfdCreate("sample-disk");
  ftruncate(fd, size);
  for (const [offset, length, seed] of extents) writeAt(fd, pattern(length, seed), offset);
  return fd;
}

/** pwrite of all of `bytes`. */
export function writeAt(fd: number, bytes: Uint8Array, offset: number): void {
  let done = 0;
  while (done < bytes.length) done += pwrite(fd, bytes.subarray(done), offset + done);
}

/** The first `size` bytes of `fd`. */
export function readAll(fd: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let done = 0;
  while (done < size) {
    const n = pread(fd, bytes.subarray(done), done);
    if (n === 0) break;
    done += n;
  }
  return bytes;
}

/** The sample stream: METADATA, an unknown optional section, RAM_DISK, END. */
export function sampleStream(opts: { unknownOptional?: boolean } = {}): Uint8Array {
  const fd = makeDisk();
  try {
    const sink = new MemorySink();
    const writer = new StateWriter(sink, {
      kind: "blk",
      identity: SAMPLE_IDENTITY,
      createdAt: SAMPLE_CREATED_AT,
    });
    writer.writeMetadata({
      vhostd: "0.0.0-test",
      kind: "blk",
      identity: SAMPLE_IDENTITY,
      state: SAMPLE_STATE,
    });
    if (opts.unknownOptional ?? true) {
      writer.beginSection(UNKNOWN_OPTIONAL_TYPE, false);
      writer.writeChunk(new TextEncoder().encode("from a newer vhostd"));
      writer.writeChunk(pattern(3000, 9));
      writer.endSection();
    }
    writer.writeRamDiskFromFd(fd, SAMPLE_SIZE);
    writer.finish();
    return sink.bytes().slice();
  } finally {
    closeFd(fd);
  }
}

/** One part of a stream, as byte offsets [start, end). */
export interface StreamPart {
  /** "header", "section", "chunk-length", "chunk-data" or "terminator". */
  kind: string;
  /** Section type for parts inside a section. */
  type?: number;
  /** First byte. */
  start: number;
  /** One past the last byte. */
  end: number;
}

/** Splits a well-formed stream into its parts (trusting its lengths). */
export function streamParts(bytes: Uint8Array): StreamPart[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const parts: StreamPart[] = [{ kind: "header", start: 0, end: HEADER_LENGTH }];
  let at = HEADER_LENGTH;
  while (at < bytes.length) {
    const type = view.getUint16(at, true);
    parts.push({ kind: "section", type, start: at, end: at + 8 });
    at += 8;
    for (;;) {
      const length = view.getUint32(at, true);
      if (length === 0) {
        parts.push({ kind: "terminator", type, start: at, end: at + 4 });
        at += 4;
        break;
      }
      parts.push({ kind: "chunk-length", type, start: at, end: at + 4 });
      parts.push({ kind: "chunk-data", type, start: at + 4, end: at + 4 + length });
      at += 4 + length;
    }
    if (type === SectionType.END) break;
  }
  return parts;
}
