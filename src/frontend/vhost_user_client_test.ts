import assert from "node:assert/strict";
import {
  bindUnix,
  closeQuietly,
  eventfd,
  listenSocket,
  receiveMessage,
  sendMessage,
  socketPair,
  socketUnix,
} from "../../ffi/mod.ts";
import {
  bit,
  decodeHeader,
  encodeConfig,
  encodeMessage,
  encodeReply,
  encodeU64,
  encodeVringState,
  FrontendRequest as R,
  HEADER_SIZE,
  type MessageHeader,
  ProtocolError,
  ProtocolFeature,
} from "../protocol/mod.ts";
import { BackendDisconnected, BackendRefused, BackendTimeout } from "./errors.ts";
import { VhostUserClient } from "./vhost_user_client.ts";

/** The back-end end of a socketpair: replies are queued before the client asks. */
class FakeBackend {
  constructor(readonly fd: number) {}

  reply(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): void {
    sendMessage(this.fd, encodeReply(request, payload), fds);
  }

  ack(request: number, value = 0n): void {
    this.reply(request, encodeU64(value));
  }

  /** The next message the client sent (read header first: messages queue up in the stream). */
  next(): { header: MessageHeader; payload: Uint8Array; fds: number[] } {
    const head = new Uint8Array(HEADER_SIZE);
    const first = receiveMessage(this.fd, head, 8);
    assert.equal(first.bytes, HEADER_SIZE, "a whole header");
    const header = decodeHeader(head);
    const payload = new Uint8Array(header.size);
    if (header.size > 0) {
      assert.equal(receiveMessage(this.fd, payload, 0).bytes, header.size, "the whole payload");
    }
    return { header, payload, fds: first.fds };
  }
}

function pair(
  timeoutMs = 1000,
): { client: VhostUserClient; backend: FakeBackend; closeBackend(): void } & Disposable {
  const [a, b] = socketPair();
  const client = new VhostUserClient(a, timeoutMs);
  const backend = new FakeBackend(b);
  let backendOpen = true;
  // Closed once only: test modules run in parallel in one process, so a second close of the
  // number could close another test's fd.
  const closeBackend = () => {
    if (backendOpen) closeQuietly(b);
    backendOpen = false;
  };
  return {
    client,
    backend,
    closeBackend,
    [Symbol.dispose]() {
      client.close();
      closeBackend();
    },
  };
}

Deno.test("requests with their own reply are sent plainly and decoded", () => {
  using p = pair();
  p.backend.reply(R.GET_FEATURES, encodeU64(0x1_4000_0000n));
  assert.equal(p.client.getFeatures(), 0x1_4000_0000n);
  const sent = p.backend.next();
  assert.deepEqual(sent.header, { request: R.GET_FEATURES, flags: 1, size: 0 });

  p.backend.reply(R.GET_VRING_BASE, encodeVringState({ index: 2, num: 77 }));
  assert.equal(p.client.getVringBase(2), 77);
  assert.deepEqual(p.backend.next().payload, encodeVringState({ index: 2, num: 0 }));
});

Deno.test("once REPLY_ACK is negotiated, other requests carry NEED_REPLY and are checked", () => {
  using p = pair();
  p.client.setOwner();
  assert.equal(p.backend.next().header.flags, 1, "no NEED_REPLY before negotiation");
  p.client.setProtocolFeatures(bit(ProtocolFeature.REPLY_ACK));
  assert.equal(p.backend.next().header.flags, 1, "SET_PROTOCOL_FEATURES itself is not acked");
  assert.equal(p.client.protocolFeatures, bit(ProtocolFeature.REPLY_ACK));

  p.backend.ack(R.SET_VRING_NUM);
  p.client.setVringNum(0, 256);
  const sent = p.backend.next();
  assert.equal(sent.header.flags, 0x9);
  assert.deepEqual(sent.payload, encodeVringState({ index: 0, num: 256 }));

  p.backend.ack(R.SET_VRING_ENABLE, 1n);
  assert.throws(() => p.client.setVringEnable(0, true), BackendRefused);
  try {
    p.backend.ack(R.SET_VRING_BASE, 5n);
    p.client.setVringBase(0, 3);
    assert.fail("no error");
  } catch (e) {
    assert.ok(e instanceof BackendRefused);
    assert.equal(e.request, "SET_VRING_BASE");
    assert.equal(e.ack, 5n);
  }
  // Requests with an own reply never ask for an ack.
  p.backend.next();
  p.backend.next();
  p.backend.reply(R.GET_FEATURES, encodeU64(1n));
  p.client.getFeatures();
  assert.equal(p.backend.next().header.flags, 0x1);
});

Deno.test("GET_CONFIG: empty reply refused, another window is a protocol error", () => {
  using p = pair();
  p.backend.reply(R.GET_CONFIG, new Uint8Array(0));
  assert.throws(() => p.client.getConfig(0, 8), BackendRefused);
  p.backend.reply(
    R.GET_CONFIG,
    encodeConfig({ offset: 4, size: 4, flags: 0, data: Uint8Array.of(1, 2, 3, 4) }),
  );
  assert.throws(() => p.client.getConfig(0, 4), ProtocolError);
  p.backend.reply(
    R.GET_CONFIG,
    encodeConfig({ offset: 34, size: 2, flags: 0, data: Uint8Array.of(2, 0) }),
  );
  assert.deepEqual(p.client.getConfig(34, 2), Uint8Array.of(2, 0));
  const sent = [p.backend.next(), p.backend.next(), p.backend.next()];
  assert.equal(sent[2].header.request, R.GET_CONFIG);
  assert.equal(sent[2].header.size, 12 + 2);
});

Deno.test("bad replies: wrong flags, wrong request, oversize", () => {
  using p = pair();
  sendMessage(p.backend.fd, encodeMessage(R.GET_FEATURES, 0x1, encodeU64(1n)));
  assert.throws(() => p.client.getFeatures(), /flags 0x1, expected 0x5/);
  // The bad reply was consumed whole: the next one is framed right.
  p.backend.reply(R.GET_FEATURES, encodeU64(7n));
  assert.equal(p.client.getFeatures(), 7n);
  p.backend.reply(R.GET_PROTOCOL_FEATURES, encodeU64(1n));
  assert.throws(() => p.client.getFeatures(), /got a reply to GET_PROTOCOL_FEATURES/);
  p.backend.reply(R.GET_FEATURES, encodeU64(8n));
  assert.equal(p.client.getFeatures(), 8n);
  const huge = new Uint8Array(12);
  new DataView(huge.buffer).setUint32(0, R.GET_FEATURES, true);
  new DataView(huge.buffer).setUint32(4, 0x5, true);
  new DataView(huge.buffer).setUint32(8, 100_000, true);
  sendMessage(p.backend.fd, huge);
  assert.throws(() => p.client.getFeatures(), ProtocolError);
});

Deno.test("a silent back-end times out; a closed one is reported as such", () => {
  using p = pair(60);
  const start = performance.now();
  assert.throws(() => p.client.getFeatures(), BackendTimeout);
  assert.ok(performance.now() - start >= 55, "waited for the timeout");
  p.closeBackend();
  assert.throws(() => p.client.getQueueNum(), BackendDisconnected);
});

Deno.test("vring fds: the no-fd flag sends none, otherwise exactly one", () => {
  using p = pair();
  p.client.setVringKick(3, undefined);
  const noFd = p.backend.next();
  assert.deepEqual(noFd.payload, encodeU64(0x103));
  assert.equal(noFd.fds.length, 0);
  const efd = eventfd(0);
  try {
    p.client.setVringCall(1, efd);
  } finally {
    closeQuietly(efd);
  }
  const withFd = p.backend.next();
  assert.deepEqual(withFd.payload, encodeU64(1));
  assert.equal(withFd.fds.length, 1);
  withFd.fds.forEach(closeQuietly);
  assert.throws(() => p.client.setMemTable([], [1]), RangeError);
});

Deno.test("SET_DEVICE_STATE_FD: no fd, an fd of the back-end's, or a refusal", () => {
  using p = pair();
  const [readEnd, writeEnd] = socketPair();
  try {
    p.backend.reply(R.SET_DEVICE_STATE_FD, encodeU64(0x100n));
    assert.equal(p.client.setDeviceStateFd(0, 0, writeEnd), undefined);
    const sent = p.backend.next();
    assert.equal(sent.fds.length, 1);
    sent.fds.forEach(closeQuietly);

    p.backend.reply(R.SET_DEVICE_STATE_FD, encodeU64(0n), [readEnd]);
    const returned = p.client.setDeviceStateFd(1, 0, writeEnd);
    assert.ok(returned !== undefined && returned >= 0);
    closeQuietly(returned);
    p.backend.next().fds.forEach(closeQuietly);

    p.backend.reply(R.SET_DEVICE_STATE_FD, encodeU64(1n));
    assert.throws(() => p.client.setDeviceStateFd(0, 0, writeEnd), BackendRefused);
    p.backend.next().fds.forEach(closeQuietly);

    p.backend.reply(R.CHECK_DEVICE_STATE, encodeU64(1n));
    assert.throws(() => p.client.checkDeviceState(), BackendRefused);
  } finally {
    closeQuietly(readEnd);
    closeQuietly(writeEnd);
  }
});

Deno.test("connect retries until the socket exists, then times out", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-client-" });
  try {
    const missing = `${dir}/missing.sock`;
    const start = performance.now();
    assert.throws(() => VhostUserClient.connect(missing, 80), BackendTimeout);
    assert.ok(performance.now() - start >= 75);
    const path = `${dir}/listening.sock`;
    const listener = socketUnix();
    try {
      bindUnix(listener, path);
      listenSocket(listener, 1);
      const client = VhostUserClient.connect(path, 1000);
      client.close();
      client.close(); // idempotent
      assert.throws(() => client.getFeatures(), /closed/);
    } finally {
      closeQuietly(listener);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
