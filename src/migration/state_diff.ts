/**
 * `vhostd state diff`: what differs between two state files. Each file is
 * read once to verify it and to index it (header, sections, METADATA, where
 * each piece of RAM disk data lies in the file), then the two RAM disks are
 * compared window by window with pread: never more than two 1 MiB windows
 * in memory, whatever the disk size.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, type Hash } from "node:crypto";
import { closeQuietly, O_CLOEXEC, O_RDONLY, openFile, pread, SyscallError } from "../../ffi/mod.ts";
import { FdSource } from "./byte_stream.ts";
import { canonicalJson, toHex } from "./fingerprint.ts";
import { inspectState, type StateSummary } from "./inspect.ts";
import { SectionType } from "./state_format.ts";

/** Bytes of each side compared at a time. */
const WINDOW = 1 << 20;
/** Blocks compared natively (memcmp) before looking at single bytes. */
const BLOCK = 4096;
/** Differing bytes fewer than this many equal bytes apart belong to one range. */
export const RANGE_MERGE_GAP = 64;
/** Ranges listed in full; past this, only counted. */
export const MAX_LISTED_RANGES = 1000;

/** A piece of RAM disk data: `length` bytes for disk `diskOffset` at `fileOffset` of the file. */
interface DataPiece {
  diskOffset: number;
  length: number;
  fileOffset: number;
}

/** One state file, read, verified and indexed. */
export interface IndexedState {
  /** The path it was read from. */
  path: string;
  /** What inspect found. */
  summary: StateSummary;
  /** RAM disk data pieces in disk order (empty without a RAM_DISK section). */
  pieces: DataPiece[];
  /** SHA-256 (hex) of the payload of each section other than METADATA and RAM_DISK, by index. */
  payloadDigests: Map<number, string>;
}

/** A file that cannot be compared: unreadable, not a state file, or invalid. */
export class StateDiffInputError extends Error {}

/**
 * Opens, reads and indexes `path`; throws StateDiffInputError when it cannot
 * be read or is not a valid state stream (the checksum must hold).
 */
export function indexStateFile(path: string): IndexedState {
  let fd: number;
  try {
    fd = openFile(path, O_RDONLY | O_CLOEXEC);
  } catch (e) {
    const why = e instanceof SyscallError ? e.code : e instanceof Error ? e.message : e;
    throw new StateDiffInputError(`cannot open ${path}: ${why}`);
  }
  try {
    const pieces: DataPiece[] = [];
    const hashes = new Map<number, Hash>();
    const summary = inspectState(new FdSource(fd), {
      onRamDiskData: (diskOffset, length, fileOffset) => {
        const last = pieces.at(-1);
        // Pieces of one extent that are also contiguous in the file become one.
        if (
          last && last.diskOffset + last.length === diskOffset &&
          last.fileOffset + last.length === fileOffset
        ) {
          last.length += length;
        } else {
          pieces.push({ diskOffset, length, fileOffset });
        }
      },
      onOtherPayload: (index, piece) => {
        let hash = hashes.get(index);
        if (hash === undefined) hashes.set(index, hash = createHash("sha256"));
        hash.update(piece);
      },
    });
    if (summary.header === undefined) {
      throw new StateDiffInputError(`${path} is not a vhostd state file: ${summary.error}`);
    }
    if (summary.error !== undefined) throw new StateDiffInputError(`${path}: ${summary.error}`);
    const payloadDigests = new Map<number, string>();
    summary.sections.forEach((section, index) => {
      if (section.type === SectionType.METADATA || section.type === SectionType.RAM_DISK) return;
      payloadDigests.set(index, hashes.get(index)?.digest("hex") ?? EMPTY_DIGEST);
    });
    return { path, summary, pieces, payloadDigests };
  } finally {
    closeQuietly(fd);
  }
}

const EMPTY_DIGEST = createHash("sha256").digest("hex");

/** A header field that differs. */
export interface FieldDifference {
  /** Field name (`formatVersion`, `kind`, `fingerprint`). */
  field: string;
  /** Value in A. */
  a: unknown;
  /** Value in B. */
  b: unknown;
}

/** A METADATA value that differs; absent on one side is `undefined` (null in JSON). */
export interface MetadataDifference {
  /** Dotted path of the JSON value (`identity.size`, `state.counters.reads`, `state.list[2]`). */
  path: string;
  /** Value in A (undefined: absent). */
  a: unknown;
  /** Value in B (undefined: absent). */
  b: unknown;
}

/** A section whose payload differs (sections vhostd does not interpret). */
export interface PayloadDifference {
  /** Position in the section list. */
  index: number;
  /** Section name. */
  name: string;
  /** SHA-256 of A's payload. */
  a: string;
  /** SHA-256 of B's payload. */
  b: string;
}

/** A byte range of the RAM disk where A and B differ. */
export interface ByteRange {
  /** First byte. */
  offset: number;
  /** Length in bytes. */
  length: number;
}

/** How two RAM disks differ. */
export interface RamDiskDifference {
  /** Bytes compared: the larger of the two disk sizes. */
  size: number;
  /** Differing ranges in order (at most MAX_LISTED_RANGES; see rangeCount). */
  ranges: ByteRange[];
  /** Number of differing ranges, listed or not. */
  rangeCount: number;
  /** Sum of the lengths of all differing ranges. */
  rangeBytes: number;
  /** Bytes that differ exactly (the ranges may include a few equal bytes between differences). */
  differingBytes: number;
}

/** Everything `state diff` found. */
export interface StateDiff {
  /** True when the two files hold the same device state (creation times aside). */
  identical: boolean;
  /** Header fields that differ (creation time aside). */
  header: FieldDifference[];
  /** Creation times (ISO 8601); not counted as a difference. */
  createdAt: { a: string; b: string };
  /** Section names of each file, in order; `differ` when names, order or mandatory flags do. */
  sections: { a: string[]; b: string[]; differ: boolean };
  /** Sections vhostd does not interpret, at the same position, whose payloads differ. */
  payloads: PayloadDifference[];
  /** METADATA values that differ. */
  metadata: MetadataDifference[];
  /** RAM disk comparison; undefined unless both files have a RAM_DISK section. */
  ramDisk?: RamDiskDifference;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function child(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

/** Collects the leaf values that differ between two JSON values. */
function diffJson(a: unknown, b: unknown, path: string, out: MetadataDifference[]): void {
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const key of keys) diffJson(a[key], b[key], child(path, key), out);
  } else if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      diffJson(a[i], b[i], `${path}[${i}]`, out);
    }
  } else if (a === undefined || b === undefined || canonicalJson(a) !== canonicalJson(b)) {
    if (a !== undefined || b !== undefined) out.push({ path, a, b });
  }
}

function headerFields(state: IndexedState): Record<string, unknown> {
  const header = state.summary.header!;
  return {
    formatVersion: header.formatVersion,
    kind: header.kind,
    fingerprint: toHex(header.fingerprint),
  };
}

function sectionKey(state: IndexedState): string[] {
  return state.summary.sections.map((s) => `${s.type}:${s.mandatory}`);
}

/** Where in a piece list the window scan is, per side. */
class PieceCursor {
  #next = 0;
  constructor(readonly fd: number, readonly pieces: DataPiece[]) {}

  /** Disk offset where data next starts at or after the current position, or Infinity. */
  nextDataAt(): number {
    return this.#next < this.pieces.length ? this.pieces[this.#next].diskOffset : Infinity;
  }

  /** Fills `window` with the disk's bytes from `start` (zeros where no data is). */
  fill(window: Uint8Array, start: number): void {
    window.fill(0);
    const end = start + window.length;
    // Pieces ending before the window are done with.
    while (this.#next < this.pieces.length) {
      const p = this.pieces[this.#next];
      if (p.diskOffset + p.length > start) break;
      this.#next++;
    }
    for (let i = this.#next; i < this.pieces.length; i++) {
      const p = this.pieces[i];
      if (p.diskOffset >= end) break;
      const from = Math.max(start, p.diskOffset);
      const to = Math.min(end, p.diskOffset + p.length);
      readExactly(
        this.fd,
        window.subarray(from - start, to - start),
        p.fileOffset + from - p.diskOffset,
      );
    }
  }
}

function readExactly(fd: number, into: Uint8Array, offset: number): void {
  let done = 0;
  while (done < into.length) {
    const n = pread(fd, into.subarray(done), offset + done);
    if (n === 0) throw new StateDiffInputError("a state file became shorter while it was compared");
    done += n;
  }
}

/** Accumulates differing bytes into ranges. */
class RangeCollector {
  readonly ranges: ByteRange[] = [];
  rangeCount = 0;
  rangeBytes = 0;
  differingBytes = 0;
  #start = -1;
  #end = -1;

  /** Byte `at` differs. */
  add(at: number): void {
    this.differingBytes++;
    if (this.#start >= 0 && at - this.#end < RANGE_MERGE_GAP) {
      this.#end = at + 1;
      return;
    }
    this.#close();
    this.#start = at;
    this.#end = at + 1;
  }

  #close(): void {
    if (this.#start < 0) return;
    const length = this.#end - this.#start;
    this.rangeCount++;
    this.rangeBytes += length;
    if (this.ranges.length < MAX_LISTED_RANGES) this.ranges.push({ offset: this.#start, length });
    this.#start = -1;
  }

  finish(size: number): RamDiskDifference {
    this.#close();
    const { ranges, rangeCount, rangeBytes, differingBytes } = this;
    return { size, ranges, rangeCount, rangeBytes, differingBytes };
  }
}

function diskSize(state: IndexedState): number {
  const meta = state.summary.metadata as { identity?: { size?: unknown } } | undefined;
  const size = meta?.identity?.size;
  const last = state.pieces.at(-1);
  const dataEnd = last ? last.diskOffset + last.length : 0;
  return typeof size === "number" && Number.isSafeInteger(size) ? Math.max(size, dataEnd) : dataEnd;
}

/** Compares the two RAM disks window by window; windows where neither has data are skipped. */
function diffRamDisks(a: IndexedState, b: IndexedState): RamDiskDifference {
  const size = Math.max(diskSize(a), diskSize(b));
  const collector = new RangeCollector();
  const fdA = openFile(a.path, O_RDONLY | O_CLOEXEC);
  try {
    const fdB = openFile(b.path, O_RDONLY | O_CLOEXEC);
    try {
      const cursorA = new PieceCursor(fdA, a.pieces);
      const cursorB = new PieceCursor(fdB, b.pieces);
      const windowA = new Uint8Array(WINDOW);
      const windowB = new Uint8Array(WINDOW);
      for (let start = 0; start < size;) {
        const next = Math.min(cursorA.nextDataAt(), cursorB.nextDataAt());
        if (next === Infinity) break;
        if (next >= start + WINDOW) {
          // Both sides are zero up to `next`: jump there (window-aligned).
          start = next - (next % WINDOW);
          continue;
        }
        const length = Math.min(WINDOW, size - start);
        cursorA.fill(windowA.subarray(0, length), start);
        cursorB.fill(windowB.subarray(0, length), start);
        compareWindows(windowA.subarray(0, length), windowB.subarray(0, length), start, collector);
        start += length;
      }
    } finally {
      closeQuietly(fdB);
    }
  } finally {
    closeQuietly(fdA);
  }
  return collector.finish(size);
}

function compareWindows(a: Uint8Array, b: Uint8Array, base: number, out: RangeCollector): void {
  const bufA = Buffer.from(a.buffer, a.byteOffset, a.length);
  const bufB = Buffer.from(b.buffer, b.byteOffset, b.length);
  if (bufA.equals(bufB)) return;
  for (let at = 0; at < a.length; at += BLOCK) {
    const end = Math.min(at + BLOCK, a.length);
    if (bufA.subarray(at, end).equals(bufB.subarray(at, end))) continue;
    for (let i = at; i < end; i++) if (a[i] !== b[i]) out.add(base + i);
  }
}

/** Compares two indexed state files. */
export function diffStates(a: IndexedState, b: IndexedState): StateDiff {
  const header: FieldDifference[] = [];
  const fieldsA = headerFields(a);
  const fieldsB = headerFields(b);
  for (const field of Object.keys(fieldsA)) {
    if (fieldsA[field] !== fieldsB[field]) {
      header.push({ field, a: fieldsA[field], b: fieldsB[field] });
    }
  }
  const sectionsDiffer = sectionKey(a).join() !== sectionKey(b).join();
  const payloads: PayloadDifference[] = [];
  for (const [index, digest] of a.payloadDigests) {
    const other = b.payloadDigests.get(index);
    const name = a.summary.sections[index].name;
    if (other !== undefined && other !== digest && b.summary.sections[index].name === name) {
      payloads.push({ index, name, a: digest, b: other });
    }
  }
  const metadata: MetadataDifference[] = [];
  diffJson(a.summary.metadata, b.summary.metadata, "", metadata);
  const hasRamDisk = (s: IndexedState) =>
    s.summary.sections.some((section) => section.type === SectionType.RAM_DISK);
  const ramDisk = hasRamDisk(a) && hasRamDisk(b) ? diffRamDisks(a, b) : undefined;
  const identical = header.length === 0 && !sectionsDiffer && payloads.length === 0 &&
    metadata.length === 0 && (ramDisk === undefined || ramDisk.rangeCount === 0);
  const created = (s: IndexedState) => new Date(s.summary.header!.createdAt).toISOString();
  return {
    identical,
    header,
    createdAt: { a: created(a), b: created(b) },
    sections: {
      a: a.summary.sections.map((s) => s.name),
      b: b.summary.sections.map((s) => s.name),
      differ: sectionsDiffer,
    },
    payloads,
    metadata,
    ramDisk,
  };
}

/** Version of the `state diff --json` document; raised when a field changes meaning or goes. */
export const DIFF_JSON_SCHEMA_VERSION = 1;

/** The `state diff --json` document (README "JSON output" documents every field). */
export function diffToJson(
  diff: StateDiff,
  a: IndexedState,
  b: IndexedState,
): Record<string, unknown> {
  const side = (s: IndexedState) => ({ path: s.path, totalBytes: s.summary.totalBytes });
  return {
    schemaVersion: DIFF_JSON_SCHEMA_VERSION,
    identical: diff.identical,
    a: side(a),
    b: side(b),
    header: diff.header,
    createdAt: diff.createdAt,
    sections: diff.sections,
    payloads: diff.payloads,
    metadata: diff.metadata.map(({ path, a, b }) => ({ path, a: a ?? null, b: b ?? null })),
    ramDisk: diff.ramDisk ?? null,
  };
}
