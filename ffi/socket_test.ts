import assert from "node:assert/strict";
import {
  F_GETFD,
  FD_CLOEXEC,
  O_NONBLOCK,
  SHUT_WR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_SEQPACKET,
  SOCK_STREAM,
} from "./constants.ts";
import { closeFd, closeQuietly, getStatusFlags, pipe2, readFd, writeFd } from "./fd.ts";
import {
  acceptConnection,
  bindUnix,
  connectUnix,
  listenSocket,
  receiveBytes,
  receiveMessage,
  sendMessage,
  shutdownSocket,
  socketPair,
  socketPeerCredentials,
  socketUnix,
} from "./socket.ts";
import { libc } from "./libc.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** FD_CLOEXEC of `fd`, read with fcntl(F_GETFD). */
function hasCloexec(fd: number): boolean {
  return (libc().fcntl(fd, F_GETFD, 0) & FD_CLOEXEC) !== 0;
}

/** Checks that `writeEnd` (sent over the socket) still feeds `readEnd` (kept here). */
function assertPipeWorks(readEnd: number, writeEnd: number, text: string): void {
  assert.equal(writeFd(writeEnd, encoder.encode(text)), text.length);
  const buf = new Uint8Array(64);
  const n = readFd(readEnd, buf);
  assert.equal(decoder.decode(buf.subarray(0, n)), text);
}

function withPair(body: (a: number, b: number) => void, type = SOCK_STREAM): void {
  const [a, b] = socketPair(type);
  try {
    body(a, b);
  } finally {
    closeQuietly(a);
    closeQuietly(b);
  }
}

Deno.test("sendMessage/receiveMessage with no fds", () => {
  withPair((a, b) => {
    const data = encoder.encode("no fds here");
    assert.equal(sendMessage(a, data), data.length);
    const buf = new Uint8Array(64);
    const message = receiveMessage(b, buf, 4);
    assert.equal(message.bytes, data.length);
    assert.deepEqual(message.fds, []);
    assert.equal(message.controlTruncated, false);
    assert.deepEqual(buf.subarray(0, message.bytes), data);
  });
});

Deno.test("one fd passed over a socketpair is usable and close-on-exec", () => {
  withPair((a, b) => {
    const [readEnd, writeEnd] = pipe2();
    try {
      assert.equal(sendMessage(a, encoder.encode("x"), [writeEnd]), 1);
      const message = receiveMessage(b, new Uint8Array(8), 1);
      assert.equal(message.bytes, 1);
      assert.equal(message.fds.length, 1);
      const [received] = message.fds;
      assert.notEqual(received, writeEnd);
      assert.ok(hasCloexec(received), "MSG_CMSG_CLOEXEC applied");
      assertPipeWorks(readEnd, received, "through the passed fd");
      closeFd(received);
    } finally {
      closeQuietly(readEnd);
      closeQuietly(writeEnd);
    }
  });
});

Deno.test("three fds arrive in order and each works", () => {
  withPair((a, b) => {
    const pipes = [pipe2(), pipe2(), pipe2()];
    try {
      const payload = encoder.encode("three");
      assert.equal(sendMessage(a, payload, pipes.map(([, w]) => w)), payload.length);
      const buf = new Uint8Array(16);
      const message = receiveMessage(b, buf, 8);
      assert.equal(message.bytes, payload.length);
      assert.equal(message.controlTruncated, false);
      assert.equal(message.fds.length, 3);
      message.fds.forEach((fd, i) => {
        assertPipeWorks(pipes[i][0], fd, `pipe ${i}`);
        closeFd(fd);
      });
    } finally {
      for (const [r, w] of pipes) {
        closeQuietly(r);
        closeQuietly(w);
      }
    }
  });
});

Deno.test("too few fd slots: MSG_CTRUNC reported, the fds that fit returned, none leaked", () => {
  withPair((a, b) => {
    const pipes = [pipe2(), pipe2(), pipe2()];
    try {
      const writers = pipes.map(([, w]) => w);
      sendMessage(a, encoder.encode("1"), writers);
      const one = receiveMessage(b, new Uint8Array(8), 1);
      assert.equal(one.bytes, 1);
      assert.equal(one.controlTruncated, true);
      assert.equal(one.fds.length, 1);
      assertPipeWorks(pipes[0][0], one.fds[0], "first fd still delivered");
      closeFd(one.fds[0]);

      sendMessage(a, encoder.encode("2"), writers);
      const none = receiveMessage(b, new Uint8Array(8), 0);
      assert.equal(none.bytes, 1);
      assert.equal(none.controlTruncated, true);
      assert.deepEqual(none.fds, []);

      // The dropped fds were closed by the kernel: closing our write ends
      // must leave no writer, so every read end sees EOF.
      for (const [r, w] of pipes) {
        closeFd(w);
        assert.equal(readFd(r, new Uint8Array(8)), 0, "no stray write end survives");
      }
    } finally {
      for (const [r, w] of pipes) {
        closeQuietly(r);
        closeQuietly(w);
      }
    }
  });
});

Deno.test("messages larger than the staging buffer go straight to the caller's memory", () => {
  withPair((a, b) => {
    const data = new Uint8Array(new ArrayBuffer(10_000));
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    const [readEnd, writeEnd] = pipe2();
    try {
      assert.equal(sendMessage(a, data, [writeEnd]), data.length);
      const buf = new Uint8Array(new ArrayBuffer(20_000));
      let total = 0;
      const fds: number[] = [];
      while (total < data.length) {
        const message = receiveMessage(b, buf.subarray(total), 2);
        assert.ok(message.bytes > 0);
        fds.push(...message.fds);
        total += message.bytes;
      }
      assert.deepEqual(buf.subarray(0, total), data);
      assert.equal(fds.length, 1);
      closeFd(fds[0]);
    } finally {
      closeQuietly(readEnd);
      closeQuietly(writeEnd);
    }
  });
});

Deno.test("seqpacket keeps message boundaries", () => {
  withPair((a, b) => {
    sendMessage(a, encoder.encode("first"));
    sendMessage(a, encoder.encode("second!"));
    const buf = new Uint8Array(64);
    assert.equal(receiveMessage(b, buf, 0).bytes, 5);
    assert.equal(receiveMessage(b, buf, 0).bytes, 7);
    assert.equal(decoder.decode(buf.subarray(0, 7)), "second!");
  }, SOCK_SEQPACKET);
});

Deno.test("peer close: receive returns 0, send gives EPIPE without a signal", () => {
  withPair((a, b) => {
    shutdownSocket(a, SHUT_WR);
    const buf = new Uint8Array(8);
    assert.equal(receiveMessage(b, buf, 1).bytes, 0);
    assert.equal(receiveBytes(b, buf), 0);
    closeFd(b);
    assert.throws(() => sendMessage(a, encoder.encode("late")), { code: "EPIPE" });
  });
});

Deno.test("non-blocking receive with nothing pending throws EAGAIN", () => {
  const [a, b] = socketPair(SOCK_STREAM, SOCK_CLOEXEC | SOCK_NONBLOCK);
  try {
    assert.throws(() => receiveMessage(b, new Uint8Array(8), 1), { code: "EAGAIN" });
    assert.throws(() => receiveBytes(b, new Uint8Array(8)), { code: "EAGAIN" });
    assert.throws(() => receiveMessage(b, new Uint8Array(8), -1), { code: "EINVAL" });
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

Deno.test("bind, listen, connect and accept4 on a filesystem socket", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/vhost.sock`;
  const listener = socketUnix(SOCK_STREAM, SOCK_CLOEXEC | SOCK_NONBLOCK);
  const client = socketUnix();
  let server = -1;
  try {
    bindUnix(listener, path);
    assert.ok(Deno.statSync(path).isSocket);
    listenSocket(listener, 4);
    assert.throws(() => acceptConnection(listener), { code: "EAGAIN", syscall: "accept4" });
    connectUnix(client, path);
    server = acceptConnection(listener);
    assert.ok(hasCloexec(server));
    assert.equal(getStatusFlags(server) & O_NONBLOCK, 0, "accepted fd is blocking by default");
    sendMessage(client, encoder.encode("ping"));
    const buf = new Uint8Array(8);
    assert.equal(receiveBytes(server, buf), 4);
    assert.equal(decoder.decode(buf.subarray(0, 4)), "ping");
    const credentials = socketPeerCredentials(server);
    assert.equal(credentials.pid, Deno.pid);
    assert.equal(credentials.uid, Deno.uid());
    assert.equal(credentials.gid, Deno.gid());
    assert.throws(() => bindUnix(socketUnixClosed(), path), { code: "EBADF" });
  } finally {
    closeQuietly(server);
    closeQuietly(client);
    closeQuietly(listener);
    await Deno.remove(dir, { recursive: true });
  }
});

/** An fd number that was just closed. */
function socketUnixClosed(): number {
  const fd = socketUnix();
  closeFd(fd);
  return fd;
}

Deno.test("abstract socket names work; bad paths are refused with clear codes", () => {
  const name = `\0vhostd-test-${crypto.randomUUID()}`;
  const listener = socketUnix();
  const client = socketUnix();
  let server = -1;
  try {
    bindUnix(listener, name);
    listenSocket(listener, 1);
    connectUnix(client, name);
    server = acceptConnection(listener);
    assert.ok(server >= 0);
    assert.throws(() => bindUnix(client, "/tmp/" + "x".repeat(103)), (error: unknown) => {
      assert.ok(error instanceof Error);
      assert.equal((error as { code?: string }).code, "ENAMETOOLONG");
      assert.match(error.message, /108 bytes/);
      return true;
    });
    assert.throws(() => connectUnix(client, ""), { code: "EINVAL" });
    assert.throws(() => connectUnix(client, "/tmp/a\0b"), { code: "EINVAL" });
    const missing = socketUnix();
    try {
      assert.throws(
        () => connectUnix(missing, `/tmp/missing-${crypto.randomUUID()}.sock`),
        { code: "ENOENT" },
      );
    } finally {
      closeFd(missing);
    }
  } finally {
    closeQuietly(server);
    closeQuietly(client);
    closeQuietly(listener);
  }
});

Deno.test("a 107-byte path is accepted", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/` + "s".repeat(107 - dir.length - 1);
  assert.equal(encoder.encode(path).length, 107);
  const fd = socketUnix();
  try {
    bindUnix(fd, path);
    assert.ok(Deno.statSync(path).isSocket);
  } finally {
    closeFd(fd);
    await Deno.remove(dir, { recursive: true });
  }
});
