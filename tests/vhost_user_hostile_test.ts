/**
 * Hostile vhost-user messages against a real vhostd process: each is either
 * answered with an error (a non-zero REPLY_ACK or an empty reply) or costs
 * the sender its connection; the daemon survives, leaks no fd, the session
 * stays usable when it was not dropped, and a new front-end can always
 * connect and do I/O.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo } from "./support/fd_checks.ts";
import { closeQuietly, eventfd } from "../ffi/mod.ts";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { BackendDisconnected, VhostUserClient } from "../src/frontend/mod.ts";
import {
  decodeU64,
  encodeConfig,
  encodeMemoryTable,
  encodeMessage,
  encodeU64,
  encodeVringAddress,
  encodeVringFdIndex,
  encodeVringState,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FrontendRequest as R,
  VHOST_USER_VERSION,
} from "../src/protocol/mod.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const V1 = VHOST_USER_VERSION;
const ACK = V1 | FLAG_NEED_REPLY;

/** A message with an arbitrary header: `size` need not match the payload. */
function rawMessage(request: number, flags: number, size: number, payload = new Uint8Array(0)) {
  const bytes = new Uint8Array(12 + payload.byteLength);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, request, true);
  view.setUint32(4, flags, true);
  view.setUint32(8, size, true);
  bytes.set(payload, 12);
  return bytes;
}

interface HostileCase {
  name: string;
  /** Builds the message and the fds to attach (closed by the test afterwards). */
  build: (s: BlkFixture) => { bytes: Uint8Array; fds?: number[]; reply?: number };
  expect: "refused" | "dropped";
  /**
   * The peer then stays silent inside the message: vhostd waits (30 s of
   * silence) unless another front-end comes, so the test brings one.
   */
  nextFrontEnd?: boolean;
}

function eventfds(n: number): number[] {
  return Array.from({ length: n }, () => eventfd(0));
}

const CASES: HostileCase[] = [
  {
    name: "unknown request number",
    build: () => ({ bytes: encodeMessage(99, ACK) }),
    expect: "refused",
  },
  {
    name: "unknown request number with a payload",
    build: () => ({ bytes: encodeMessage(777, ACK, new Uint8Array(24).fill(0xab)) }),
    expect: "refused",
  },
  {
    name: "SET_VRING_NUM with a 4-byte payload",
    build: () => ({ bytes: encodeMessage(R.SET_VRING_NUM, ACK, new Uint8Array(4)) }),
    expect: "refused",
  },
  {
    name: "GET_FEATURES with a payload",
    build: () => ({ bytes: encodeMessage(R.GET_FEATURES, V1, encodeU64(0)) }),
    expect: "refused",
  },
  {
    name: "SET_VRING_KICK without its fd",
    build: () => ({
      bytes: encodeMessage(R.SET_VRING_KICK, ACK, encodeVringFdIndex({ index: 0, noFd: false })),
    }),
    expect: "refused",
  },
  {
    name: "SET_MEM_TABLE without fds",
    build: (s) => ({
      bytes: encodeMessage(R.SET_MEM_TABLE, ACK, encodeMemoryTable(s.memory.regionDescs())),
    }),
    expect: "refused",
  },
  {
    name: "SET_VRING_CALL with two fds",
    build: () => ({
      bytes: encodeMessage(R.SET_VRING_CALL, ACK, encodeVringFdIndex({ index: 0, noFd: false })),
      fds: eventfds(2),
    }),
    expect: "refused",
  },
  {
    name: "SET_VRING_ERR with the no-fd bit and an fd",
    build: () => ({
      bytes: encodeMessage(R.SET_VRING_ERR, ACK, encodeVringFdIndex({ index: 0, noFd: true })),
      fds: eventfds(1),
    }),
    expect: "refused",
  },
  {
    name: "REPLY flag set on GET_FEATURES",
    build: () => ({ bytes: encodeMessage(R.GET_FEATURES, V1 | FLAG_REPLY) }),
    expect: "refused",
  },
  {
    name: "REPLY flag set on SET_OWNER",
    build: () => ({ bytes: encodeMessage(R.SET_OWNER, ACK | FLAG_REPLY) }),
    expect: "refused",
  },
  {
    name: "version 0 in the flags",
    build: () => ({ bytes: encodeMessage(R.SET_OWNER, FLAG_NEED_REPLY) }),
    expect: "refused",
  },
  {
    name: "SET_VRING_ADDR for a ring that does not exist",
    build: (s) => ({
      bytes: encodeMessage(
        R.SET_VRING_ADDR,
        ACK,
        encodeVringAddress({ ...s.driver.ring(0).vringAddress(), index: 200 }),
      ),
    }),
    expect: "refused",
  },
  {
    name: "SET_VRING_ADDR outside guest memory",
    build: (s) => ({
      bytes: encodeMessage(
        R.SET_VRING_ADDR,
        ACK,
        encodeVringAddress({ ...s.driver.ring(0).vringAddress(), descUserAddr: 0x1000n }),
      ),
    }),
    expect: "refused",
  },
  {
    name: "GET_VRING_BASE of a ring that does not exist",
    build: () => ({
      bytes: encodeMessage(R.GET_VRING_BASE, V1, encodeVringState({ index: 9, num: 0 })),
    }),
    expect: "refused",
  },
  {
    name: "GET_CONFIG whose size field disagrees with the payload",
    build: () => {
      const payload = encodeConfig({ offset: 0, size: 8, flags: 0, data: new Uint8Array(8) });
      new DataView(payload.buffer).setUint32(4, 300, true);
      return { bytes: encodeMessage(R.GET_CONFIG, V1, payload) };
    },
    expect: "refused",
  },
  {
    name: "SET_FEATURES with bits never offered",
    build: () => ({ bytes: encodeMessage(R.SET_FEATURES, ACK, encodeU64(1n << 62n)) }),
    expect: "refused",
  },
  {
    name: "SET_STATUS without the STATUS protocol feature",
    build: () => ({ bytes: encodeMessage(R.SET_STATUS, ACK, encodeU64(0xf)) }),
    expect: "refused",
  },
  {
    name: "a huge size field",
    build: () => ({ bytes: rawMessage(R.GET_FEATURES, V1, 0x7fff_ffff), reply: R.GET_FEATURES }),
    expect: "dropped",
  },
  {
    name: "a payload one byte over the limit",
    build: () => ({
      bytes: rawMessage(R.SET_CONFIG, ACK, 4097, new Uint8Array(4097)),
      reply: R.SET_CONFIG,
    }),
    expect: "dropped",
  },
  {
    name: "more fds than any request carries",
    build: (s) => ({
      bytes: encodeMessage(R.SET_MEM_TABLE, ACK, encodeMemoryTable(s.memory.regionDescs())),
      fds: eventfds(12),
    }),
    expect: "dropped",
  },
  {
    name: "a payload that stops half way",
    build: () => ({ bytes: rawMessage(R.SET_VRING_ADDR, ACK, 40, new Uint8Array(10)) }),
    expect: "dropped",
    nextFrontEnd: true,
  },
];

/** Reads the answer to a hostile message: "refused", or "dropped" when the connection closed. */
function outcome(client: VhostUserClient, request: number): "refused" | "dropped" | string {
  let reply;
  try {
    reply = client.receiveReply(request);
  } catch (e) {
    if (e instanceof BackendDisconnected) return "dropped";
    throw e;
  }
  if (reply.payload.byteLength === 0) return "refused";
  if (reply.payload.byteLength === 8 && decodeU64(reply.payload) !== 0n) return "refused";
  return `accepted with ${reply.payload.byteLength} reply bytes`;
}

async function assertNoFdLeak(vhostd: VhostdProcess, before: number): Promise<void> {
  const after = await vhostd.fdCountDownTo(before);
  assertFdsBackTo(after, before, vhostd.fdTargets().join("\n"));
}

Deno.test("hostile messages are refused or drop the connection; the daemon carries on", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    const data = pattern(4096, 42);
    // Warm-up session: writes the data the later sessions check.
    BlkFixture.open(vhostd.socketPath).close();
    {
      using s = BlkFixture.open(vhostd.socketPath);
      assert.equal(s.driver.write(0, 8, data).status, BlkStatus.OK);
    }
    const baseline = await vhostd.settledFdCount();

    for (const c of CASES) {
      using s = BlkFixture.open(vhostd.socketPath);
      const { bytes, fds = [], reply } = c.build(s);
      const request = reply ?? new DataView(bytes.buffer).getUint32(0, true);
      try {
        s.client.sendRaw(bytes, fds);
      } finally {
        fds.forEach(closeQuietly);
      }
      if (c.nextFrontEnd) {
        const next = VhostUserClient.connect(vhostd.socketPath);
        try {
          assert.ok(next.getFeatures() > 0n, `${c.name}: the next front-end is served`);
        } finally {
          next.close();
        }
      }
      assert.equal(outcome(s.client, request), c.expect, c.name);
      if (c.expect === "refused") {
        // The same session still works: messages and I/O.
        assert.ok(s.client.getFeatures() > 0n, `${c.name}: GET_FEATURES afterwards`);
        const r = s.driver.read(0, 8, 4096);
        assert.equal(r.status, BlkStatus.OK, `${c.name}: I/O afterwards`);
        assert.deepEqual(r.data, data);
      }
    }

    // Half a header, then the front-end leaves.
    const quitter = VhostUserClient.connect(vhostd.socketPath);
    quitter.sendRaw(new Uint8Array(6));
    quitter.close();

    // A new front-end still connects and finds the data.
    {
      using s = BlkFixture.open(vhostd.socketPath);
      assert.deepEqual(s.driver.read(0, 8, 4096).data, data);
    }
    await assertNoFdLeak(vhostd, baseline);
  });
});

Deno.test("before REPLY_ACK, an unknown request gets no answer and framing survives", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, ({ socketPath }) => {
    const client = VhostUserClient.connect(socketPath);
    try {
      const features = client.getFeatures();
      client.sendRaw(encodeMessage(99, V1, new Uint8Array(16).fill(7)));
      client.sendRaw(encodeMessage(R.SET_VRING_NUM, V1, new Uint8Array(3)));
      // The next reply is the one to this GET_FEATURES: nothing was answered in between.
      assert.equal(client.getFeatures(), features);
      // NEED_REPLY without REPLY_ACK negotiated asks for nothing either.
      client.sendRaw(encodeMessage(R.SET_OWNER, ACK));
      assert.equal(client.getFeatures(), features);
    } finally {
      client.close();
    }
    using s = BlkFixture.open(socketPath);
    assert.equal(s.driver.write(0, 0, pattern(512, 1)).status, BlkStatus.OK);
  });
});
