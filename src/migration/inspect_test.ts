import assert from "node:assert/strict";
import { type ByteSource, MemorySink, MemorySource } from "./byte_stream.ts";
import { StateStreamError } from "./errors.ts";
import { fingerprint, toHex } from "./fingerprint.ts";
import { formatSummary, inspectState, summaryToJson } from "./inspect.ts";
import { SectionType } from "./state_format.ts";
import { StateWriter } from "./state_writer.ts";
import {
  SAMPLE_CREATED_AT,
  SAMPLE_IDENTITY,
  SAMPLE_STATE,
  sampleStream,
  streamParts,
  UNKNOWN_OPTIONAL_TYPE,
} from "./testdata/sample_stream.ts";

const stream = sampleStream();
const parts = streamParts(stream);

function payloadOf(type: number): { bytes: number; chunks: number } {
  const data = parts.filter((p) => p.kind === "chunk-data" && p.type === type);
  return { bytes: data.reduce((n, p) => n + p.end - p.start, 0), chunks: data.length };
}

function withSections(sections: { type: number; mandatory: boolean; chunk: Uint8Array }[]) {
  const sink = new MemorySink();
  const writer = new StateWriter(sink, { kind: "blk", identity: SAMPLE_IDENTITY });
  for (const { type, mandatory, chunk } of sections) {
    writer.beginSection(type, mandatory);
    writer.writeChunk(chunk);
    writer.endSection();
  }
  writer.finish();
  return sink.bytes().slice();
}

Deno.test("inspectState describes a good stream", () => {
  const summary = inspectState(new MemorySource(stream, 5000));
  assert.equal(summary.error, undefined);
  assert.equal(summary.checksumOk, true);
  assert.equal(summary.totalBytes, stream.length);
  assert.equal(summary.header?.kind, "blk");
  assert.equal(summary.header?.createdAt, SAMPLE_CREATED_AT);
  assert.deepEqual(summary.header?.fingerprint, fingerprint(SAMPLE_IDENTITY));
  assert.deepEqual(
    summary.sections.map((s) => [s.type, s.name, s.mandatory, s.bytes, s.chunks]),
    [
      [1, "METADATA", true, payloadOf(1).bytes, 1],
      [
        UNKNOWN_OPTIONAL_TYPE,
        `type ${UNKNOWN_OPTIONAL_TYPE}`,
        false,
        payloadOf(UNKNOWN_OPTIONAL_TYPE).bytes,
        2,
      ],
      [2, "RAM_DISK", true, payloadOf(2).bytes, payloadOf(2).chunks],
    ],
  );
  assert.deepEqual((summary.metadata as { state: unknown }).state, SAMPLE_STATE);
  // The sample's data rounded out to 4 KiB blocks, one extent per run per
  // 1 MiB read window: [0,4K) [8K,16K) [1M-4K,1M) | [1M,1M+4K) | [2M,2M+72K) | [4M-4K,4M).
  assert.deepEqual(summary.ramDisk, { extents: 6, dataBytes: (1 + 2 + 1 + 1 + 18 + 1) * 4096 });

  const text = formatSummary(summary);
  assert.match(text, /format version 1/);
  assert.match(text, /device kind: +blk/);
  assert.match(text, new RegExp(`fingerprint: +${toHex(fingerprint(SAMPLE_IDENTITY))}`));
  assert.match(text, /created at: +2023-11-14T22:13:20\.123Z/);
  assert.match(
    text,
    /RAM_DISK +mandatory .* in 4 chunks: 6 extents, 98304 bytes \(96\.0 KiB\) of data/,
  );
  assert.match(text, /type 17185 +optional .*\(unknown: skipped\)/);
  assert.match(text, /"generation": 7/);
  assert.match(text, /checksum: +OK/);
  assert.doesNotMatch(text, /error/);

  const json = JSON.parse(JSON.stringify(summaryToJson(summary)));
  assert.equal(json.header.fingerprint, toHex(fingerprint(SAMPLE_IDENTITY)));
  assert.equal(json.header.createdAt, "2023-11-14T22:13:20.123Z");
  assert.equal(json.checksumOk, true);
  assert.equal(json.error, null);
});

Deno.test("inspectState reports corrupt, truncated and foreign streams without throwing", () => {
  const flipped = stream.slice();
  const data = parts.find((p) => p.kind === "chunk-data" && p.type === SectionType.RAM_DISK)!;
  flipped[data.start + 40] ^= 1;
  const corrupt = inspectState(new MemorySource(flipped));
  assert.equal(corrupt.error, "checksum mismatch: stream is corrupt");
  assert.equal(corrupt.checksumOk, false);
  assert.equal(corrupt.sections.length, 3);
  assert.match(formatSummary(corrupt), /checksum: +NOT VERIFIED\n {2}error: +checksum mismatch/);

  const truncated = inspectState(new MemorySource(stream.subarray(0, data.start + 1000)));
  assert.equal(truncated.error, "stream truncated in section RAM_DISK");
  assert.equal(truncated.sections.at(-1)?.bytes, 1000);
  assert.equal(truncated.totalBytes, data.start + 1000);

  const foreign = inspectState(new MemorySource(new TextEncoder().encode("#!/bin/sh\necho hi\n")));
  assert.equal(foreign.header, undefined);
  assert.equal(foreign.error, "not a vhostd state stream (bad magic)");
  assert.match(formatSummary(foreign), /^not a readable vhostd state stream/);
  assert.equal(summaryToJson(foreign).header, null);
});

Deno.test("inspectState notes content problems yet still verifies the checksum", () => {
  const unknown = inspectState(
    new MemorySource(withSections([
      { type: 9, mandatory: true, chunk: new Uint8Array(3) },
    ])),
  );
  assert.equal(unknown.error, "unknown mandatory section type 9");
  assert.equal(unknown.checksumOk, true);
  assert.match(formatSummary(unknown), /type 9 +mandatory .*\(unknown: cannot be loaded\)/);

  const badJson = inspectState(
    new MemorySource(withSections([
      { type: SectionType.METADATA, mandatory: true, chunk: new TextEncoder().encode("{oops") },
    ])),
  );
  assert.match(badJson.error ?? "", /METADATA is not valid UTF-8 JSON/);
  assert.equal(badJson.checksumOk, true);
  assert.equal(badJson.metadata, undefined);

  const record = new Uint8Array(16 + 4);
  new DataView(record.buffer).setBigUint64(8, 4n, true);
  const twice = new Uint8Array([...record, ...record]);
  const badExtents = inspectState(
    new MemorySource(withSections([
      { type: SectionType.RAM_DISK, mandatory: true, chunk: twice },
    ])),
  );
  assert.match(badExtents.error ?? "", /overlaps or precedes/);
  assert.equal(badExtents.checksumOk, true);
  assert.equal(badExtents.ramDisk, undefined);
});

Deno.test("inspectState turns an fd failure into the error field", () => {
  let calls = 0;
  const failing: ByteSource = {
    read(into) {
      if (calls++ === 0) return new MemorySource(stream).read(into.subarray(0, 100));
      throw new StateStreamError("reading from state fd 9 failed: EIO");
    },
  };
  const summary = inspectState(failing);
  assert.equal(summary.error, "reading from state fd 9 failed: EIO");
  assert.equal(summary.checksumOk, false);
  assert.equal(summary.header?.kind, "blk");
});
