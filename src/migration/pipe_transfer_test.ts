/**
 * The stream through a real pipe, as SET_DEVICE_STATE_FD carries it: a Worker
 * saves, the main thread loads. Also prints throughput for a 256 MiB RAM
 * disk of random data (measured, not asserted).
 */

import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import {
  closeFd,
  closeQuietly,
  fstat,
  ftruncate,
  memfdCreate,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  openFile,
  pipe2,
  pread,
} from "../../ffi/mod.ts";
import {
  type ByteSource,
  CountingSink,
  FdSink,
  FdSource,
  MemorySink,
  MemorySource,
} from "./byte_stream.ts";
import { StateFormatError, StateStreamError } from "./errors.ts";
import { probeIoUring } from "../io/open_engine.ts";
import { UringStager } from "./ram_disk_stager.ts";
import { SpliceStager, WINDOW_LENGTH } from "./splice_stager.ts";
import { SectionType } from "./state_format.ts";
import { StateReader } from "./state_reader.ts";
import { StateWriter } from "./state_writer.ts";
import { loadStream } from "./testdata/load_stream.ts";
import {
  makeDisk,
  readAll,
  SAMPLE_IDENTITY,
  SAMPLE_SIZE,
  writeAt,
} from "./testdata/sample_stream.ts";
import type { SaveJob, SaveReport } from "./testdata/save_worker.ts";

const MiB = 1024 * 1024;

/** Starts the save Worker and resolves once it is ready for a job. */
async function startSaver(): Promise<Worker> {
  const worker = new Worker(new URL("./testdata/save_worker.ts", import.meta.url), {
    type: "module",
  });
  await new Promise<void>((resolve, reject) => {
    worker.onmessage = () => resolve();
    worker.onerror = (event) => reject(new Error(event.message));
  });
  return worker;
}

/** Posts `job` (the Worker takes ownership of job.pipeFd); resolves with its report. */
function save(worker: Worker, job: SaveJob): Promise<SaveReport> {
  const report = new Promise<SaveReport>((resolve) => {
    worker.onmessage = (event: MessageEvent<SaveReport>) => resolve(event.data);
  });
  worker.postMessage(job);
  return report;
}

async function transferSample(pipeFlags: number): Promise<void> {
  const disk = makeDisk();
  const [readEnd, writeEnd] = pipe2(pipeFlags);
  const worker = await startSaver();
  try {
    const report = save(worker, {
      pipeFd: writeEnd,
      diskFd: disk,
      size: SAMPLE_SIZE,
      identity: SAMPLE_IDENTITY,
    });
    const loaded = loadStream(new FdSource(readEnd));
    const { bytes, error } = await report;
    assert.equal(error, undefined);
    assert.equal(loaded.bytes, bytes);
    assert.deepEqual(loaded.disk, readAll(disk, SAMPLE_SIZE));
  } finally {
    worker.terminate();
    closeFd(readEnd);
    closeFd(disk);
  }
}

Deno.test("a Worker saves into a blocking pipe, the main thread loads from it", async () => {
  await transferSample(O_CLOEXEC);
});

Deno.test("the same through a non-blocking pipe (EAGAIN waits in poll)", async () => {
  await transferSample(O_CLOEXEC | O_NONBLOCK);
});

Deno.test("a saver that stops mid-stream gives the loader a truncation error", async () => {
  const disk = makeDisk();
  const [readEnd, writeEnd] = pipe2();
  const worker = await startSaver();
  try {
    const report = save(worker, {
      pipeFd: writeEnd,
      diskFd: disk,
      size: SAMPLE_SIZE,
      identity: SAMPLE_IDENTITY,
      stopAfter: 70_000,
    });
    assert.throws(
      () => loadStream(new FdSource(readEnd)),
      (error) => error instanceof StateFormatError && /truncated/.test(error.message),
    );
    assert.equal((await report).error, "stopped");
  } finally {
    worker.terminate();
    closeFd(readEnd);
    closeFd(disk);
  }
});

/** A memfd of `size` bytes of random data (1 MiB of randomness, stamped per MiB). */
function randomDisk(size: number): number {
  const fd = memfdCreate("random-disk");
  ftruncate(fd, size);
  const block = new Uint8Array(MiB);
  for (let at = 0; at < MiB; at += 65536) crypto.getRandomValues(block.subarray(at, at + 65536));
  const stamp = new DataView(block.buffer);
  for (let at = 0; at < size; at += MiB) {
    stamp.setFloat64(0, at, true);
    writeAt(fd, block.subarray(0, Math.min(MiB, size - at)), at);
  }
  return fd;
}

/** CRC-32 of the first `size` bytes of `fd`, read in 1 MiB pieces. */
function crcOf(fd: number, size: number): number {
  const buffer = new Uint8Array(MiB);
  let crc = 0;
  for (let at = 0; at < size; at += MiB) {
    const n = pread(fd, buffer.subarray(0, Math.min(MiB, size - at)), at);
    crc = crc32(buffer.subarray(0, n), crc);
  }
  return crc;
}

function rate(bytes: number, ms: number): string {
  return `${(bytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`;
}

const uringReason = probeIoUring();

/**
 * Loads a RAM-disk stream from `source` into a fresh memfd (through the
 * io_uring stager, as LOAD does, unless `stager` is false); returns it.
 */
function loadInto(source: ByteSource, size: number, stager: StagerKind = "uring"): number {
  const staging = memfdCreate("staging");
  ftruncate(staging, size);
  try {
    const moved = loadIntoFd(source, staging, size, stager);
    if (stager === "splice" || (stager === "uring" && uringReason === undefined)) {
      assert.ok(moved > size / 2, `most data went through the stager (${moved} bytes)`);
    }
  } catch (error) {
    closeFd(staging);
    throw error;
  }
  return staging;
}

/** Which direct data path a test load uses (false: none, the reader's own pwrites). */
type StagerKind = "uring" | "splice" | false;

/** Loads into `staging`; returns the bytes the stager moved. */
function loadIntoFd(
  source: ByteSource,
  staging: number,
  size: number,
  stager: StagerKind,
): number {
  let moved = 0;
  const reader = new StateReader(source);
  reader.readHeader();
  for (let section = reader.nextSection(); section; section = reader.nextSection()) {
    if (section.type !== SectionType.RAM_DISK) {
      reader.skipSection();
      continue;
    }
    const direct = stager === "uring"
      ? UringStager.tryCreate(source, staging)
      : stager === "splice"
      ? SpliceStager.tryCreate(source, staging, size)
      : undefined;
    if (stager === "splice") assert.ok(direct, "the splice stager takes a pipe");
    try {
      reader.readRamDiskInto(staging, size, direct);
    } finally {
      moved += direct?.bytesMoved ?? 0;
      direct?.close();
    }
  }
  return moved;
}

/** A whole stream of `disk` in memory. */
function streamOf(disk: number, size: number): Uint8Array {
  const sink = new MemorySink();
  const writer = new StateWriter(sink, { kind: "blk", identity: { size } });
  writer.writeRamDiskFromFd(disk, size);
  writer.finish();
  return sink.bytes().slice();
}

Deno.test({
  name:
    "the io_uring stager: slots reused many times, short reads, the same disk; a truncated stream still fails",
  ignore: uringReason !== undefined,
  fn: async () => {
    const size = 24 * MiB + 4096 * 3; // the last extent is not a whole slot
    const disk = randomDisk(size);
    const [readEnd, writeEnd] = pipe2();
    const worker = await startSaver();
    try {
      const expected = crcOf(disk, size);
      // Through a pipe from a Worker, as a LOAD gets it.
      const report = save(worker, { pipeFd: writeEnd, diskFd: disk, size, identity: { size } });
      const piped = loadInto(new FdSource(readEnd), size);
      assert.equal((await report).error, undefined);
      assert.equal(crcOf(piped, size), expected);
      closeFd(piped);
      // Reads of a few thousand bytes at a time: a slot takes several.
      const stream = streamOf(disk, size);
      const small = loadInto(new MemorySource(stream, 3000), size);
      assert.equal(crcOf(small, size), expected);
      closeFd(small);
      // Cut in the middle of the data: the reader notices, the stager's writes are waited for.
      assert.throws(
        () => loadInto(new MemorySource(stream.subarray(0, 10 * MiB + 77)), size),
        (e) => e instanceof StateFormatError && /truncated/.test(e.message),
      );
      // Small extents (a sparse disk: 8 KiB of data every 64 KiB) go the ordinary way.
      const sparseSize = 16 * MiB;
      const extents: [number, number, number][] = [];
      for (let at = 0; at < sparseSize; at += 65536) extents.push([at, 8192, at / 65536 + 1]);
      const sparseDisk = makeDisk(sparseSize, extents);
      const staged = memfdCreate("staging");
      try {
        ftruncate(staged, sparseSize);
        const sparse = streamOf(sparseDisk, sparseSize);
        const moved = loadIntoFd(new MemorySource(sparse, 50_000), staged, sparseSize, "uring");
        assert.equal(moved, 0, "no small extent went through the stager");
        assert.equal(crcOf(staged, sparseSize), crcOf(sparseDisk, sparseSize));
      } finally {
        closeFd(staged);
        closeFd(sparseDisk);
      }
      // Large extents with holes between: staged through the stager, the holes stay holes.
      const holesSize = 32 * MiB;
      const holesDisk = makeDisk(holesSize, [[0, 3 * MiB, 1], [20 * MiB, 9 * MiB, 2]]);
      const holesStaged = memfdCreate("staging");
      try {
        ftruncate(holesStaged, holesSize);
        const holes = streamOf(holesDisk, holesSize);
        const moved = loadIntoFd(new MemorySource(holes, 70_000), holesStaged, holesSize, "uring");
        assert.ok(moved >= 10 * MiB, `the large extents went through the stager (${moved})`);
        assert.equal(crcOf(holesStaged, holesSize), crcOf(holesDisk, holesSize));
        assert.equal(fstat(holesStaged).blocks * 512, 12 * MiB, "only the extents are allocated");
      } finally {
        closeFd(holesStaged);
        closeFd(holesDisk);
      }
      // Corrupt data still fails the checksum, though it went straight to staging.
      const flipped = stream.slice();
      flipped[5 * MiB] ^= 0x40;
      assert.throws(
        () => loadInto(new MemorySource(flipped), size),
        (e) => e instanceof StateFormatError && /checksum mismatch/.test(e.message),
      );
    } finally {
      worker.terminate();
      closeFd(readEnd);
      closeFd(disk);
    }
  },
});

Deno.test({
  name: "the io_uring stager: a staging write that fails is a StateStreamError with its errno",
  ignore: uringReason !== undefined,
  fn: () =>
    withReadOnlyStaging((stream, readOnly, size) => {
      assert.throws(
        () => loadIntoFd(new MemorySource(stream, 200_000), readOnly, size, "uring"),
        (e) => e instanceof StateStreamError && /EBADF/.test(e.message),
      );
    }),
});

/**
 * Runs `body` with the stream of a 4 MiB random disk and a read-only fd of
 * a staging memfd (every write to it fails with EBADF).
 */
async function withReadOnlyStaging(
  body: (stream: Uint8Array, readOnly: number, size: number) => void | Promise<void>,
): Promise<void> {
  const size = 4 * MiB;
  const disk = randomDisk(size);
  const staging = memfdCreate("staging");
  ftruncate(staging, size);
  const readOnly = openFile(`/proc/self/fd/${staging}`, O_RDONLY | O_CLOEXEC);
  try {
    await body(streamOf(disk, size), readOnly, size);
  } finally {
    closeFd(readOnly);
    closeFd(staging);
    closeFd(disk);
  }
}

/** Writes `bytes` into a new pipe from a Worker; resolves the read end's loader result. */
async function feedThroughPipe<T>(bytes: Uint8Array, load: (source: FdSource) => T): Promise<T> {
  const [readEnd, writeEnd] = pipe2();
  const worker = new Worker(new URL("./testdata/pipe_feeder.ts", import.meta.url), {
    type: "module",
  });
  const done = new Promise<void>((resolve, reject) => {
    worker.onmessage = () => resolve();
    worker.onerror = (event) => reject(new Error(event.message));
  });
  try {
    worker.postMessage({ pipeFd: writeEnd, bytes });
    try {
      return load(new FdSource(readEnd));
    } finally {
      closeFd(readEnd); // a writer still blocked on a refused stream gets EPIPE
      await done;
    }
  } finally {
    worker.terminate();
  }
}

Deno.test("the splice stager: a disk larger than its checksum window arrives whole through a pipe, spliced", async () => {
  const size = WINDOW_LENGTH + 6 * MiB + 4096 * 3; // the window moves; the last piece is short
  const disk = randomDisk(size);
  const [readEnd, writeEnd] = pipe2();
  const worker = await startSaver();
  try {
    const report = save(worker, { pipeFd: writeEnd, diskFd: disk, size, identity: { size } });
    const staging = memfdCreate("staging");
    try {
      ftruncate(staging, size);
      const moved = loadIntoFd(new FdSource(readEnd), staging, size, "splice");
      assert.equal((await report).error, undefined);
      // Not every byte: an extent's tail under 64 KiB, left by a short splice, is read the
      // ordinary way together with the rest of its chunk (how much depends on the pipe's pace).
      assert.ok(moved > size / 2, `most bytes were spliced (${moved} of ${size})`);
      assert.equal(crcOf(staging, size), crcOf(disk, size));
    } finally {
      closeFd(staging);
    }
  } finally {
    worker.terminate();
    closeFd(readEnd);
    closeFd(disk);
  }
});

Deno.test("the splice stager: corrupt spliced data fails the checksum, a cut stream fails as truncated, sparse disks load", async () => {
  const size = 12 * MiB;
  const disk = randomDisk(size);
  try {
    const stream = streamOf(disk, size);
    const flipped = stream.slice();
    flipped[7 * MiB + 5] ^= 0x01;
    await feedThroughPipe(flipped, (source) => {
      assert.throws(
        () => loadInto(source, size, "splice"),
        (e) => e instanceof StateFormatError && /checksum mismatch/.test(e.message),
      );
    });
    await feedThroughPipe(stream.subarray(0, 5 * MiB + 333), (source) => {
      assert.throws(
        () => loadInto(source, size, "splice"),
        (e) => e instanceof StateFormatError && /truncated/.test(e.message),
      );
    });
    // Data extents of every size: small ones are read, large ones spliced, the result the same.
    const sparseSize = 16 * MiB;
    const extents: [number, number, number][] = [];
    for (let at = 0, i = 1; at < sparseSize; at += 2 * MiB, i++) {
      extents.push([at, i % 2 === 0 ? 8192 : MiB + 4096 * i, i]);
    }
    const sparseDisk = makeDisk(sparseSize, extents);
    try {
      const staged = memfdCreate("staging");
      try {
        ftruncate(staged, sparseSize);
        const moved = await feedThroughPipe(
          streamOf(sparseDisk, sparseSize),
          (source) => loadIntoFd(source, staged, sparseSize, "splice"),
        );
        assert.ok(moved >= MiB, `the large extents were spliced (${moved} bytes)`);
        assert.equal(crcOf(staged, sparseSize), crcOf(sparseDisk, sparseSize));
      } finally {
        closeFd(staged);
      }
    } finally {
      closeFd(sparseDisk);
    }
  } finally {
    closeFd(disk);
  }
});

Deno.test("the splice stager: a staging fd that refuses writes is a StateStreamError with its errno", () =>
  withReadOnlyStaging((stream, readOnly, size) =>
    feedThroughPipe(stream, (source) => {
      assert.throws(
        () => loadIntoFd(source, readOnly, size, "splice"),
        (e) => e instanceof StateStreamError && /EBADF/.test(e.message),
      );
    })
  ));

Deno.test("the splice stager only takes a pipe: not a memory source, not a regular file", () => {
  const file = memfdCreate("not-a-pipe");
  try {
    assert.equal(SpliceStager.tryCreate(new MemorySource(new Uint8Array(8)), file, MiB), undefined);
    assert.equal(SpliceStager.tryCreate(new FdSource(file), file, MiB), undefined);
    const [readEnd, writeEnd] = pipe2();
    try {
      assert.ok(SpliceStager.tryCreate(new FdSource(readEnd), file, MiB) instanceof SpliceStager);
    } finally {
      closeFd(readEnd);
      closeFd(writeEnd);
    }
  } finally {
    closeFd(file);
  }
});

Deno.test("throughput of a 256 MiB random RAM disk (printed, not asserted)", async () => {
  const size = 256 * MiB;
  const identity = { size };
  const disk = randomDisk(size);
  const expectedCrc = crcOf(disk, size);
  const fds: number[] = [];
  const worker = await startSaver();
  try {
    // Save alone: memfd -> stream, bytes discarded.
    let started = performance.now();
    const counter = new CountingSink();
    const writer = new StateWriter(counter, { kind: "blk", identity });
    writer.writeRamDiskFromFd(disk, size);
    writer.finish();
    const saveMs = performance.now() - started;

    // Load alone: stream stored in a memfd -> staging memfd.
    const file = memfdCreate("stream-file");
    fds.push(file);
    const fileWriter = new StateWriter(new FdSink(file), { kind: "blk", identity });
    fileWriter.writeRamDiskFromFd(disk, size);
    const streamBytes = fileWriter.finish().bytes;
    const loadRates: string[] = [];
    for (let run = 0; run < 2; run++) {
      const fileReader = openFile(`/proc/self/fd/${file}`, O_RDONLY | O_CLOEXEC);
      fds.push(fileReader);
      started = performance.now();
      const staged = loadInto(new FdSource(fileReader), size);
      loadRates.push(rate(size, performance.now() - started));
      fds.push(staged);
      assert.equal(crcOf(staged, size), expectedCrc);
      closeFd(fds.pop()!);
      closeFd(fds.pop()!);
    }

    // Both at once through a pipe: a Worker saves, this thread loads.
    const pipeRates: string[] = [];
    for (let run = 0; run < 2; run++) {
      const [readEnd, writeEnd] = pipe2();
      fds.push(readEnd);
      started = performance.now();
      const report = save(worker, { pipeFd: writeEnd, diskFd: disk, size, identity });
      const piped = loadInto(new FdSource(readEnd), size);
      pipeRates.push(rate(size, performance.now() - started));
      fds.push(piped);
      const { error } = await report;
      assert.equal(error, undefined);
      assert.equal(crcOf(piped, size), expectedCrc);
      closeFd(fds.pop()!);
      closeFd(fds.pop()!);
    }

    // The first run of each also pays for the kernel (and, in a VM, the
    // host) providing fresh pages to the staging memfd; the second reuses them.
    console.log(
      `256 MiB random RAM disk, stream ${streamBytes} bytes:\n` +
        `  save (memfd -> discarding sink):          ${rate(size, saveMs)}\n` +
        `  load (stream file -> fresh staging memfd): ${loadRates.join(", then ")}\n` +
        `  pipe (Worker saves, main thread loads):    ${pipeRates.join(", then ")}`,
    );
  } finally {
    worker.terminate();
    for (const fd of fds) closeQuietly(fd);
    closeFd(disk);
  }
});
