/**
 * Helpers for the device-state integration tests: running the `vhostd` CLI,
 * moving state streams between a test and a back-end, looking inside a
 * stream (sections, metadata) and corrupting it on purpose, and waiting for
 * a back-end log line.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { closeQuietly, isErrno, pipe2, readFd, writeFd } from "../../ffi/mod.ts";
import {
  inspectState,
  MemorySink,
  MemorySource,
  type StateSummary,
  StateWriter,
} from "../../src/migration/mod.ts";
import {
  bit,
  DeviceStateDirection,
  DeviceStatePhase,
  ProtocolFeature,
  VirtioFeature,
} from "../../src/protocol/mod.ts";
import {
  BlkDriver,
  DEFAULT_PROTOCOL_FEATURES,
  loadDeviceState,
  saveDeviceState,
  type StateTransferResult,
  type VhostUserClient,
} from "../../src/frontend/mod.ts";
import { SECTOR_SIZE } from "../../src/devices/blk/blk_spec.ts";
import type { VhostdProcess } from "./vhostd_process.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));

/** Protocol features of a test front-end that moves state and reads the configuration. */
export const STATE_PROTOCOL_FEATURES: bigint = DEFAULT_PROTOCOL_FEATURES |
  bit(ProtocolFeature.DEVICE_STATE);

/** Byte offset of the creation time in a state header (state_format.ts). */
const CREATED_AT_OFFSET = 64;
/**
 * Offset of END's CRC from the end of the stream (END is the last 24 bytes:
 * section header 8, chunk length 4, CRC 4, section count 4, terminator 4).
 */
const CRC_FROM_END = 12;

/** What a finished `vhostd` command printed and returned. */
export interface CliResult {
  /** Exit code (undefined when it had to be killed after the time limit). */
  code: number | undefined;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
  /** How long it ran, in ms. */
  ms: number;
}

/**
 * Runs `deno run -A main.ts ARGS`; kills it after `timeoutMs` (then `code`
 * is undefined). Never throws for a failing command.
 */
export async function runVhostdCli(args: string[], timeoutMs = 20_000): Promise<CliResult> {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, timeoutMs);
  try {
    const out = await child.output();
    const decoder = new TextDecoder();
    return {
      code: killed ? undefined : out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      ms: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The hand-shake a VMM does before moving state: features, owner, and the
 * protocol features `wanted` (default: DEVICE_STATE, REPLY_ACK, CONFIG...).
 * No memory, no rings.
 */
export function negotiateForState(
  client: VhostUserClient,
  wanted: bigint = STATE_PROTOCOL_FEATURES,
): void {
  const features = client.getFeatures();
  if ((features & bit(VirtioFeature.PROTOCOL_FEATURES)) === 0n) {
    throw new Error("back-end offers no protocol features");
  }
  client.setOwner();
  client.setProtocolFeatures(client.getProtocolFeatures() & wanted);
}

/** SAVE into memory; returns the stream. */
export function saveToBytes(client: VhostUserClient): Uint8Array {
  const sink = new MemorySink();
  saveDeviceState(client, sink);
  return sink.bytes().slice();
}

/** LOAD `bytes`; throws BackendRefused when CHECK_DEVICE_STATE reports failure. */
export function loadFromBytes(client: VhostUserClient, bytes: Uint8Array): StateTransferResult {
  return loadDeviceState(client, new MemorySource(bytes));
}

/** The stream with its creation time and checksum zeroed: equal for equal device states. */
export function normalized(stream: Uint8Array): Uint8Array {
  const copy = stream.slice();
  copy.fill(0, CREATED_AT_OFFSET, CREATED_AT_OFFSET + 8);
  copy.fill(0, copy.length - CRC_FROM_END, copy.length - CRC_FROM_END + 4);
  return copy;
}

/** `inspect` of a stream held in memory. */
export function summaryOf(stream: Uint8Array): StateSummary {
  return inspectState(new MemorySource(stream));
}

/** The METADATA document of a valid stream. */
export interface TestMetadata {
  /** vhostd version that saved it. */
  vhostd: string;
  /** Device kind. */
  kind: string;
  /** The fingerprinted configuration (blk: size, readOnly, backing, serial, ...). */
  identity: Record<string, unknown>;
  /** blk state: negotiated features (hex), writeback, counters (decimal strings). */
  state: { features: string; writeback: boolean; counters: Record<string, string> };
}

/** The METADATA of a stream that must be valid (throws otherwise). */
export function metadataOf(stream: Uint8Array): TestMetadata {
  const summary = summaryOf(stream);
  if (summary.error !== undefined || !summary.checksumOk) {
    throw new Error(`not a valid state stream: ${summary.error}`);
  }
  return summary.metadata as TestMetadata;
}

/** Where one section sits in a stream. */
export interface SectionLayout {
  /** Section type. */
  type: number;
  /** Offset of its 8-byte header. */
  offset: number;
  /** Its non-empty chunks: offset of the payload and its length. */
  chunks: { offset: number; length: number }[];
  /** Offset just past its terminating 0-length chunk. */
  end: number;
}

/** The sections of a well-formed stream, END included (for aiming corruptions). */
export function sectionLayout(stream: Uint8Array): SectionLayout[] {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  let at = view.getUint16(10, true); // header length
  const sections: SectionLayout[] = [];
  while (at < stream.length) {
    const section: SectionLayout = {
      type: view.getUint16(at, true),
      offset: at,
      chunks: [],
      end: 0,
    };
    at += 8;
    for (;;) {
      const length = view.getUint32(at, true);
      at += 4;
      if (length === 0) break;
      section.chunks.push({ offset: at, length });
      at += length;
    }
    section.end = at;
    sections.push(section);
  }
  return sections;
}

/**
 * A well-formed stream (valid checksum) with only a METADATA section, for a
 * device that may not exist: another kind, another configuration, a state
 * the device refuses.
 */
export function craftStream(
  kind: string,
  identity: Record<string, unknown>,
  state: Record<string, unknown>,
): Uint8Array {
  const sink = new MemorySink();
  const writer = new StateWriter(sink, { kind, identity });
  writer.writeMetadata({ vhostd: "test", kind, identity, state });
  writer.finish();
  return sink.bytes().slice();
}

/** A copy of `stream` with the byte at `offset` inverted. */
export function flipped(stream: Uint8Array, offset: number): Uint8Array {
  const copy = stream.slice();
  copy[offset] ^= 0xff;
  return copy;
}

/** Counters of `after` minus those of `before` (only the non-zero differences). */
export function counterDelta(before: TestMetadata, after: TestMetadata): Record<string, bigint> {
  const delta: Record<string, bigint> = {};
  const names = new Set([
    ...Object.keys(before.state.counters),
    ...Object.keys(after.state.counters),
  ]);
  for (const name of names) {
    const d = BigInt(after.state.counters[name] ?? "0") -
      BigInt(before.state.counters[name] ?? "0");
    if (d !== 0n) delta[name] = d;
  }
  return delta;
}

/** One range written to a disk by {@linkcode scatterWrites}. */
export interface WrittenRange {
  /** First sector. */
  sector: number;
  /** The bytes written there. */
  data: Uint8Array;
}

/** `length` random bytes. */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += 65536) {
    crypto.getRandomValues(out.subarray(at, Math.min(length, at + 65536)));
  }
  return out;
}

/** Where {@linkcode scatterWrites} writes. */
export interface ScatterOptions {
  /** Number of pieces spread evenly over the disk. */
  count: number;
  /** Bytes of each piece (a multiple of 512). */
  pieceSize: number;
  /** Sectors added to every piece's place, to keep a second set clear of the first. */
  offsetSectors?: number;
  /** Also write 3 sectors at sector 1 (not 4 KiB aligned) and the disk's last piece. */
  edges?: boolean;
}

/**
 * Writes random data at places spread over a disk of `diskSize` bytes (odd
 * pieces start 3 sectors off the 4 KiB grid). Returns what was written where.
 */
export function scatterWrites(
  driver: BlkDriver,
  diskSize: number,
  options: ScatterOptions,
): WrittenRange[] {
  const sectors = diskSize / SECTOR_SIZE;
  const pieceSectors = options.pieceSize / SECTOR_SIZE;
  const stride = Math.floor(sectors / options.count);
  const ranges: WrittenRange[] = [];
  if (options.edges) {
    ranges.push({ sector: 1, data: randomBytes(3 * SECTOR_SIZE) });
    ranges.push({ sector: sectors - pieceSectors, data: randomBytes(options.pieceSize) });
  }
  for (let i = 0; i < options.count; i++) {
    const sector = 64 + (options.offsetSectors ?? 0) + i * stride + (i % 2) * 3;
    if (sector + pieceSectors > sectors - (options.edges ? pieceSectors : 0)) {
      throw new RangeError(`piece ${i} at sector ${sector} does not fit the disk`);
    }
    ranges.push({ sector, data: randomBytes(options.pieceSize) });
  }
  for (const range of ranges) {
    const done = driver.write(0, range.sector, range.data);
    if (done.status !== 0) {
      throw new Error(`write at sector ${range.sector}: status ${done.status}`);
    }
  }
  return ranges;
}

/** Reads every range back (in 256 KiB requests) and returns the first mismatch, if any. */
export function firstMismatch(driver: BlkDriver, ranges: WrittenRange[]): string | undefined {
  const step = 256 * 1024;
  for (const range of ranges) {
    for (let at = 0; at < range.data.length; at += step) {
      const want = range.data.subarray(at, Math.min(range.data.length, at + step));
      const sector = range.sector + at / SECTOR_SIZE;
      const got = driver.read(0, sector, want.length);
      if (got.status !== 0) return `read at sector ${sector}: status ${got.status}`;
      const data = got.data!;
      for (let i = 0; i < want.length; i++) {
        if (data[i] !== want[i]) return `byte ${i} of the read at sector ${sector} differs`;
      }
    }
  }
  return undefined;
}

function matches(line: string, needle: string | RegExp): boolean {
  return typeof needle === "string" ? line.includes(needle) : needle.test(line);
}

/** Number of lines of the back-end log that contain (or match) `needle`. */
export function countLogLines(vhostd: VhostdProcess, needle: string | RegExp): number {
  return vhostd.log().split("\n").filter((line) => matches(line, needle)).length;
}

/**
 * Waits (up to `timeoutMs`) for more than `already` log lines containing
 * (or matching) `needle` and returns the newest; throws with the log when
 * none comes.
 */
export async function nextLogLine(
  vhostd: VhostdProcess,
  needle: string | RegExp,
  already: number,
  timeoutMs = 3000,
): Promise<string> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const lines = vhostd.log().split("\n").filter((line) => matches(line, needle));
    if (lines.length > already) return lines[lines.length - 1];
    if (performance.now() > deadline) {
      throw new Error(`no new log line with ${needle} in ${timeoutMs} ms:\n${vhostd.log()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A pipe as [read end, write end] (blocking, close-on-exec). */
export function openPipe(): [number, number] {
  return pipe2();
}

/** Closes every fd given (ignoring -1 and errors). */
export function closeAll(...fds: number[]): void {
  for (const fd of fds) if (fd >= 0) closeQuietly(fd);
}

/** Writes all of `bytes` to a blocking fd; returns false when the reader went away (EPIPE). */
export function writeAll(fd: number, bytes: Uint8Array): boolean {
  let at = 0;
  while (at < bytes.length) {
    try {
      at += writeFd(fd, bytes.subarray(at));
    } catch (e) {
      if (isErrno(e, "EPIPE")) return false;
      throw e;
    }
  }
  return true;
}

/** Reads exactly `length` bytes (fewer at end of stream) from a blocking fd. */
export function readSome(fd: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  while (at < length) {
    const n = readFd(fd, out.subarray(at));
    if (n === 0) break;
    at += n;
  }
  return out.subarray(0, at);
}

/** SAVE direction / STOPPED phase, spelled out for SET_DEVICE_STATE_FD calls in tests. */
export const SAVE = DeviceStateDirection.SAVE;
/** LOAD direction. */
export const LOAD = DeviceStateDirection.LOAD;
/** The only phase vhostd supports. */
export const STOPPED = DeviceStatePhase.STOPPED;
