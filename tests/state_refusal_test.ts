/**
 * Device-state transfers that must fail, against real vhostd processes:
 * corrupt, truncated, foreign and too-new streams refused by
 * CHECK_DEVICE_STATE with the reason in the log; a peer that closes the
 * pipe early; SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE at the wrong time.
 * After every failure the back-end keeps its contents, serves I/O, accepts
 * a correct state, and has not leaked an fd. Each case runs against a
 * back-end using the front-end's pipe and one using its own pipe.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo, fdLeakDetail } from "./support/fd_checks.ts";
import { BackendRefused, type VhostUserClient } from "../src/frontend/mod.ts";
import { BlkFixture } from "./support/blk_fixture.ts";
import {
  closeAll,
  countLogLines,
  craftStream,
  firstMismatch,
  flipped,
  LOAD,
  loadFromBytes,
  metadataOf,
  nextLogLine,
  normalized,
  openPipe,
  randomBytes,
  readSome,
  SAVE,
  saveToBytes,
  scatterWrites,
  sectionLayout,
  STATE_PROTOCOL_FEATURES,
  STOPPED,
  writeAll,
  type WrittenRange,
} from "./support/state_tools.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const MiB = 2 ** 20;
const DISK_SIZE = 8 * MiB;
/** Sector of the destination's marker: a hole in the source's data. */
const MARKER_SECTOR = 2000;
const LOAD_FAILED = /device state load (failed|refused)/;

function isRefusal(request: string): (e: unknown) => boolean {
  return (e) => e instanceof BackendRefused && e.request === request;
}

/** A source back-end with data, and the state saved from it. */
interface Source {
  ranges: WrittenRange[];
  stream: Uint8Array;
}

/**
 * Writes data to a fresh back-end and saves its state (the connection is
 * closed afterwards). `large` writes 6 MiB: a stream larger than any pipe
 * buffer, so that a SAVE cannot finish before its reader goes away.
 */
function prepareSource(vhostd: VhostdProcess, large = false): Source {
  using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  const ranges = large
    ? scatterWrites(s.driver, DISK_SIZE, { count: 6, pieceSize: MiB })
    : scatterWrites(s.driver, DISK_SIZE, { count: 4, pieceSize: 512 * 1024, edges: true });
  s.driver.stopQueue(0);
  return { ranges, stream: saveToBytes(s.client) };
}

/** The marker still reads back: the device kept its contents. */
function assertMarker(s: BlkFixture, marker: Uint8Array, why: string): void {
  s.driver.restartQueue(0);
  const got = s.driver.read(0, MARKER_SECTOR, marker.length);
  assert.equal(got.status, 0, why);
  assert.deepEqual(got.data, marker, `the destination lost its contents after: ${why}`);
  s.driver.stopQueue(0);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Bad streams for a destination like the source, each with the reason the log must give. */
function badStreams(good: Uint8Array): { why: string; stream: Uint8Array; reason: RegExp }[] {
  const [metadata, ramDisk, end] = sectionLayout(good);
  assert.equal(end.type, 0xffff);
  const firstExtent = ramDisk.chunks[0];
  const { identity, state } = metadataOf(good);
  const future = good.slice();
  new DataView(future.buffer).setUint16(8, 2, true); // format version 2, nothing else fixed
  const cuts = [
    0,
    40,
    80,
    metadata.chunks[0].offset + 20,
    firstExtent.offset + 16 + 100_000,
    end.offset,
    good.length - 1,
  ];
  return [
    {
      why: "a flipped byte in the RAM disk data",
      stream: flipped(good, firstExtent.offset + 16 + 5000),
      reason: /checksum mismatch/,
    },
    {
      why: "a flipped byte in METADATA",
      stream: flipped(good, metadata.chunks[0].offset + 30),
      reason: /checksum mismatch/,
    },
    ...cuts.map((cut) => ({
      why: `a stream cut after ${cut} of ${good.length} bytes`,
      stream: good.slice(0, cut),
      reason: /truncated|empty/,
    })),
    {
      why: "a byte after END",
      stream: concat(good, Uint8Array.of(0)),
      reason: /trailing bytes/,
    },
    {
      why: "the state of another device kind",
      stream: craftStream("fs", { tag: "shared", sharedDir: "/srv" }, {}),
      reason: /device kind is fs, expected blk/,
    },
    {
      why: "a state for a disk of another size",
      stream: craftStream("blk", { ...identity, size: 2 * DISK_SIZE }, state),
      reason: new RegExp(`size is ${2 * DISK_SIZE} in the state, ${DISK_SIZE} here`),
    },
    {
      why: "a verified state the device does not accept (features it does not offer)",
      stream: craftStream("blk", identity, { ...state, features: "0x8000000000000000" }),
      reason: /not offered/,
    },
    {
      why: "a format version from the future",
      stream: future,
      reason: /format version 2 is newer than this vhostd/,
    },
  ];
}

async function refusalsThenGoodLoad(
  dst: VhostdProcess,
  source: Source,
): Promise<void> {
  using s = BlkFixture.open(dst.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  const marker = randomBytes(4096);
  assert.equal(s.driver.write(0, MARKER_SECTOR, marker).status, 0);
  s.driver.stopQueue(0);
  const fdsBefore = await dst.settledFdCount();
  for (const bad of badStreams(source.stream)) {
    const failures = countLogLines(dst, LOAD_FAILED);
    assert.throws(
      () => loadFromBytes(s.client, bad.stream),
      isRefusal("CHECK_DEVICE_STATE"),
      bad.why,
    );
    const line = await nextLogLine(dst, LOAD_FAILED, failures);
    assert.match(line, bad.reason, `log line for ${bad.why}`);
    if (bad.why.includes("future")) assert.doesNotMatch(line, /checksum/);
    assertMarker(s, marker, bad.why);
  }
  assertFdsBackTo(
    await dst.fdCountDownTo(fdsBefore),
    fdsBefore,
    "no fd left behind by refused loads",
  );
  // A correct state is still accepted, and replaces everything.
  loadFromBytes(s.client, source.stream);
  s.driver.restartQueue(0);
  assert.deepEqual(s.driver.read(0, MARKER_SECTOR, 4096).data, new Uint8Array(4096));
  assert.equal(firstMismatch(s.driver, source.ranges), undefined);
}

Deno.test("LOAD refusals (corrupt, truncated, foreign, too new) keep the destination's contents; a correct state is accepted after", async () => {
  await withVhostd({ args: ["--ram", "8M"] }, async (src) => {
    const source = prepareSource(src);
    await withVhostd({ args: ["--ram", "8M"] }, (dst) => refusalsThenGoodLoad(dst, source));
    await withVhostd(
      { args: ["--ram", "8M", "--own-state-pipe"] },
      (dst) => refusalsThenGoodLoad(dst, source),
    );
  });
});

/**
 * A LOAD whose writer closes the pipe half-way and a SAVE whose reader
 * closes it after 8 bytes: each fails CHECK_DEVICE_STATE and is logged.
 */
async function closeEarlyBothWays(
  vhostd: VhostdProcess,
  client: VhostUserClient,
  source: Source,
): Promise<void> {
  // LOAD: half a stream, then the write end closes.
  let failures = countLogLines(vhostd, "device state load failed");
  let [readEnd, writeEnd] = openPipe();
  try {
    const own = client.setDeviceStateFd(LOAD, STOPPED, readEnd);
    closeAll(readEnd);
    readEnd = -1;
    if (own !== undefined) {
      closeAll(writeEnd);
      writeEnd = own;
    }
    writeAll(writeEnd, source.stream.subarray(0, source.stream.length >> 1));
    closeAll(writeEnd);
    writeEnd = -1;
    assert.throws(() => client.checkDeviceState(), isRefusal("CHECK_DEVICE_STATE"));
  } finally {
    closeAll(readEnd, writeEnd);
  }
  assert.match(await nextLogLine(vhostd, "device state load failed", failures), /truncated/);

  // SAVE: a few bytes read, then the read end closes (the stream is larger than any pipe buffer).
  failures = countLogLines(vhostd, "device state save failed");
  [readEnd, writeEnd] = openPipe();
  try {
    const own = client.setDeviceStateFd(SAVE, STOPPED, writeEnd);
    closeAll(writeEnd);
    writeEnd = -1;
    if (own !== undefined) {
      closeAll(readEnd);
      readEnd = own;
    }
    assert.equal(new TextDecoder().decode(readSome(readEnd, 8)), "VHOSTDST");
    closeAll(readEnd);
    readEnd = -1;
    assert.throws(() => client.checkDeviceState(), isRefusal("CHECK_DEVICE_STATE"));
  } finally {
    closeAll(readEnd, writeEnd);
  }
  assert.match(await nextLogLine(vhostd, "device state save failed", failures), /closed|EPIPE/);
}

/** The peer closes the state pipe early, in both directions; the back-end stays usable. */
async function earlyClose(vhostd: VhostdProcess, source: Source): Promise<void> {
  using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  s.driver.stopQueue(0);
  const client = s.client;
  const reference = saveToBytes(client);
  // Once before the baseline: the first failed transfers may leave the runtime with fds it
  // keeps for good (seen in CI: 2 more eventfd/eventpoll-kind fds once, with no more Worker
  // threads than before); a leak per failure still shows in the second round.
  await closeEarlyBothWays(vhostd, client, source);
  assert.deepEqual(normalized(saveToBytes(client)), normalized(reference));
  const fdsBefore = await vhostd.settledFdCount();
  const targetsBefore = vhostd.fdTargets();
  const threadsBefore = vhostd.threadNames();

  await closeEarlyBothWays(vhostd, client, source);

  // Still usable: a new transfer sees the same device, I/O works, no fd leaked.
  assert.deepEqual(normalized(saveToBytes(client)), normalized(reference));
  const fdsAfter = await vhostd.fdCountDownTo(fdsBefore);
  assertFdsBackTo(
    fdsAfter,
    fdsBefore,
    fdLeakDetail(targetsBefore, vhostd.fdTargets(), threadsBefore, vhostd.threadNames()),
  );
  s.driver.restartQueue(0);
  assert.equal(firstMismatch(s.driver, source.ranges), undefined);
}

Deno.test("the peer closing the state pipe early fails CHECK_DEVICE_STATE and leaves the back-end usable, without fd leaks", async () => {
  for (const args of [["--ram", "8M"], ["--ram", "8M", "--own-state-pipe"]]) {
    await withVhostd({ args }, async (vhostd) => {
      const source = prepareSource(vhostd, true);
      assert.ok(source.stream.length > 6 * MiB, `stream of ${source.stream.length} bytes`);
      await earlyClose(vhostd, source);
    });
  }
});

Deno.test("SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE at the wrong time get an error reply; the connection stays up", async () => {
  await withVhostd({ args: ["--ram", "8M"] }, async (vhostd) => {
    const source = prepareSource(vhostd);
    using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
    const client = s.client;
    const alive = () => assert.equal(client.getFeatures() >> 30n & 1n, 1n, "connection is up");
    s.driver.stopQueue(0);
    const fdsBefore = await vhostd.settledFdCount();
    s.driver.restartQueue(0);

    const refused = async (why: string, logged: RegExp, action: () => void) => {
      const warnings = countLogLines(vhostd, "failed:");
      assert.throws(action, (e) => e instanceof BackendRefused, why);
      assert.match(await nextLogLine(vhostd, "failed:", warnings), logged, why);
      alive();
    };
    const withPipe = (body: (readEnd: number, writeEnd: number) => void) => () => {
      const [readEnd, writeEnd] = openPipe();
      try {
        body(readEnd, writeEnd);
      } finally {
        closeAll(readEnd, writeEnd);
      }
    };

    // A started ring.
    await refused(
      "SAVE while ring 0 is started",
      /SET_DEVICE_STATE_FD failed: rings 0 are started/,
      withPipe((_, w) => client.setDeviceStateFd(SAVE, STOPPED, w)),
    );
    assert.equal(s.driver.read(0, 0, 4096).status, 0, "the ring still serves requests");
    s.driver.stopQueue(0);

    // A phase other than STOPPED.
    await refused(
      "phase 1",
      /phase 1/,
      withPipe((_, w) => client.setDeviceStateFd(SAVE, 1, w)),
    );

    // CHECK_DEVICE_STATE with no transfer.
    const checks = countLogLines(vhostd, "CHECK_DEVICE_STATE without a state transfer");
    assert.throws(
      () => client.checkDeviceState(),
      (e) => e instanceof BackendRefused && e.ack === 1n,
    );
    await nextLogLine(vhostd, "CHECK_DEVICE_STATE without a state transfer", checks);
    alive();

    // A second transfer while one is running: refused, and the first one goes on unharmed.
    let [readEnd, writeEnd] = openPipe();
    try {
      assert.equal(client.setDeviceStateFd(LOAD, STOPPED, readEnd), undefined);
      closeAll(readEnd);
      readEnd = -1;
      writeAll(writeEnd, source.stream.subarray(0, 1000));
      await refused(
        "a second SET_DEVICE_STATE_FD",
        /already in progress/,
        withPipe((_, w) => client.setDeviceStateFd(SAVE, STOPPED, w)),
      );
      writeAll(writeEnd, source.stream.subarray(1000));
      closeAll(writeEnd);
      writeEnd = -1;
    } finally {
      closeAll(readEnd, writeEnd);
    }
    client.checkDeviceState();

    assertFdsBackTo(
      await vhostd.fdCountDownTo(fdsBefore),
      fdsBefore,
      vhostd.fdTargets().join("\n"),
    );
    s.driver.restartQueue(0);
    assert.equal(firstMismatch(s.driver, source.ranges), undefined);
  });
});
