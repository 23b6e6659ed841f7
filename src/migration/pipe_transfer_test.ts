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
  ftruncate,
  memfdCreate,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  openFile,
  pipe2,
  pread,
} from "../../ffi/mod.ts";
import { CountingSink, FdSink, FdSource } from "./byte_stream.ts";
import { StateFormatError } from "./errors.ts";
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

/** Loads a RAM-disk stream from `source` into a fresh memfd; returns it. */
function loadInto(source: FdSource, size: number): number {
  const staging = memfdCreate("staging");
  ftruncate(staging, size);
  const reader = new StateReader(source);
  reader.readHeader();
  for (let section = reader.nextSection(); section; section = reader.nextSection()) {
    if (section.type === SectionType.RAM_DISK) reader.readRamDiskInto(staging, size);
    else reader.skipSection();
  }
  return staging;
}

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
