/**
 * `vhostd state inspect`: reads a whole state stream without applying it and
 * describes it (header, sections, metadata, RAM disk extents, checksum),
 * including streams that are invalid.
 *
 * @module
 */

import type { ByteSource } from "./byte_stream.ts";
import { StateFormatError, StateStreamError } from "./errors.ts";
import { toHex } from "./fingerprint.ts";
import { parseMetadata } from "./metadata.ts";
import { ExtentParser, type ExtentTotals } from "./ram_disk_extents.ts";
import { KNOWN_SECTION_TYPES, METADATA_LIMIT, SectionType } from "./state_format.ts";
import type { StateHeader } from "./state_header.ts";
import { StateReader } from "./state_reader.ts";

/** One section as seen by {@linkcode inspectState}. */
export interface SectionSummary {
  /** Section type. */
  type: number;
  /** Registered name or "type N". */
  name: string;
  /** The MANDATORY flag. */
  mandatory: boolean;
  /** Payload bytes read (all of them unless the stream broke inside the section). */
  bytes: number;
  /** Non-empty chunks read. */
  chunks: number;
}

/** Everything {@linkcode inspectState} found out about a stream. */
export interface StateSummary {
  /** The header; absent when it could not be read (not a state stream, truncated). */
  header?: StateHeader;
  /** Sections before END, in stream order, as far as the stream could be read. */
  sections: SectionSummary[];
  /** The METADATA document (parsed JSON), when present and valid JSON. */
  metadata?: unknown;
  /** Extent counts of the RAM_DISK section, when present and valid. */
  ramDisk?: ExtentTotals;
  /** True when END was read and the checksum, section count and end of stream verified. */
  checksumOk: boolean;
  /** Why the stream is invalid or unusable (first problem found); absent when it is fine. */
  error?: string;
  /** Bytes read from the stream. */
  totalBytes: number;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The disk size the metadata declares (identity.size), to bound extents. */
function declaredDiskSize(metadata: unknown): number {
  if (isObject(metadata) && isObject(metadata.identity)) {
    const size = metadata.identity.size;
    if (typeof size === "number" && Number.isSafeInteger(size) && size >= 0) return size;
  }
  return Number.MAX_SAFE_INTEGER;
}

/**
 * Optional observers of {@linkcode inspectState}'s pass over a stream (for
 * `state diff`, which indexes a file in the same pass). Nothing they are
 * given is trustworthy until the summary says `checksumOk`.
 */
export interface InspectObservers {
  /**
   * RAM disk data: `length` bytes for disk `diskOffset` lie, contiguous, at
   * `streamOffset` of the stream (a piece never spans two chunks).
   */
  onRamDiskData?: (diskOffset: number, length: number, streamOffset: number) => void;
  /** Payload of a section other than METADATA and RAM_DISK, in order, in pieces. */
  onOtherPayload?: (sectionIndex: number, piece: Uint8Array) => void;
}

/**
 * Reads `source` to its end and describes it. Never throws for bad data or
 * a failing fd: the problem is in `error`, and reading continues past content
 * problems (bad JSON, bad extents, unknown mandatory sections) so that the
 * checksum is still verified.
 */
export function inspectState(source: ByteSource, observers: InspectObservers = {}): StateSummary {
  const reader = new StateReader(source, { refuseUnknownMandatory: false });
  const summary: StateSummary = { sections: [], checksumOk: false, totalBytes: 0 };
  let contentError: string | undefined;
  const noteProblem = (message: string) => {
    contentError ??= message;
  };
  try {
    summary.header = reader.readHeader();
    for (let section = reader.nextSection(); section; section = reader.nextSection()) {
      const entry: SectionSummary = {
        type: section.type,
        name: section.name,
        mandatory: section.mandatory,
        bytes: 0,
        chunks: 0,
      };
      summary.sections.push(entry);
      try {
        if (section.type === SectionType.METADATA) {
          const document = readBounded(reader, METADATA_LIMIT);
          if (document === undefined) {
            noteProblem(`METADATA is longer than ${METADATA_LIMIT} bytes`);
          } else {
            try {
              summary.metadata = parseMetadata(document);
            } catch (error) {
              noteProblem(error instanceof Error ? error.message : String(error));
            }
          }
        } else if (section.type === SectionType.RAM_DISK) {
          const totals = readExtents(
            reader,
            declaredDiskSize(summary.metadata),
            noteProblem,
            observers.onRamDiskData,
          );
          if (totals !== undefined) summary.ramDisk = totals;
        } else {
          if (section.mandatory && !KNOWN_SECTION_TYPES.has(section.type)) {
            noteProblem(`unknown mandatory section type ${section.type}`);
          }
          const onPayload = observers.onOtherPayload;
          const index = summary.sections.length - 1;
          if (onPayload) reader.readChunks((piece) => onPayload(index, piece));
          else reader.skipSection();
        }
      } finally {
        const { bytes, chunks } = reader.sectionProgress;
        entry.bytes = bytes;
        entry.chunks = chunks;
      }
    }
    summary.checksumOk = true;
  } catch (error) {
    if (!(error instanceof StateFormatError || error instanceof StateStreamError)) throw error;
    summary.error = error.message;
  }
  summary.error ??= contentError;
  summary.totalBytes = reader.bytesConsumed;
  return summary;
}

/** The current section's payload, or undefined (having read past it) when longer than `limit`. */
function readBounded(reader: StateReader, limit: number): Uint8Array | undefined {
  const pieces: Uint8Array[] = [];
  let total = 0;
  reader.readChunks((piece) => {
    total += piece.length;
    if (total <= limit) pieces.push(piece.slice());
  });
  if (total > limit) return undefined;
  const whole = new Uint8Array(total);
  let at = 0;
  for (const piece of pieces) {
    whole.set(piece, at);
    at += piece.length;
  }
  return whole;
}

/** Validates the current RAM_DISK section; a bad extent is noted and the rest read past. */
function readExtents(
  reader: StateReader,
  size: number,
  noteProblem: (message: string) => void,
  onData: InspectObservers["onRamDiskData"],
): ExtentTotals | undefined {
  // Where the piece being parsed starts in the stream: data views are subarrays of it.
  let piece: Uint8Array | undefined;
  let pieceAt = 0;
  const parser = new ExtentParser(
    size,
    onData &&
      ((offset, bytes) =>
        onData(offset, bytes.length, pieceAt + bytes.byteOffset - piece!.byteOffset)),
  );
  let valid = true;
  const fail = (error: unknown) => {
    if (!(error instanceof StateFormatError)) throw error;
    valid = false;
    noteProblem(error.message);
  };
  reader.readChunks((chunkPiece) => {
    if (!valid) return;
    piece = chunkPiece;
    pieceAt = reader.bytesConsumed - chunkPiece.length;
    try {
      parser.push(chunkPiece);
    } catch (error) {
      fail(error);
    }
  });
  if (!valid) return undefined;
  try {
    return parser.finish();
  } catch (error) {
    fail(error);
    return undefined;
  }
}

function formatBytes(bytes: number): string {
  const units = ["KiB", "MiB", "GiB", "TiB"];
  if (bytes < 1024) return `${bytes} bytes`;
  let value = bytes;
  let unit = -1;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${bytes} bytes (${value.toFixed(1)} ${units[unit]})`;
}

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** Readable multi-line text for `vhostd state inspect`. */
export function formatSummary(summary: StateSummary): string {
  const lines: string[] = [];
  const header = summary.header;
  if (header === undefined) {
    lines.push("not a readable vhostd state stream");
  } else {
    lines.push(`vhostd state stream, format version ${header.formatVersion}`);
    lines.push(`  device kind:  ${header.kind}`);
    lines.push(`  fingerprint:  ${toHex(header.fingerprint)}`);
    lines.push(`  created at:   ${new Date(header.createdAt).toISOString()}`);
  }
  lines.push(`  total size:   ${formatBytes(summary.totalBytes)}`);
  lines.push(`  sections:     ${summary.sections.length} before END`);
  for (const section of summary.sections) {
    const kind = section.mandatory ? "mandatory" : "optional";
    let line = `    ${section.name.padEnd(10)} ${kind.padEnd(9)} ` +
      `${formatBytes(section.bytes)} in ${plural(section.chunks, "chunk")}`;
    if (section.type === SectionType.RAM_DISK && summary.ramDisk !== undefined) {
      line += `: ${plural(summary.ramDisk.extents, "extent")}, ` +
        `${formatBytes(summary.ramDisk.dataBytes)} of data`;
    } else if (!KNOWN_SECTION_TYPES.has(section.type)) {
      line += section.mandatory ? " (unknown: cannot be loaded)" : " (unknown: skipped)";
    }
    lines.push(line);
  }
  if (summary.metadata !== undefined) {
    lines.push("  metadata:");
    for (const line of JSON.stringify(summary.metadata, null, 2).split("\n")) {
      lines.push(`    ${line}`);
    }
  }
  lines.push(`  checksum:     ${summary.checksumOk ? "OK" : "NOT VERIFIED"}`);
  if (summary.error !== undefined) lines.push(`  error:        ${summary.error}`);
  return lines.join("\n");
}

/** Version of the `state inspect --json` document; raised when a field changes meaning or goes. */
export const INSPECT_JSON_SCHEMA_VERSION = 1;

/**
 * The summary as plain JSON data (fingerprint in hex, creation time in ISO
 * 8601): the `state inspect --json` document, whose fields README
 * "JSON output" documents.
 */
export function summaryToJson(summary: StateSummary): Record<string, unknown> {
  const header = summary.header;
  return {
    schemaVersion: INSPECT_JSON_SCHEMA_VERSION,
    header: header === undefined ? null : {
      formatVersion: header.formatVersion,
      kind: header.kind,
      fingerprint: toHex(header.fingerprint),
      createdAt: new Date(header.createdAt).toISOString(),
    },
    sections: summary.sections,
    metadata: summary.metadata ?? null,
    ramDisk: summary.ramDisk ?? null,
    checksumOk: summary.checksumOk,
    error: summary.error ?? null,
    totalBytes: summary.totalBytes,
  };
}
