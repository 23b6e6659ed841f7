import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { closeFd, ftruncate, memfdCreate, pipe2, setPipeSize } from "../../ffi/mod.ts";
import { type ByteSink, FdSink, FdSource, MemorySink, MemorySource } from "./byte_stream.ts";
import { MAX_CHUNK_LENGTH, SectionType } from "./state_format.ts";
import { StateReader } from "./state_reader.ts";
import { StateWriter } from "./state_writer.ts";
import { loadStream } from "./testdata/load_stream.ts";
import {
  makeDisk,
  pattern,
  readAll,
  SAMPLE_EXTENTS,
  SAMPLE_IDENTITY,
  SAMPLE_SIZE,
  streamParts,
  writeAt,
} from "./testdata/sample_stream.ts";

const header = { kind: "blk", identity: SAMPLE_IDENTITY, createdAt: 5 };

function ramDiskStream(fd: number, size: number, opts = {}): Uint8Array {
  const sink = new MemorySink();
  const writer = new StateWriter(sink, { kind: "blk", identity: SAMPLE_IDENTITY });
  writer.writeMetadata({ vhostd: "t", kind: "blk", identity: SAMPLE_IDENTITY, state: {} });
  writer.writeRamDiskFromFd(fd, size, opts);
  writer.finish();
  return sink.bytes().slice();
}

Deno.test("writeChunk splits payloads longer than 16 MiB", () => {
  const sink = new MemorySink();
  const writer = new StateWriter(sink, header);
  writer.beginSection(0x100, false);
  const big = new Uint8Array(MAX_CHUNK_LENGTH + 5);
  big[MAX_CHUNK_LENGTH] = 0xab;
  writer.writeChunk(big);
  writer.writeChunk(new Uint8Array(0)); // no chunk: a 0-length one would end the section
  writer.endSection();
  const { bytes } = writer.finish();
  const parts = streamParts(sink.bytes());
  const lengths = parts.filter((p) => p.kind === "chunk-data" && p.type === 0x100)
    .map((p) => p.end - p.start);
  assert.deepEqual(lengths, [MAX_CHUNK_LENGTH, 5]);
  assert.equal(bytes, sink.length);
  const reader = new StateReader(new MemorySource(sink.bytes()));
  reader.readHeader();
  reader.nextSection();
  assert.deepEqual(reader.readWhole(MAX_CHUNK_LENGTH + 5), big);
  assert.deepEqual(reader.sectionProgress, { bytes: MAX_CHUNK_LENGTH + 5, chunks: 2 });
  assert.equal(reader.nextSection(), undefined);
});

Deno.test("finish reports the stream length and the CRC of everything before END", () => {
  const sink = new MemorySink();
  const progress: number[] = [];
  const writer = new StateWriter(sink, header, { onProgress: (n) => progress.push(n) });
  writer.writeMetadata({ vhostd: "t", kind: "blk", identity: SAMPLE_IDENTITY, state: { x: 1 } });
  const { bytes, crc } = writer.finish();
  const all = sink.bytes();
  assert.equal(bytes, all.length);
  assert.equal(crc, crc32(all.subarray(0, all.length - 24)));
  assert.equal(progress.at(-1), bytes);
  assert.equal(writer.bytesWritten, bytes);
});

Deno.test("RAM disk: zero blocks are not sent, and small options give the same disk", () => {
  const fd = makeDisk();
  try {
    const expected = readAll(fd, SAMPLE_SIZE);
    const stream = ramDiskStream(fd, SAMPLE_SIZE);
    assert.deepEqual(loadStream(new MemorySource(stream)).disk, expected);
    const fine = ramDiskStream(fd, SAMPLE_SIZE, { chunkSize: 8192, zeroBlockSize: 64 });
    assert.ok(fine.length < stream.length, "finer zero detection sends less");
    assert.deepEqual(loadStream(new MemorySource(fine)).disk, expected);
    const coarse = ramDiskStream(fd, SAMPLE_SIZE, {
      chunkSize: 8 * 1024 * 1024,
      zeroBlockSize: 1024 * 1024,
    });
    assert.deepEqual(loadStream(new MemorySource(coarse)).disk, expected);
  } finally {
    closeFd(fd);
  }
});

Deno.test("RAM disk: an all-zero disk has an empty section; a short file counts as zeros", () => {
  const fd = memfdCreate("zeros");
  try {
    ftruncate(fd, SAMPLE_SIZE);
    const stream = ramDiskStream(fd, SAMPLE_SIZE);
    const ram = streamParts(stream).filter((p) => p.type === SectionType.RAM_DISK);
    assert.deepEqual(ram.map((p) => p.kind), ["section", "terminator"]);
    assert.ok(loadStream(new MemorySource(stream)).disk.every((b) => b === 0));

    // Data in the first MiB only, file shorter than the disk.
    ftruncate(fd, 0);
    const [offset, length, seed] = SAMPLE_EXTENTS[1];
    writeAt(fd, pattern(length, seed), offset);
    const short = loadStream(new MemorySource(ramDiskStream(fd, SAMPLE_SIZE))).disk;
    assert.deepEqual(short.subarray(offset, offset + length), pattern(length, seed));
    assert.equal(short.subarray(offset + length).some((b) => b !== 0), false);
  } finally {
    closeFd(fd);
  }
});

Deno.test("RAM disk data goes by splice into a pipe and by write into a file: the same stream", () => {
  const disk = makeDisk();
  const file = memfdCreate("stream-file");
  const [readEnd, writeEnd] = pipe2();
  try {
    const write = (sink: ByteSink) => {
      const writer = new StateWriter(sink, header);
      writer.writeMetadata({ vhostd: "t", kind: "blk", identity: SAMPLE_IDENTITY, state: {} });
      writer.writeRamDiskFromFd(disk, SAMPLE_SIZE);
      return writer.finish();
    };
    const memory = new MemorySink();
    const expected = write(memory);
    assert.ok(expected.bytes < 1024 * 1024, "the stream fits the pipe: no reader needed");
    setPipeSize(writeEnd, 1024 * 1024);
    const spliced: { n: number }[] = [];
    const pipeSink = new FdSink(writeEnd);
    const spliceFrom = pipeSink.spliceFrom.bind(pipeSink);
    pipeSink.spliceFrom = (fd, offset, length) => {
      spliced.push({ n: length });
      return spliceFrom(fd, offset, length);
    };
    assert.deepEqual(write(pipeSink), expected);
    assert.ok(spliced.length > 0, "large data pieces were spliced");
    const fromPipe = new Uint8Array(expected.bytes);
    const source = new FdSource(readEnd);
    for (let n = 0; n < fromPipe.length;) n += source.read(fromPipe.subarray(n));
    assert.deepEqual(fromPipe, memory.bytes());
    // A memfd sink cannot take a splice from the disk (no pipe): the writer writes instead.
    assert.deepEqual(write(new FdSink(file)), expected);
    assert.deepEqual(readAll(file, expected.bytes), memory.bytes());
  } finally {
    closeFd(disk);
    closeFd(file);
    closeFd(readEnd);
    closeFd(writeEnd);
  }
});

Deno.test("writer misuse is refused", () => {
  const writer = new StateWriter(new MemorySink(), header);
  assert.throws(() => writer.writeChunk(new Uint8Array(1)), /no section is open/);
  assert.throws(() => writer.endSection(), /no section is open/);
  assert.throws(() => writer.beginSection(0, true), RangeError);
  assert.throws(() => writer.beginSection(SectionType.END, true), RangeError);
  assert.throws(
    () => writer.writeMetadata({ vhostd: "t", kind: "fs", identity: SAMPLE_IDENTITY, state: {} }),
    /kind fs differs/,
  );
  assert.throws(
    () => writer.writeMetadata({ vhostd: "t", kind: "blk", identity: { size: 1 }, state: {} }),
    /identity differs/,
  );
  assert.throws(() => writer.writeRamDiskFromFd(-1, 10, { chunkSize: 1000 }), /chunkSize/);
  assert.throws(() => writer.writeRamDiskFromFd(-1, 10, { zeroBlockSize: 12 }), /zeroBlockSize/);
  writer.beginSection(7, false);
  assert.throws(() => writer.beginSection(8, false), /section type 7 is still open/);
  assert.throws(() => writer.finish(), /still open/);
  writer.endSection();
  writer.finish();
  assert.throws(() => writer.beginSection(8, false), /already finished/);
  assert.throws(
    () => new StateWriter(new MemorySink(), { kind: "no spaces", identity: {} }),
    RangeError,
  );
  assert.throws(
    () => new StateWriter(new MemorySink(), { kind: "blk", identity: { n: 1n } }),
    TypeError,
  );
});

Deno.test("a failing sink poisons the writer; a failing pread is a StateStreamError", () => {
  let writes = 0;
  const failure = new Error("disk full");
  const sink: ByteSink = {
    write() {
      if (++writes > 1) throw failure;
    },
  };
  const writer = new StateWriter(sink, header);
  writer.beginSection(7, false);
  writer.writeChunk(new Uint8Array(100)); // buffered
  assert.throws(() => writer.writeChunk(new Uint8Array(100_000)), /disk full/);
  assert.throws(() => writer.endSection(), /disk full/);
  assert.throws(() => writer.finish(), /disk full/);

  const other = new StateWriter(new MemorySink(), header);
  assert.throws(() => other.writeRamDiskFromFd(-1, 4096), {
    name: "StateStreamError",
    message: /reading the RAM disk failed: pread failed: EBADF/,
  });
});
