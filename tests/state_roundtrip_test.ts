/**
 * Device-state round trips between real vhostd processes: SAVE → file →
 * LOAD with the `vhostd state` CLI, and back-end to back-end through pipes
 * pumped by the TypeScript front-end, with vhostd's own pipe on either side.
 * A RAM disk moves its contents; two back-ends on one image file move only
 * metadata (writeback setting, counters). Also: a SAVE changes nothing.
 */

import assert from "node:assert/strict";
import { BlkConfigOffset, SECTOR_SIZE } from "../src/devices/blk/blk_spec.ts";
import {
  BlkDriver,
  loadDeviceState,
  saveDeviceState,
  SharedGuestMemory,
  VhostUserClient,
} from "../src/frontend/mod.ts";
import {
  type ByteSink,
  type ByteSource,
  FdSink,
  FdSource,
  MemorySink,
} from "../src/migration/mod.ts";
import { BlkFixture, makeImage } from "./support/blk_fixture.ts";
import {
  closeAll,
  counterDelta,
  firstMismatch,
  LOAD,
  loadFromBytes,
  metadataOf,
  negotiateForState,
  normalized,
  openPipe,
  runVhostdCli,
  SAVE,
  saveToBytes,
  scatterWrites,
  STATE_PROTOCOL_FEATURES,
  STOPPED,
  summaryOf,
  type WrittenRange,
} from "./support/state_tools.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const MiB = 2 ** 20;
const RAM_SIZE = 256 * MiB;
const MEMORY_SIZE = 8 * MiB;

/** Copies what it reads into a sink: keeps the stream that went from one back-end to the other. */
class TeeSource implements ByteSource {
  constructor(readonly source: ByteSource, readonly copy: MemorySink) {}
  read(into: Uint8Array): number {
    const n = this.source.read(into);
    this.copy.write(into.subarray(0, n));
    return n;
  }
}

/** Writes to two sinks. */
class TeeSink implements ByteSink {
  constructor(readonly first: ByteSink, readonly second: MemorySink) {}
  write(bytes: Uint8Array): void {
    this.first.write(bytes);
    this.second.write(bytes);
  }
}

/** A negotiated connection with no rings (the destination side of a VMM before its start sequence). */
function stateClient(vhostd: VhostdProcess): VhostUserClient {
  const client = VhostUserClient.connect(vhostd.socketPath);
  try {
    negotiateForState(client);
    return client;
  } catch (e) {
    client.close();
    throw e;
  }
}

/** The writeback byte of the configuration space. */
function writebackByte(client: VhostUserClient): number {
  return client.getConfig(BlkConfigOffset.writeback, 1)[0];
}

/** Starts a BlkDriver on an already negotiated connection (as QEMU does after a LOAD). */
function startDriver(client: VhostUserClient, memory: SharedGuestMemory): BlkDriver {
  return BlkDriver.setup(client, memory, {
    numQueues: 1,
    queueSize: 64,
    protocolFeatures: STATE_PROTOCOL_FEATURES,
  });
}

/** Sectors no write touched read as zeros. */
function assertHolesAreZero(driver: BlkDriver, sectors: number[]): void {
  for (const sector of sectors) {
    const got = driver.read(0, sector, 4096);
    assert.equal(got.status, 0);
    assert.deepEqual(got.data, new Uint8Array(4096), `sector ${sector} should be a zero hole`);
  }
}

/**
 * SAVE on `src` into the front-end's pipe, pumped into a LOAD on `dst`
 * (through whatever pipe `dst` wants); returns the stream that went across.
 */
function pumpSaveIntoLoad(src: VhostUserClient, dst: VhostUserClient): {
  stream: Uint8Array;
  dstOwnPipe: boolean;
} {
  const copy = new MemorySink();
  let [readEnd, writeEnd] = openPipe();
  try {
    assert.equal(src.setDeviceStateFd(SAVE, STOPPED, writeEnd), undefined, "src uses our pipe");
    closeAll(writeEnd);
    writeEnd = -1;
    const result = loadDeviceState(dst, new TeeSource(new FdSource(readEnd), copy));
    src.checkDeviceState();
    return { stream: copy.bytes().slice(), dstOwnPipe: result.backendPipe };
  } finally {
    closeAll(readEnd, writeEnd);
  }
}

/**
 * LOAD on `dst` from the front-end's pipe, fed by a SAVE on `src` (through
 * whatever pipe `src` wants); returns the stream that went across.
 */
function pumpLoadFromSave(src: VhostUserClient, dst: VhostUserClient): {
  stream: Uint8Array;
  srcOwnPipe: boolean;
} {
  const copy = new MemorySink();
  let [readEnd, writeEnd] = openPipe();
  try {
    assert.equal(dst.setDeviceStateFd(LOAD, STOPPED, readEnd), undefined, "dst uses our pipe");
    closeAll(readEnd);
    readEnd = -1;
    const result = saveDeviceState(src, new TeeSink(new FdSink(writeEnd), copy));
    closeAll(writeEnd);
    writeEnd = -1;
    dst.checkDeviceState();
    return { stream: copy.bytes().slice(), srcOwnPipe: result.backendPipe };
  } finally {
    closeAll(readEnd, writeEnd);
  }
}

const HOLES = [40, 100_000, 300_000, 500_000];

/** 1. CLI: A → file → B; B then holds exactly A's state. Returns what was written to A. */
async function cliRoundTrip(
  dir: string,
  a: VhostdProcess,
  b: VhostdProcess,
): Promise<WrittenRange[]> {
  let first: WrittenRange[];
  {
    using s = BlkFixture.open(a.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
    first = scatterWrites(s.driver, RAM_SIZE, { count: 12, pieceSize: 256 * 1024, edges: true });
  }
  const file = `${dir}/a.vhostd-state`;
  const saved = await runVhostdCli(["state", "save", "--socket-path", a.socketPath, "-o", file]);
  assert.equal(saved.code, 0, saved.stderr);
  const fileBytes = await Deno.readFile(file);
  const summary = summaryOf(fileBytes);
  assert.equal(summary.error, undefined);
  assert.deepEqual(summary.sections.map((s) => s.name), ["METADATA", "RAM_DISK"]);
  const written = first.reduce((n, r) => n + r.data.length, 0);
  // Zero holes are not in the stream: about the 3 MiB written, not 256 MiB.
  assert.ok(summary.ramDisk!.dataBytes >= written, "every written byte is in the stream");
  assert.ok(summary.ramDisk!.dataBytes < written + 32 * 4096, "holes are left out");
  assert.ok(fileBytes.length < 4 * MiB, `stream is ${fileBytes.length} bytes`);

  const loaded = await runVhostdCli(["state", "load", "--socket-path", b.socketPath, "-i", file]);
  assert.equal(loaded.code, 0, loaded.stderr);
  const client = stateClient(b);
  try {
    // Saving B again gives A's stream: contents, features, writeback and counters moved.
    assert.deepEqual(normalized(saveToBytes(client)), normalized(fileBytes));
  } finally {
    client.close();
  }
  using s = BlkFixture.open(b.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  assert.equal(s.driver.config.capacity, RAM_SIZE / SECTOR_SIZE);
  assert.equal(firstMismatch(s.driver, first), undefined);
  assertHolesAreZero(s.driver, HOLES);
  return first;
}

Deno.test("RAM disk 256 MiB: CLI save → file → load, then back-end to back-end through pipes (own pipe on either side)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-state-rt-" });
  const ram = ["--ram", "256M"];
  try {
    await withVhostd(
      { args: ram },
      (a) =>
        withVhostd(
          { args: ram },
          (b) =>
            withVhostd({ args: [...ram, "--own-state-pipe"] }, async (c) => {
              const first = await cliRoundTrip(dir, a, b);

              // 2. A (front-end's pipe) → C (own pipe), on the connection that did the I/O.
              using aSession = BlkFixture.open(a.socketPath, {
                protocolFeatures: STATE_PROTOCOL_FEATURES,
              });
              const second = scatterWrites(aSession.driver, RAM_SIZE, {
                count: 12,
                pieceSize: 128 * 1024,
                offsetSectors: 10_000,
              });
              aSession.driver.setWriteback(false);
              assert.equal(aSession.driver.flush(0).status, 0);
              aSession.driver.stopQueue(0);
              const cClient = stateClient(c);
              const cMemory = SharedGuestMemory.create({ size: MEMORY_SIZE });
              const bClient = stateClient(b);
              const bMemory = SharedGuestMemory.create({ size: MEMORY_SIZE });
              try {
                const aToC = pumpSaveIntoLoad(aSession.client, cClient);
                assert.equal(aToC.dstOwnPipe, true, "C hands back its own pipe");
                assert.equal(writebackByte(cClient), 0, "writeback setting moved");
                const aState = metadataOf(aToC.stream).state;
                assert.equal(aState.writeback, false);
                assert.ok(BigInt(aState.counters.writes) >= BigInt(first.length + second.length));
                assert.deepEqual(normalized(saveToBytes(cClient)), normalized(aToC.stream));
                // C goes through the start sequence; the loaded state survives it.
                const cDriver = startDriver(cClient, cMemory);
                assert.equal(
                  cDriver.config.writeback,
                  false,
                  "writeback survives the start sequence",
                );
                assert.equal(firstMismatch(cDriver, [...first, ...second]), undefined);
                assertHolesAreZero(cDriver, HOLES);

                // 3. C (own pipe) → B (front-end's pipe).
                const third = scatterWrites(cDriver, RAM_SIZE, {
                  count: 6,
                  pieceSize: 64 * 1024,
                  offsetSectors: 20_000,
                });
                cDriver.stopQueue(0);
                const cToB = pumpLoadFromSave(cClient, bClient);
                assert.equal(cToB.srcOwnPipe, true, "C hands back its own pipe");
                assert.equal(writebackByte(bClient), 0);
                assert.deepEqual(normalized(saveToBytes(bClient)), normalized(cToB.stream));
                const bDriver = startDriver(bClient, bMemory);
                assert.equal(bDriver.config.writeback, false);
                assert.equal(firstMismatch(bDriver, [...first, ...second, ...third]), undefined);
                assertHolesAreZero(bDriver, HOLES);
                bDriver.close();
                cDriver.close();
              } finally {
                cClient.close();
                cMemory.close();
                bClient.close();
                bMemory.close();
              }
            }),
        ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("file disk: two back-ends on one image move only metadata (writeback, counters), directly and with the CLI", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-state-file-" });
  const image = `${dir}/disk.img`;
  const diskSize = 16 * MiB;
  try {
    await makeImage(image, diskSize, 3);
    await withVhostd(
      { args: ["--file", image] },
      (src) =>
        withVhostd({ args: ["--file", image, "--own-state-pipe"] }, async (dst) => {
          // Direct, on the connection that did the I/O (as QEMU would).
          let ranges: WrittenRange[];
          let srcStream: Uint8Array;
          {
            using s = BlkFixture.open(src.socketPath, {
              protocolFeatures: STATE_PROTOCOL_FEATURES,
            });
            ranges = scatterWrites(s.driver, diskSize, {
              count: 6,
              pieceSize: 64 * 1024,
              edges: true,
            });
            assert.equal(s.driver.flush(0).status, 0);
            s.driver.setWriteback(false);
            assert.equal(s.driver.read(0, 0, 4096).status, 0);
            s.driver.stopQueue(0);
            srcStream = saveToBytes(s.client);
          }
          const summary = summaryOf(srcStream);
          assert.deepEqual(summary.sections.map((s) => s.name), ["METADATA"], "no disk contents");
          assert.ok(srcStream.length < 4096, `stream is ${srcStream.length} bytes`);
          const meta = metadataOf(srcStream);
          assert.equal(meta.identity.backing, "file");
          assert.equal(meta.state.writeback, false);
          assert.equal(meta.state.counters.writes, String(ranges.length));
          assert.equal(meta.state.counters.flushes, "1");
          assert.equal(meta.state.counters.reads, "1");

          const dstClient = stateClient(dst);
          const memory = SharedGuestMemory.create({ size: MEMORY_SIZE });
          try {
            assert.equal(writebackByte(dstClient), 1, "the destination starts in writeback mode");
            const result = loadFromBytes(dstClient, srcStream);
            assert.equal(result.backendPipe, true);
            assert.equal(writebackByte(dstClient), 0, "writeback setting moved");
            assert.deepEqual(normalized(saveToBytes(dstClient)), normalized(srcStream));
            const driver = startDriver(dstClient, memory);
            assert.equal(driver.config.writeback, false);
            // The data is in the shared image, not in the state.
            assert.equal(firstMismatch(driver, ranges), undefined);
            driver.close();
          } finally {
            dstClient.close();
            memory.close();
          }

          // Through the CLI: a file of metadata only, the image left alone.
          const imageBefore = await Deno.readFile(image);
          const file = `${dir}/src.vhostd-state`;
          const saved = await runVhostdCli([
            "state",
            "save",
            "--socket-path",
            src.socketPath,
            "-o",
            file,
          ]);
          assert.equal(saved.code, 0, saved.stderr);
          const fileBytes = await Deno.readFile(file);
          const fileMeta = metadataOf(fileBytes);
          // The source's counters carried on across its connections.
          assert.deepEqual(counterDelta(meta, fileMeta), {});
          const loaded = await runVhostdCli([
            "state",
            "load",
            "--socket-path",
            dst.socketPath,
            "-i",
            file,
          ]);
          assert.equal(loaded.code, 0, loaded.stderr);
          const check = stateClient(dst);
          try {
            // The destination's own reads above are gone: it holds the source's counters now.
            assert.deepEqual(normalized(saveToBytes(check)), normalized(fileBytes));
          } finally {
            check.close();
          }
          assert.deepEqual(
            await Deno.readFile(image),
            imageBefore,
            "a state transfer leaves the image alone",
          );
        }),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SAVE leaves the device as it was: same data after, and counters differ only by the requests in between", async () => {
  const diskSize = 8 * MiB;
  await withVhostd({ args: ["--ram", "8M"] }, (vhostd) => {
    using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
    const ranges = scatterWrites(s.driver, diskSize, {
      count: 4,
      pieceSize: 64 * 1024,
      edges: true,
    });
    const before = s.driver.read(0, 0, 128 * 1024);
    assert.equal(before.status, 0);
    s.driver.stopQueue(0);
    const first = saveToBytes(s.client);
    const again = saveToBytes(s.client);
    assert.deepEqual(normalized(again), normalized(first), "a SAVE changes nothing a SAVE can see");

    s.driver.restartQueue(0);
    const after = s.driver.read(0, 0, 128 * 1024);
    assert.equal(after.status, 0);
    assert.deepEqual(after.data, before.data, "the same data after the SAVE");
    assert.equal(firstMismatch(s.driver, ranges), undefined); // ranges.length reads of 64 KiB or less
    const extra = scatterWrites(s.driver, diskSize, {
      count: 2,
      pieceSize: 4096,
      offsetSectors: 1000,
    });
    assert.equal(s.driver.flush(0).status, 0);
    s.driver.stopQueue(0);
    const later = saveToBytes(s.client);

    const readBytes = 128 * 1024 + ranges.reduce((n, r) => n + r.data.length, 0);
    assert.deepEqual(counterDelta(metadataOf(first), metadataOf(later)), {
      reads: BigInt(1 + ranges.length),
      bytesRead: BigInt(readBytes),
      writes: 2n,
      bytesWritten: BigInt(extra.reduce((n, r) => n + r.data.length, 0)),
      flushes: 1n,
    });
    const { state: s1 } = metadataOf(first);
    const { state: s2 } = metadataOf(later);
    assert.equal(s2.features, s1.features);
    assert.equal(s2.writeback, s1.writeback);
  });
});
