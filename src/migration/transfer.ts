/**
 * One device-state transfer, run synchronously (inside a transfer Worker, or
 * directly by a tool): SAVE writes a device snapshot as a state stream to an
 * fd; LOAD reads a stream from an fd into staging resources and verifies it
 * completely before reporting the device state it carries.
 *
 * Both directions can copy the stream to a file as it passes (the daemon's
 * `--dump-state DIR`), without holding it in memory.
 *
 * `opts.wait` makes the waits on a non-blocking fd cancellable and bounded
 * (byte_stream.ts); the transfer Worker always uses it.
 *
 * @module
 */

import { closeQuietly, O_CLOEXEC, O_CREAT, O_TRUNC, O_WRONLY, openFile } from "../../ffi/mod.ts";
import type { DeviceSnapshot, LoadStaging } from "../devices/device.ts";
import {
  type ByteSink,
  type ByteSource,
  FdSink,
  FdSource,
  type FdWaitOptions,
} from "./byte_stream.ts";
import { StateFormatError } from "./errors.ts";
import { checkDeviceMatch, parseMetadata, type StateMetadata } from "./metadata.ts";
import { METADATA_LIMIT, SectionType } from "./state_format.ts";
import { StateReader } from "./state_reader.ts";
import { StateWriter } from "./state_writer.ts";
import { UringStager } from "./ram_disk_stager.ts";
import { SpliceStager } from "./splice_stager.ts";
import { fingerprint } from "./fingerprint.ts";

/** Which device a stream belongs to. */
export interface DeviceDescription {
  /** Device kind ("blk"). */
  kind: string;
  /** The fingerprinted configuration. */
  identity: Record<string, unknown>;
  /** vhostd version string recorded in METADATA. */
  vhostd: string;
}

/** Progress callback: bytes moved so far. */
export type ProgressCallback = (bytes: number) => void;

/** Counts of a finished transfer. */
export interface TransferTotals {
  /** Stream bytes written or read. */
  bytes: number;
  /** Milliseconds the transfer took. */
  ms: number;
}

/** A sink that also copies everything into a second sink (the dump file). */
class TeeSink implements ByteSink {
  constructor(readonly first: ByteSink, readonly second: ByteSink) {}
  write(bytes: Uint8Array): void {
    this.first.write(bytes);
    this.second.write(bytes);
  }
}

/** A source that copies everything it reads into a sink (the dump file). */
class TeeSource implements ByteSource {
  constructor(readonly source: ByteSource, readonly copy: ByteSink) {}
  read(into: Uint8Array): number {
    const n = this.source.read(into);
    if (n > 0) this.copy.write(into.subarray(0, n));
    return n;
  }
}

function openDump(path: string | undefined): number | undefined {
  if (path === undefined) return undefined;
  return openFile(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600);
}

/** Writes `snapshot` of the device as a state stream to `fd` (not closed here). */
export function saveState(
  fd: number,
  device: DeviceDescription,
  snapshot: DeviceSnapshot,
  opts: { dumpPath?: string; onProgress?: ProgressCallback; wait?: FdWaitOptions } = {},
): TransferTotals {
  const started = performance.now();
  const dumpFd = openDump(opts.dumpPath);
  try {
    const sink: ByteSink = dumpFd === undefined
      ? new FdSink(fd, opts.wait)
      : new TeeSink(new FdSink(fd, opts.wait), new FdSink(dumpFd));
    const writer = new StateWriter(sink, { kind: device.kind, identity: device.identity }, {
      onProgress: opts.onProgress,
    });
    writer.writeMetadata({
      vhostd: device.vhostd,
      kind: device.kind,
      identity: device.identity,
      state: snapshot.state,
    });
    if (snapshot.ramDisk) writer.writeRamDiskFromFd(snapshot.ramDisk.fd, snapshot.ramDisk.size);
    const { bytes } = writer.finish();
    return { bytes, ms: performance.now() - started };
  } finally {
    if (dumpFd !== undefined) closeQuietly(dumpFd);
  }
}

/** What a verified LOAD produced. */
export interface LoadResult extends TransferTotals {
  /** The verified METADATA. */
  metadata: StateMetadata;
}

/**
 * Reads a state stream from `fd` (not closed here) into `staging`, and
 * returns its metadata only once the whole stream was read and its checksum
 * verified. Throws StateFormatError (bad stream, wrong device) or
 * StateStreamError (I/O); `staging` then holds garbage and must be discarded.
 */
export function loadState(
  fd: number,
  device: DeviceDescription,
  staging: LoadStaging,
  opts: { dumpPath?: string; onProgress?: ProgressCallback; wait?: FdWaitOptions } = {},
): LoadResult {
  const started = performance.now();
  const dumpFd = openDump(opts.dumpPath);
  try {
    const source: ByteSource = dumpFd === undefined
      ? new FdSource(fd, opts.wait)
      : new TeeSource(new FdSource(fd, opts.wait), new FdSink(dumpFd));
    const reader = new StateReader(source, { onProgress: opts.onProgress });
    const header = reader.readHeader();
    const expected = { kind: device.kind, identity: device.identity };
    if (header.kind !== device.kind) checkDeviceMatch(header, expected);
    const fingerprintMatches = sameBytes(header.fingerprint, fingerprint(device.identity));
    let metadataBytes: Uint8Array | undefined;
    let ramDiskSeen = false;
    for (let section = reader.nextSection(); section; section = reader.nextSection()) {
      if (section.type === SectionType.METADATA) {
        if (metadataBytes !== undefined) throw new StateFormatError("two METADATA sections");
        metadataBytes = reader.readWhole(METADATA_LIMIT);
        // Explain a configuration mismatch now, before a large RAM section is read.
        if (!fingerprintMatches) checkDeviceMatch(header, expected, parseMetadata(metadataBytes));
      } else if (section.type === SectionType.RAM_DISK) {
        if (!staging.ramDisk) {
          throw new StateFormatError(
            `a ${device.kind} device of this configuration has no RAM disk`,
          );
        }
        if (ramDiskSeen) throw new StateFormatError("two RAM_DISK sections");
        ramDiskSeen = true;
        // Straight from the state fd to staging, unless a dump copy must see every byte:
        // written by io_uring's worker meanwhile, or else spliced in (one copy, not two).
        const { fd: stagingFd, size } = staging.ramDisk;
        const stager = dumpFd === undefined
          ? UringStager.tryCreate(source, stagingFd) ??
            SpliceStager.tryCreate(source, stagingFd, size)
          : undefined;
        try {
          reader.readRamDiskInto(stagingFd, size, stager);
        } finally {
          stager?.close();
        }
      } else {
        reader.skipSection();
      }
    }
    if (metadataBytes === undefined) {
      throw new StateFormatError("the stream has no METADATA section");
    }
    const metadata = parseMetadata(metadataBytes);
    checkDeviceMatch(header, expected, metadata);
    return { metadata, bytes: reader.bytesConsumed, ms: performance.now() - started };
  } finally {
    if (dumpFd !== undefined) closeQuietly(dumpFd);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
