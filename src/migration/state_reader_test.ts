import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { closeFd } from "../../ffi/mod.ts";
import { MemorySink, MemorySource } from "./byte_stream.ts";
import { StateFormatError } from "./errors.ts";
import { fingerprint } from "./fingerprint.ts";
import {
  FORMAT_VERSION,
  HEADER_LENGTH,
  HeaderOffset,
  MAX_CHUNK_LENGTH,
  SectionType,
} from "./state_format.ts";
import { StateReader } from "./state_reader.ts";
import { StateWriter } from "./state_writer.ts";
import { loadStream } from "./testdata/load_stream.ts";
import {
  makeDisk,
  readAll,
  SAMPLE_CREATED_AT,
  SAMPLE_IDENTITY,
  SAMPLE_SIZE,
  SAMPLE_STATE,
  sampleStream,
  streamParts,
  UNKNOWN_OPTIONAL_TYPE,
} from "./testdata/sample_stream.ts";

const stream = sampleStream();
const parts = streamParts(stream);

function expectedDisk(): Uint8Array {
  const fd = makeDisk();
  try {
    return readAll(fd, SAMPLE_SIZE);
  } finally {
    closeFd(fd);
  }
}

const disk = expectedDisk();

function load(bytes: Uint8Array, maxRead?: number) {
  return loadStream(new MemorySource(bytes, maxRead));
}

function refusal(bytes: Uint8Array): string {
  try {
    load(bytes);
  } catch (error) {
    assert.ok(error instanceof StateFormatError, `expected StateFormatError, got ${error}`);
    return error.message;
  }
  assert.fail("the stream was accepted");
}

function modified(edit: (copy: Uint8Array, view: DataView) => void): Uint8Array {
  const copy = stream.slice();
  edit(copy, new DataView(copy.buffer));
  return copy;
}

function partsOf(kind: string, type?: number) {
  return parts.filter((p) => p.kind === kind && (type === undefined || p.type === type));
}

/** A stream with the given sections written by hand. */
function handmade(
  sections: { type: number; mandatory: boolean; chunks: Uint8Array[] }[],
): Uint8Array {
  const sink = new MemorySink();
  const writer = new StateWriter(sink, { kind: "blk", identity: SAMPLE_IDENTITY });
  writer.writeMetadata({ vhostd: "t", kind: "blk", identity: SAMPLE_IDENTITY, state: {} });
  for (const section of sections) {
    writer.beginSection(section.type, section.mandatory);
    for (const chunk of section.chunks) writer.writeChunk(chunk);
    writer.endSection();
  }
  writer.finish();
  return sink.bytes().slice();
}

function extent(offset: number, data: Uint8Array): Uint8Array {
  const record = new Uint8Array(16 + data.length);
  const view = new DataView(record.buffer);
  view.setBigUint64(0, BigInt(offset), true);
  view.setBigUint64(8, BigInt(data.length), true);
  record.set(data, 16);
  return record;
}

Deno.test("round trip: header, metadata, scattered RAM disk data, unknown optional section skipped", () => {
  const loaded = load(stream);
  assert.equal(loaded.header.kind, "blk");
  assert.equal(loaded.header.formatVersion, FORMAT_VERSION);
  assert.equal(loaded.header.createdAt, SAMPLE_CREATED_AT);
  assert.deepEqual(loaded.header.fingerprint, fingerprint(SAMPLE_IDENTITY));
  assert.deepEqual(loaded.metadata, {
    vhostd: "0.0.0-test",
    kind: "blk",
    identity: SAMPLE_IDENTITY,
    state: SAMPLE_STATE,
  });
  assert.deepEqual(loaded.skipped, [UNKNOWN_OPTIONAL_TYPE]);
  assert.equal(loaded.bytes, stream.length);
  assert.ok(loaded.disk.some((b) => b !== 0));
  assert.deepEqual(loaded.disk, disk);
});

Deno.test("the stream carries only data blocks, not the zero holes", () => {
  const dataChunks = partsOf("chunk-data", SectionType.RAM_DISK);
  const carried = dataChunks.reduce((sum, p) => sum + p.end - p.start, 0);
  // Five small extents rounded out to 4 KiB blocks: far less than the 4 MiB disk.
  assert.ok(carried < 128 * 1024, `RAM_DISK payload is ${carried} bytes`);
});

Deno.test("short reads of 7 bytes (and of 1) load the same state", () => {
  assert.deepEqual(load(stream, 7).disk, disk);
  assert.deepEqual(load(stream, 1).metadata?.state, SAMPLE_STATE);
});

Deno.test("END carries the CRC of everything before it and the section count", () => {
  const end = parts.find((p) => p.kind === "section" && p.type === SectionType.END)!;
  const view = new DataView(stream.buffer, stream.byteOffset);
  assert.equal(view.getUint16(end.start + 2, true), 1, "END is mandatory");
  assert.equal(view.getUint32(end.end, true), 8);
  assert.equal(view.getUint32(end.end + 4, true), crc32(stream.subarray(0, end.start)));
  assert.equal(view.getUint32(end.end + 8, true), 3);
  assert.equal(end.end + 16, stream.length, "END ends the stream");
});

Deno.test("refuses a stream that is not ours, or empty", () => {
  assert.equal(refusal(new Uint8Array(0)), "stream is empty");
  assert.equal(
    refusal(modified((b) => (b[0] = 0x7f))),
    "not a vhostd state stream (bad magic)",
  );
  assert.equal(
    refusal(new TextEncoder().encode('{"json": true}')),
    "not a vhostd state stream (bad magic)",
  );
  assert.equal(refusal(new TextEncoder().encode("VHO")), "stream truncated in the header");
});

Deno.test("refuses a newer format version with a clear message", () => {
  const newer = modified((_, v) => v.setUint16(HeaderOffset.FORMAT_VERSION, 7, true));
  assert.equal(refusal(newer), `format version 7 is newer than this vhostd (${FORMAT_VERSION})`);
  const zero = modified((_, v) => v.setUint16(HeaderOffset.FORMAT_VERSION, 0, true));
  assert.match(refusal(zero), /format version 0 is invalid/);
});

Deno.test("a longer header from a newer minor revision is skipped; a too short one refused", () => {
  const extra = new Uint8Array(24).fill(0xee);
  const longer = new Uint8Array(stream.length + extra.length);
  longer.set(stream.subarray(0, HEADER_LENGTH));
  longer.set(extra, HEADER_LENGTH);
  longer.set(stream.subarray(HEADER_LENGTH), HEADER_LENGTH + extra.length);
  const view = new DataView(longer.buffer);
  view.setUint16(HeaderOffset.HEADER_LENGTH, HEADER_LENGTH + extra.length, true);
  // The checksum covers the longer header: recompute END's CRC.
  const endStart = parts.find((p) => p.type === SectionType.END)!.start + extra.length;
  view.setUint32(endStart + 12, crc32(longer.subarray(0, endStart)), true);
  assert.deepEqual(load(longer).disk, disk);

  const shorter = modified((_, v) => v.setUint16(HeaderOffset.HEADER_LENGTH, 79, true));
  assert.match(refusal(shorter), /header length 79/);
});

Deno.test("refuses non-zero header flags, reserved header bytes, section flags and reserved", () => {
  assert.match(
    refusal(modified((_, v) => v.setUint32(HeaderOffset.FLAGS, 4, true))),
    /unknown header flags 0x4/,
  );
  assert.match(
    refusal(modified((b) => (b[HeaderOffset.RESERVED + 3] = 1))),
    /reserved header bytes are not zero/,
  );
  const ram = partsOf("section", SectionType.RAM_DISK)[0];
  assert.equal(
    refusal(modified((_, v) => v.setUint16(ram.start + 2, 0x3, true))),
    "section RAM_DISK has unknown flags 0x3: refusing the stream",
  );
  assert.match(
    refusal(modified((_, v) => v.setUint32(ram.start + 4, 1, true))),
    /section RAM_DISK has non-zero reserved bytes/,
  );
  const end = partsOf("section", SectionType.END)[0];
  assert.match(
    refusal(modified((_, v) => v.setUint16(end.start + 2, 0, true))),
    /END section header is malformed/,
  );
});

Deno.test("refuses an unknown mandatory section, skips an unknown optional one", () => {
  const mandatory = handmade([{ type: 9, mandatory: true, chunks: [new Uint8Array(5)] }]);
  assert.equal(refusal(mandatory), "unknown mandatory section type 9");
  const optional = handmade([{ type: 9, mandatory: false, chunks: [new Uint8Array(5)] }]);
  assert.deepEqual(load(optional).skipped, [9]);
});

Deno.test("refuses a chunk longer than 16 MiB before reading it", () => {
  const chunk = partsOf("chunk-length", SectionType.RAM_DISK)[0];
  const bytes = modified((_, v) => v.setUint32(chunk.start, MAX_CHUNK_LENGTH + 1, true));
  assert.match(refusal(bytes), /chunk length 16777217 in section RAM_DISK exceeds/);
});

Deno.test("refuses truncation at every section boundary and inside chunks", () => {
  const cuts = new Set<number>();
  for (const part of parts) {
    for (const at of [part.start, part.start + 1, (part.start + part.end) >> 1, part.end - 1]) {
      if (at < stream.length) cuts.add(at);
    }
  }
  for (let at = 0; at < HEADER_LENGTH + 20; at++) cuts.add(at);
  for (let at = stream.length - 24; at < stream.length; at++) cuts.add(at);
  assert.ok(cuts.size > 60);
  for (const cut of cuts) {
    const message = refusal(stream.subarray(0, cut));
    assert.match(message, cut === 0 ? /empty/ : /truncated/, `cut at ${cut}: ${message}`);
  }
  assert.match(
    refusal(stream.subarray(0, partsOf("chunk-data", SectionType.RAM_DISK)[0].start + 100)),
    /^stream truncated in section RAM_DISK$/,
  );
  assert.match(
    refusal(stream.subarray(0, partsOf("section", SectionType.END)[0].start)),
    /stream truncated after 3 sections \(no END section\)/,
  );
});

Deno.test("a flipped byte anywhere is refused (checksum or a specific error)", () => {
  const positions = new Set<number>();
  for (let at = 0; at < HEADER_LENGTH; at++) positions.add(at);
  for (const part of parts) {
    const step = Math.max(1, Math.floor((part.end - part.start) / 40));
    for (let at = part.start; at < part.end; at += step) positions.add(at);
  }
  const end = partsOf("section", SectionType.END)[0];
  for (let at = end.start; at < stream.length; at++) positions.add(at);
  let checksumRefusals = 0;
  for (const at of positions) {
    for (const mask of [0x01, 0x80]) {
      const message = refusal(modified((b) => (b[at] ^= mask)));
      if (message === "checksum mismatch: stream is corrupt") checksumRefusals++;
    }
  }
  // Most flips (data, JSON text, fingerprint) can only be caught by the CRC.
  assert.ok(checksumRefusals > positions.size / 2, `${checksumRefusals} of ${positions.size * 2}`);
  const metadataText = partsOf("chunk-data", SectionType.METADATA)[0];
  assert.equal(
    refusal(modified((b) => (b[metadataText.start + 5] ^= 0x02))),
    "checksum mismatch: stream is corrupt",
  );
});

Deno.test("a wrong section count in END is refused", () => {
  const end = partsOf("section", SectionType.END)[0];
  assert.match(
    refusal(modified((_, v) => v.setUint32(end.end + 8, 2, true))),
    /section count mismatch: END says 2, the stream has 3/,
  );
});

Deno.test("refuses trailing bytes after END", () => {
  const longer = new Uint8Array(stream.length + 1);
  longer.set(stream);
  assert.equal(refusal(longer), "trailing bytes after the END section: stream is corrupt");
});

Deno.test("refuses RAM_DISK extents out of order, overlapping, empty or beyond the disk", () => {
  const a = new Uint8Array(64).fill(0xaa);
  const ram = (chunks: Uint8Array[]) =>
    refusal(handmade([{ type: SectionType.RAM_DISK, mandatory: true, chunks }]));
  assert.match(
    ram([extent(8192, a), extent(4096, a)]),
    /extent at offset 4096 overlaps or precedes/,
  );
  assert.match(ram([extent(4096, a), extent(4096 + 63, a)]), /overlaps or precedes/);
  assert.match(ram([extent(0, new Uint8Array(0))]), /extent at offset 0 is empty/);
  assert.match(ram([extent(SAMPLE_SIZE - 10, a)]), /goes beyond the disk size 4194304/);
  const huge = extent(0, a);
  new DataView(huge.buffer).setBigUint64(0, 1n << 62n, true);
  assert.match(ram([huge]), /goes beyond the disk size/);
  assert.match(ram([extent(0, a).subarray(0, 40)]), /ends inside an extent/);
  // Adjacent extents, and records split across chunks, are fine.
  const ok = extent(0, a);
  const next = extent(64, a);
  const loaded = load(handmade([{
    type: SectionType.RAM_DISK,
    mandatory: true,
    chunks: [ok.subarray(0, 7), ok.subarray(7), next.subarray(0, 16), next.subarray(16)],
  }]));
  assert.deepEqual(loaded.disk.subarray(0, 129), new Uint8Array([...a, ...a, 0]));
});

Deno.test("reader misuse is a plain Error, and a failed reader keeps failing", () => {
  const reader = new StateReader(new MemorySource(stream));
  assert.throws(() => reader.nextSection(), /readHeader\(\) first/);
  reader.readHeader();
  assert.throws(() => reader.readChunks(() => {}), /no section is open/);
  const section = reader.nextSection();
  assert.equal(section?.name, "METADATA");
  assert.throws(() => reader.nextSection(), /was not consumed/);
  assert.throws(() => reader.readRamDiskInto(-1, 10), /not RAM_DISK/);

  const broken = new StateReader(new MemorySource(stream.subarray(0, 100)));
  broken.readHeader();
  broken.nextSection();
  assert.throws(() => broken.skipSection(), /truncated in section METADATA/);
  assert.throws(() => broken.nextSection(), /truncated in section METADATA/);
});

Deno.test("readWhole refuses a section over its limit; progress reports bytes read", () => {
  const seen: number[] = [];
  const reader = new StateReader(new MemorySource(stream, 1000), {
    onProgress: (n) => seen.push(n),
  });
  reader.readHeader();
  reader.nextSection();
  assert.throws(() => reader.readWhole(10), /section METADATA is longer than its 10-byte limit/);
  assert.ok(seen.length >= 1);
  assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]));

  const full = new StateReader(new MemorySource(stream, 4096), {
    onProgress: (n) => seen.push(n),
  });
  full.readHeader();
  for (let s = full.nextSection(); s; s = full.nextSection()) full.skipSection();
  assert.equal(seen.at(-1), stream.length);
  assert.ok(full.verified);
  assert.equal(full.sectionCount, 3);
  assert.equal(full.nextSection(), undefined, "stays at the end");
});
