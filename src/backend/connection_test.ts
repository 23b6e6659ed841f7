import assert from "node:assert/strict";
import {
  closeQuietly,
  eventfd,
  eventfdRead,
  eventfdWrite,
  pollFd,
  POLLIN,
  receiveBytes,
  receiveMessage,
  sendMessage,
  setNonBlocking,
  socketPair,
} from "../../ffi/mod.ts";
import {
  decodeHeader,
  encodeMessage,
  encodeReply,
  encodeU64,
  encodeVringState,
  FrontendRequest as R,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
} from "../protocol/mod.ts";
import { copiesOf } from "../../tests/support/backend_doubles.ts";
import { Connection, type ReadResult } from "./connection.ts";
import type { SlowSend } from "../../tests/support/slow_frontend_worker.ts";

/**
 * Reads the next message, waiting (blocking this thread) up to `timeoutMs`
 * in all for the rest of one that has started: the daemon's patience in one
 * call, so each test reads like a conversation.
 */
function readMessage(connection: Connection, timeoutMs = 1000): ReadResult {
  let deadline: number | undefined;
  for (;;) {
    const r = connection.readAvailable();
    if (r.kind !== "again" || !connection.midMessage) return r;
    deadline ??= performance.now() + timeoutMs;
    const left = Math.ceil(deadline - performance.now());
    if (left <= 0 || (pollFd(connection.fd, POLLIN, left) & POLLIN) === 0) {
      return { kind: "broken", reason: connection.abandonPartial("peer stalled") };
    }
  }
}

/** A Connection on one end of a socket pair; the test plays the front-end on the other. */
function withConnection(
  body: (connection: Connection, peer: number, closePeer: () => void) => void | Promise<void>,
): () => Promise<void> {
  return async () => {
    const [ours, peer] = socketPair();
    setNonBlocking(ours, true);
    const connection = new Connection(ours);
    let peerOpen = true;
    // Closing twice could close an fd number another thread got meanwhile.
    const closePeer = () => {
      if (peerOpen) closeQuietly(peer);
      peerOpen = false;
    };
    try {
      await body(connection, peer, closePeer);
    } finally {
      connection.close();
      closePeer();
    }
  };
}

/** Header of a message announcing `size` payload bytes. */
function headerOnly(request: number, size: number): Uint8Array {
  const header = new Uint8Array(HEADER_SIZE);
  const view = new DataView(header.buffer);
  view.setUint32(0, request, true);
  view.setUint32(4, 1, true);
  view.setUint32(8, size, true);
  return header;
}

function expectMessage(result: ReadResult) {
  assert.equal(result.kind, "message", JSON.stringify(result));
  return (result as Extract<ReadResult, { kind: "message" }>).message;
}

function expectBroken(result: ReadResult, reason: RegExp): void {
  assert.equal(result.kind, "broken", JSON.stringify(result));
  assert.match((result as Extract<ReadResult, { kind: "broken" }>).reason, reason);
}

/** Runs `body` with a slow-peer Worker that is loaded and waiting. */
async function withSlowPeer(
  body: (send: (s: SlowSend) => Promise<void>) => Promise<void>,
): Promise<void> {
  const worker = new Worker(
    new URL("../../tests/support/slow_frontend_worker.ts", import.meta.url),
    {
      type: "module",
    },
  );
  const messages: string[] = [];
  let wake: (() => void) | undefined;
  worker.onmessage = (e: MessageEvent<string>) => {
    messages.push(e.data);
    wake?.();
  };
  const next = async (): Promise<string> => {
    while (messages.length === 0) await new Promise<void>((resolve) => wake = resolve);
    return messages.shift()!;
  };
  try {
    assert.equal(await next(), "ready");
    // Posting does not need this thread afterwards: the Worker sends while readMessage() blocks.
    await body((s) => {
      worker.postMessage(s);
      return Promise.resolve();
    });
  } finally {
    worker.terminate();
  }
}

Deno.test(
  "reads a whole message with its fds; nothing pending gives 'again'",
  withConnection((connection, peer) => {
    assert.deepEqual(readMessage(connection), { kind: "again" });
    const kick = eventfd();
    const payload = encodeU64(1);
    sendMessage(peer, encodeMessage(R.SET_VRING_KICK, 1, payload), [kick]);
    const message = expectMessage(readMessage(connection));
    assert.deepEqual(message.header, { request: R.SET_VRING_KICK, flags: 1, size: 8 });
    assert.deepEqual(message.payload, payload);
    assert.equal(message.fds.length, 1);
    assert.deepEqual(copiesOf(kick), message.fds);
    // The received fd is the same eventfd.
    eventfdWrite(message.fds[0], 5);
    assert.equal(eventfdRead(kick), 5);
    closeQuietly(message.fds[0]);
    closeQuietly(kick);
    assert.deepEqual(readMessage(connection), { kind: "again" });
  }),
);

Deno.test(
  "two messages sent together are read one at a time",
  withConnection((connection, peer) => {
    const first = encodeMessage(R.GET_FEATURES, 1);
    const second = encodeMessage(R.SET_VRING_NUM, 1, encodeVringState({ index: 1, num: 64 }));
    const both = new Uint8Array(first.length + second.length);
    both.set(first);
    both.set(second, first.length);
    sendMessage(peer, both);
    const a = expectMessage(readMessage(connection));
    assert.equal(a.header.request, R.GET_FEATURES);
    assert.equal(a.payload.length, 0);
    const b = expectMessage(readMessage(connection));
    assert.equal(b.header.request, R.SET_VRING_NUM);
    assert.deepEqual(b.payload, encodeVringState({ index: 1, num: 64 }));
    assert.deepEqual(readMessage(connection), { kind: "again" });
  }),
);

Deno.test(
  "a header split in two and a payload arriving late are waited for",
  withConnection(async (connection, peer) => {
    await withSlowPeer(async (send) => {
      const whole = encodeMessage(R.SET_VRING_NUM, 1, encodeVringState({ index: 0, num: 256 }));
      const call = eventfd();
      // Five header bytes with the fd now, the rest 200 ms later.
      sendMessage(peer, whole.subarray(0, 5), [call]);
      await send({ fd: peer, delayMs: 200, bytes: whole.subarray(5) });
      let start = performance.now();
      let message = expectMessage(readMessage(connection));
      assert.ok(performance.now() - start >= 150, "the rest cannot have arrived sooner");
      assert.deepEqual(message.header, { request: R.SET_VRING_NUM, flags: 1, size: 8 });
      assert.deepEqual(message.payload, whole.subarray(HEADER_SIZE));
      assert.equal(message.fds.length, 1);
      assert.deepEqual(copiesOf(call), message.fds);
      message.fds.forEach(closeQuietly);
      assert.deepEqual(copiesOf(call), []);
      closeQuietly(call);

      // The whole header now, the payload 300 ms later (inside the 1 s timeout).
      sendMessage(peer, whole.subarray(0, HEADER_SIZE));
      await send({ fd: peer, delayMs: 300, bytes: whole.subarray(HEADER_SIZE) });
      start = performance.now();
      message = expectMessage(readMessage(connection));
      assert.ok(performance.now() - start >= 250);
      assert.deepEqual(message.payload, whole.subarray(HEADER_SIZE));
      assert.deepEqual(readMessage(connection), { kind: "again" });
    });
  }),
);

Deno.test(
  "a payload that never arrives breaks the connection after about a second",
  withConnection((connection, peer) => {
    const fd = eventfd();
    sendMessage(peer, headerOnly(R.SET_VRING_CALL, 8), [fd]);
    const start = performance.now();
    const result = readMessage(connection);
    const elapsed = performance.now() - start;
    expectBroken(result, /stalled.*SET_VRING_CALL/);
    assert.ok(elapsed >= 900 && elapsed < 3000, `gave up after ${elapsed} ms`);
    assert.deepEqual(copiesOf(fd), [], "the fd that came with the header leaked");
    closeQuietly(fd);
  }),
);

Deno.test(
  "a payload trickling in past the deadline breaks the connection",
  withConnection(async (connection, peer) => {
    await withSlowPeer(async (send) => {
      // 16 payload bytes, 4 at a time every 400 ms: each gap is short, the whole is not.
      const payload = new Uint8Array(16).fill(1);
      sendMessage(peer, headerOnly(R.SET_MEM_TABLE, payload.length));
      for (let i = 0; i < 4; i++) {
        await send({ fd: peer, delayMs: 400 * (i + 1), bytes: payload.subarray(i * 4, i * 4 + 4) });
      }
      const start = performance.now();
      expectBroken(readMessage(connection), /stalled inside the payload of SET_MEM_TABLE/);
      const elapsed = performance.now() - start;
      assert.ok(elapsed >= 900 && elapsed < 1500, `gave up after ${elapsed} ms`);
    });
  }),
);

Deno.test(
  "a header that stops half-way breaks the connection",
  withConnection((connection, peer) => {
    sendMessage(peer, headerOnly(R.GET_FEATURES, 0).subarray(0, 7));
    const start = performance.now();
    expectBroken(readMessage(connection), /stalled inside a message header/);
    assert.ok(performance.now() - start >= 900);
  }),
);

Deno.test(
  "an oversized payload announcement breaks the connection at once",
  withConnection((connection, peer) => {
    const fd = eventfd();
    sendMessage(peer, headerOnly(R.SET_MEM_TABLE, MAX_PAYLOAD_SIZE + 1), [fd]);
    const start = performance.now();
    expectBroken(readMessage(connection), /SET_MEM_TABLE.*4097/);
    assert.ok(performance.now() - start < 500, "an oversized header must not wait for data");
    assert.deepEqual(copiesOf(fd), []);
    closeQuietly(fd);
    // The largest allowed payload is fine.
    const big = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD_SIZE);
    big.set(headerOnly(99, MAX_PAYLOAD_SIZE));
    big.fill(7, HEADER_SIZE);
    sendMessage(peer, big);
    const message = expectMessage(readMessage(connection));
    assert.equal(message.payload.length, MAX_PAYLOAD_SIZE);
    assert.equal(message.payload[MAX_PAYLOAD_SIZE - 1], 7);
  }),
);

Deno.test(
  "too many fds with one message break the connection and none leak",
  withConnection((connection, peer) => {
    const fds = Array.from({ length: 12 }, () => eventfd());
    sendMessage(peer, encodeMessage(R.SET_MEM_TABLE, 1, new Uint8Array(8)), fds);
    expectBroken(readMessage(connection), /too many fds/);
    for (const fd of fds) assert.deepEqual(copiesOf(fd), []);
    fds.forEach(closeQuietly);
  }),
);

Deno.test(
  "peer close: 'closed' between messages, 'broken' inside one, no fd leaked",
  async () => {
    await withConnection((connection, _peer, closePeer) => {
      closePeer();
      assert.deepEqual(readMessage(connection), { kind: "closed" });
    })();
    await withConnection((connection, peer, closePeer) => {
      const fd = eventfd();
      sendMessage(peer, headerOnly(R.SET_VRING_KICK, 8), [fd]);
      closePeer();
      const start = performance.now();
      expectBroken(readMessage(connection), /peer closed/);
      assert.ok(performance.now() - start < 500, "a closed peer must not be waited for");
      assert.deepEqual(copiesOf(fd), []);
      closeQuietly(fd);
    })();
  },
);

Deno.test(
  "send() delivers a reply with fds; close() is idempotent",
  withConnection((connection, peer) => {
    const fd = eventfd();
    connection.send(encodeReply(R.GET_FEATURES, encodeU64(0x1234n)), [fd]);
    const buf = new Uint8Array(64);
    const received = receiveMessage(peer, buf, 4);
    assert.equal(received.bytes, HEADER_SIZE + 8);
    assert.deepEqual(decodeHeader(buf), { request: R.GET_FEATURES, flags: 0x5, size: 8 });
    assert.equal(received.fds.length, 1);
    received.fds.forEach(closeQuietly);
    closeQuietly(fd);
    connection.close();
    // Our end is gone: the peer reads end of file.
    assert.equal(receiveBytes(peer, buf), 0);
    connection.close();
  }),
);
