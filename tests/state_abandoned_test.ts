/**
 * Abandoned device-state transfers, against real vhostd processes: a
 * front-end starts a SAVE or a LOAD and goes away (right away, or after
 * sending CHECK_DEVICE_STATE) while the test keeps the other end of the
 * state pipe open and neither reads nor writes — a hung VMM or migration
 * helper. The next front-end must be served at once, the device must be
 * exactly as before (a LOAD applies nothing), the back-end must close its
 * pipe end, the next transfer must work, and no fd may be left behind.
 * Each case runs with the front-end's pipe and with vhostd's own pipe.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo } from "./support/fd_checks.ts";
import { POLLERR, pollFd, POLLHUP, POLLOUT } from "../ffi/mod.ts";
import { VhostUserClient } from "../src/frontend/mod.ts";
import { encodeMessage, FrontendRequest, VHOST_USER_VERSION } from "../src/protocol/mod.ts";
import { BlkFixture } from "./support/blk_fixture.ts";
import {
  closeAll,
  countLogLines,
  firstMismatch,
  LOAD,
  loadFromBytes,
  negotiateForState,
  nextLogLine,
  openPipe,
  SAVE,
  saveToBytes,
  scatterWrites,
  STATE_PROTOCOL_FEATURES,
  STOPPED,
  writeAll,
  type WrittenRange,
} from "./support/state_tools.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const MiB = 2 ** 20;
const DISK_SIZE = 8 * MiB;
/**
 * Safety bound for the next front-end's first reply. vhostd answers in
 * milliseconds; before the fix it never answered. Generous for a busy CI host.
 */
const ANSWER_BOUND_MS = 30_000;
/** Bound for the back-end to close its end of the abandoned pipe (event-driven, polled). */
const CLOSE_BOUND_MS = 30_000;

const PIPE_MODES = [
  { name: "front-end's pipe", args: ["--ram", "8M"] },
  { name: "vhostd's own pipe", args: ["--ram", "8M", "--own-state-pipe"] },
];

/** How the front-end leaves: at once, or with CHECK_DEVICE_STATE sent and unanswered. */
const LEAVE_MODES = [
  "closes its socket",
  "sends CHECK_DEVICE_STATE and closes its socket",
] as const;
type Leave = typeof LEAVE_MODES[number];

/** 6 MiB of random data: a stream larger than any pipe buffer, so a SAVE cannot finish. */
function writeData(vhostd: VhostdProcess): WrittenRange[] {
  using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  return scatterWrites(s.driver, DISK_SIZE, { count: 6, pieceSize: MiB });
}

/** A fresh front-end that must get GET_FEATURES answered within the safety bound. */
function nextFrontEndAnswers(vhostd: VhostdProcess): void {
  const client = VhostUserClient.connect(vhostd.socketPath, ANSWER_BOUND_MS);
  try {
    const start = performance.now();
    const features = client.getFeatures();
    assert.ok(features > 0n);
    assert.ok(performance.now() - start < ANSWER_BOUND_MS);
  } finally {
    client.close();
  }
}

/** The front-end leaves as `leave` says. */
function leave(client: VhostUserClient, how: Leave): void {
  if (how !== "closes its socket") {
    client.sendRaw(encodeMessage(FrontendRequest.CHECK_DEVICE_STATE, VHOST_USER_VERSION));
  }
  client.close();
}

/** Waits (polling, bounded) until `fd`'s peer end is closed: `events` shows hang-up/error. */
async function peerEndClosed(fd: number, events: number, what: string): Promise<void> {
  const deadline = performance.now() + CLOSE_BOUND_MS;
  while ((pollFd(fd, events, 0) & (POLLHUP | POLLERR)) === 0) {
    if (performance.now() > deadline) throw new Error(`vhostd did not close ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** SAVE started; the front-end leaves while the test holds the read end without reading. */
async function abandonedSave(vhostd: VhostdProcess, ranges: WrittenRange[], how: Leave) {
  const fdsIdle = await vhostd.settledFdCount();
  const abandoned = countLogLines(vhostd, /device state save (abandoned|failed)/);
  const client = VhostUserClient.connect(vhostd.socketPath);
  let [readEnd, writeEnd] = openPipe();
  try {
    negotiateForState(client);
    const own = client.setDeviceStateFd(SAVE, STOPPED, writeEnd);
    closeAll(writeEnd);
    writeEnd = -1;
    if (own !== undefined) {
      closeAll(readEnd);
      readEnd = own;
    }
    leave(client, how);
    nextFrontEndAnswers(vhostd);
    await nextLogLine(vhostd, /device state save (abandoned|failed)/, abandoned);
    // The Worker closed its write end although nobody read: the read end sees the hang-up.
    await peerEndClosed(readEnd, 0, "the write end of an abandoned SAVE");
  } finally {
    client.close();
    closeAll(readEnd, writeEnd);
  }
  // Verified I/O, then a SAVE that works.
  using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  assert.equal(firstMismatch(s.driver, ranges), undefined);
  s.driver.stopQueue(0);
  const stream = saveToBytes(s.client);
  assert.ok(stream.length > 6 * MiB, `a whole SAVE after the abandoned one: ${stream.length}`);
  s.close();
  assertFdsBackTo(await vhostd.fdCountDownTo(fdsIdle), fdsIdle, vhostd.fdTargets().join("\n"));
}

Deno.test("an abandoned SAVE (pipe held open, never read) does not lock out the next front-end", async () => {
  for (const mode of PIPE_MODES) {
    await withVhostd({ args: mode.args }, async (vhostd) => {
      const ranges = writeData(vhostd);
      for (const how of LEAVE_MODES) {
        await abandonedSave(vhostd, ranges, how).catch((e) => {
          e.message = `${mode.name}, front-end ${how}: ${e.message}`;
          throw e;
        });
      }
    });
  }
});

/** LOAD started, half a state written; the front-end leaves while the test holds the write end. */
async function abandonedLoad(
  vhostd: VhostdProcess,
  current: WrittenRange[],
  stream: Uint8Array,
  how: Leave,
) {
  const fdsIdle = await vhostd.settledFdCount();
  const abandoned = countLogLines(vhostd, /device state load (abandoned|failed)/);
  const client = VhostUserClient.connect(vhostd.socketPath);
  let [readEnd, writeEnd] = openPipe();
  try {
    negotiateForState(client);
    const own = client.setDeviceStateFd(LOAD, STOPPED, readEnd);
    closeAll(readEnd);
    readEnd = -1;
    if (own !== undefined) {
      closeAll(writeEnd);
      writeEnd = own;
    }
    assert.ok(writeAll(writeEnd, stream.subarray(0, stream.length >> 1)));
    leave(client, how);
    nextFrontEndAnswers(vhostd);
    await nextLogLine(vhostd, /device state load (abandoned|failed)/, abandoned);
    // The Worker closed its read end: the write end reports an error.
    await peerEndClosed(writeEnd, POLLOUT, "the read end of an abandoned LOAD");
  } finally {
    client.close();
    closeAll(readEnd, writeEnd);
  }
  // Exactly the old contents, and a later LOAD works.
  using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  assert.equal(firstMismatch(s.driver, current), undefined, "the abandoned LOAD changed the disk");
  s.close();
  assertFdsBackTo(await vhostd.fdCountDownTo(fdsIdle), fdsIdle, vhostd.fdTargets().join("\n"));
}

Deno.test("an abandoned LOAD (half a state, write end held open) applies nothing and does not lock out the next front-end", async () => {
  for (const mode of PIPE_MODES) {
    await withVhostd({ args: mode.args }, async (vhostd) => {
      // The state to load: data A. The device then holds data B at the same places.
      const before = writeData(vhostd);
      let stream: Uint8Array;
      {
        using s = BlkFixture.open(vhostd.socketPath, {
          protocolFeatures: STATE_PROTOCOL_FEATURES,
        });
        s.driver.stopQueue(0);
        stream = saveToBytes(s.client);
      }
      const current = writeData(vhostd);
      assert.notDeepEqual(current[0].data, before[0].data);
      for (const how of LEAVE_MODES) {
        await abandonedLoad(vhostd, current, stream, how).catch((e) => {
          e.message = `${mode.name}, front-end ${how}: ${e.message}`;
          throw e;
        });
      }
      // A later LOAD works and brings data A.
      using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
      s.driver.stopQueue(0);
      loadFromBytes(s.client, stream);
      s.driver.restartQueue(0);
      assert.equal(firstMismatch(s.driver, before), undefined, "the later LOAD");
    });
  }
});
