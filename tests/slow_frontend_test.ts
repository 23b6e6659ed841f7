/**
 * Slow and stuck front-ends, against real vhostd processes: a front-end that
 * pauses for seconds inside a message is still answered correctly (vhostd
 * reads messages incrementally and waits up to 30 s of silence), while a
 * peer that sends half a header and goes silent, or closes, does not keep
 * the next front-end from being served, and leaves no fd behind.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo } from "./support/fd_checks.ts";
import { closeQuietly, eventfd, pollFd, POLLIN, receiveBytes } from "../ffi/mod.ts";
import { VhostUserClient } from "../src/frontend/mod.ts";
import {
  bit,
  decodeConfig,
  decodeU64,
  encodeConfig,
  encodeMessage,
  FrontendRequest,
  HEADER_SIZE,
  ProtocolFeature,
  VHOST_USER_VERSION,
} from "../src/protocol/mod.ts";
import { countLogLines, nextLogLine } from "./support/state_tools.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

/** The pause inside a message: 2.5 times the limit vhostd had before. */
const PAUSE_MS = 2500;
/** Safety bound for any one reply in these tests (vhostd needs milliseconds, or about 1 s). */
const REPLY_BOUND_MS = 30_000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True while the back-end has not closed `fd`'s connection (nothing to read, no EOF). */
function stillConnected(fd: number): boolean {
  return (pollFd(fd, POLLIN, 0) & POLLIN) === 0;
}

/** A fresh front-end gets GET_FEATURES answered within the bound. */
function nextFrontEndAnswers(vhostd: VhostdProcess): void {
  const client = VhostUserClient.connect(vhostd.socketPath, REPLY_BOUND_MS);
  try {
    assert.ok(client.getFeatures() > 0n);
  } finally {
    client.close();
  }
}

Deno.test("a front-end that pauses 2.5 s inside a message (header, then payload; inside the header) is answered correctly", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    const client = VhostUserClient.connect(vhostd.socketPath, REPLY_BOUND_MS);
    try {
      client.getFeatures();
      client.setOwner();
      const offered = client.getProtocolFeatures();
      assert.ok(offered & bit(ProtocolFeature.CONFIG));
      client.setProtocolFeatures(offered & bit(ProtocolFeature.CONFIG));
      const expected = client.getConfig(0, 16);

      // The whole header, then the payload after a pause.
      const message = encodeMessage(
        FrontendRequest.GET_CONFIG,
        VHOST_USER_VERSION,
        encodeConfig({ offset: 0, size: 16, flags: 0, data: new Uint8Array(16) }),
      );
      client.sendRaw(message.subarray(0, HEADER_SIZE));
      await delay(PAUSE_MS);
      assert.ok(stillConnected(client.fd), "dropped during the pause after the header");
      client.sendRaw(message.subarray(HEADER_SIZE));
      let reply = client.receiveReply(FrontendRequest.GET_CONFIG);
      assert.deepEqual(decodeConfig(reply.payload).data, expected);

      // Half a header, a pause, the rest of the header and half the payload, a pause, the rest.
      client.sendRaw(message.subarray(0, 5));
      await delay(PAUSE_MS);
      client.sendRaw(message.subarray(5, HEADER_SIZE + 6));
      await delay(PAUSE_MS);
      client.sendRaw(message.subarray(HEADER_SIZE + 6));
      reply = client.receiveReply(FrontendRequest.GET_CONFIG);
      assert.deepEqual(decodeConfig(reply.payload).data, expected);

      // The session goes on, framed right.
      const get = encodeMessage(FrontendRequest.GET_FEATURES, VHOST_USER_VERSION);
      client.sendRaw(get.subarray(0, 3));
      await delay(PAUSE_MS);
      client.sendRaw(get.subarray(3));
      reply = client.receiveReply(FrontendRequest.GET_FEATURES);
      assert.equal(decodeU64(reply.payload), client.getFeatures());
    } finally {
      client.close();
    }
    assert.equal(countLogLines(vhostd, "connection dropped"), 0, vhostd.log());
  });
});

Deno.test("a peer stuck in half a header does not keep the next front-end out (it gives way, or it closes); no fd leaks", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    nextFrontEndAnswers(vhostd);
    const fdsIdle = await vhostd.settledFdCount();
    const header = encodeMessage(FrontendRequest.SET_VRING_CALL, VHOST_USER_VERSION);

    // Half a header with an fd, then silence. vhostd is patient with it...
    const stuck = VhostUserClient.connect(vhostd.socketPath, REPLY_BOUND_MS);
    const call = eventfd();
    try {
      stuck.sendRaw(header.subarray(0, 6), [call]);
      await delay(PAUSE_MS);
      assert.ok(stillConnected(stuck.fd), "a silent peer was dropped before anyone else came");
      // ...until a new front-end comes: that one is served, and the stuck one is dropped.
      const dropped = countLogLines(vhostd, "dropped for a new front-end");
      nextFrontEndAnswers(vhostd);
      assert.match(
        await nextLogLine(vhostd, "dropped for a new front-end", dropped),
        /inside a message header \(6 of 12 bytes\)/,
      );
      assert.equal(pollFd(stuck.fd, POLLIN, REPLY_BOUND_MS) & POLLIN, POLLIN);
      assert.equal(receiveBytes(stuck.fd, new Uint8Array(16)), 0, "the stuck peer sees EOF");
    } finally {
      stuck.close();
      closeQuietly(call);
    }

    // Half a header, then the peer closes: the next front-end is served at once.
    const closer = VhostUserClient.connect(vhostd.socketPath, REPLY_BOUND_MS);
    const closed = countLogLines(vhostd, "peer closed inside a message header");
    closer.sendRaw(header.subarray(0, 7));
    closer.close();
    nextFrontEndAnswers(vhostd);
    await nextLogLine(vhostd, "peer closed inside a message header", closed);

    assertFdsBackTo(await vhostd.fdCountDownTo(fdsIdle), fdsIdle, vhostd.fdTargets().join("\n"));
  });
});

Deno.test("a peer silent inside a message with nobody else waiting is still dropped, after 30 s of silence", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    const fdsIdle = await vhostd.settledFdCount();
    const message = encodeMessage(
      FrontendRequest.GET_CONFIG,
      VHOST_USER_VERSION,
      encodeConfig({ offset: 0, size: 16, flags: 0, data: new Uint8Array(16) }),
    );
    const silent = VhostUserClient.connect(vhostd.socketPath, REPLY_BOUND_MS);
    try {
      silent.sendRaw(message.subarray(0, HEADER_SIZE + 4));
      const sent = performance.now();
      // The bound is 30 s; allow a busy host three times that to get round to it.
      assert.equal(pollFd(silent.fd, POLLIN, 90_000) & POLLIN, POLLIN, "never dropped");
      assert.ok(performance.now() - sent >= 25_000, "dropped before 30 s of silence");
      assert.equal(receiveBytes(silent.fd, new Uint8Array(16)), 0);
    } finally {
      silent.close();
    }
    assert.match(
      await nextLogLine(vhostd, "connection dropped", 0),
      /peer silent for 30 s inside the payload of GET_CONFIG \(4 of 28 bytes\)/,
    );
    nextFrontEndAnswers(vhostd);
    assertFdsBackTo(await vhostd.fdCountDownTo(fdsIdle), fdsIdle, vhostd.fdTargets().join("\n"));
  });
});
