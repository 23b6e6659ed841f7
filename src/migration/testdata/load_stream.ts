/**
 * Test helper: loads a stream the way a device would (staging memfd, apply
 * nothing until END is verified) and returns what it found.
 *
 * @module
 */

import { closeFd, ftruncate, memfdCreate } from "../../../ffi/mod.ts";
import type { ByteSource } from "../byte_stream.ts";
import { checkDeviceMatch, parseMetadata, type StateMetadata } from "../metadata.ts";
import { METADATA_LIMIT, SectionType } from "../state_format.ts";
import { type StateHeader, StateReader } from "../state_reader.ts";
import { readAll, SAMPLE_IDENTITY, SAMPLE_SIZE } from "./sample_stream.ts";

/** What a successful load produced. */
export interface Loaded {
  /** The header. */
  header: StateHeader;
  /** The METADATA document. */
  metadata: StateMetadata | undefined;
  /** The staged disk contents. */
  disk: Uint8Array;
  /** Types of the optional sections that were skipped. */
  skipped: number[];
  /** Bytes consumed. */
  bytes: number;
}

/** Loads a stream for a blk device of `size` bytes with `identity`; throws what the reader throws. */
export function loadStream(
  source: ByteSource,
  size: number = SAMPLE_SIZE,
  identity: Record<string, unknown> = SAMPLE_IDENTITY,
): Loaded {
  const staging = memfdCreate("staging");
  try {
    ftruncate(staging, size);
    const reader = new StateReader(source);
    const header = reader.readHeader();
    checkDeviceMatch(header, { kind: "blk", identity });
    let metadataBytes: Uint8Array | undefined;
    const skipped: number[] = [];
    for (let section = reader.nextSection(); section; section = reader.nextSection()) {
      if (section.type === SectionType.METADATA) {
        metadataBytes = reader.readWhole(METADATA_LIMIT);
      } else if (section.type === SectionType.RAM_DISK) {
        reader.readRamDiskInto(staging, size);
      } else {
        skipped.push(section.type);
        reader.skipSection();
      }
    }
    // Verified: now the content can be trusted and checked.
    let metadata: StateMetadata | undefined;
    if (metadataBytes !== undefined) {
      metadata = parseMetadata(metadataBytes);
      checkDeviceMatch(header, { kind: "blk", identity }, metadata);
    }
    return { header, metadata, disk: readAll(staging, size), skipped, bytes: reader.bytesConsumed };
  } finally {
    closeFd(staging);
  }
}
