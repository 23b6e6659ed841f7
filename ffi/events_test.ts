import assert from "node:assert/strict";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLLET,
  EPOLLIN,
  EPOLLOUT,
  POLLIN,
  POLLNVAL,
  POLLOUT,
} from "./constants.ts";
import {
  epollCreate,
  epollCtl,
  EpollEvents,
  epollWait,
  eventfd,
  eventfdRead,
  eventfdWrite,
  pollFd,
  signalEventfd,
} from "./events.ts";
import { closeFd, closeQuietly, pipe2, readFd } from "./fd.ts";
import type { WaitReply, WaitRequest } from "./testdata/epoll_worker.ts";
import { nextMessage } from "./testdata/next_message.ts";

Deno.test("eventfd counts writes and resets on read", () => {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  try {
    assert.equal(eventfdRead(fd), 0, "EAGAIN reads as 0");
    eventfdWrite(fd);
    eventfdWrite(fd, 5);
    eventfdWrite(fd, 0x1_0000_0002); // above 2^32
    assert.equal(eventfdRead(fd), 1 + 5 + 0x1_0000_0002);
    assert.equal(eventfdRead(fd), 0);
  } finally {
    closeFd(fd);
  }
  const semaphore = eventfd(3, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
  try {
    assert.equal(eventfdRead(semaphore), 1);
    assert.equal(eventfdRead(semaphore), 1);
    assert.equal(eventfdRead(semaphore), 1);
    assert.equal(eventfdRead(semaphore), 0);
  } finally {
    closeFd(semaphore);
  }
  assert.throws(() => eventfdWrite(-1), { code: "EBADF", syscall: "eventfd_write" });
  assert.throws(() => eventfdRead(-1), { code: "EBADF" });
});

Deno.test("epoll reports an eventfd's readiness with its data, and times out otherwise", () => {
  const epfd = epollCreate();
  const a = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const b = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  try {
    epollCtl(epfd, EPOLL_CTL_ADD, a, EPOLLIN, 7);
    epollCtl(epfd, EPOLL_CTL_ADD, b, EPOLLIN, 0x2_0000_0001);
    const out = new EpollEvents(4);
    assert.equal(out.capacity, 4);
    assert.equal(out.buffer.length, 48);

    const start = performance.now();
    assert.equal(epollWait(epfd, out, 50), 0);
    const elapsed = performance.now() - start;
    assert.ok(elapsed >= 40, `timeout honoured (${elapsed.toFixed(1)} ms)`);

    eventfdWrite(b);
    assert.equal(epollWait(epfd, out, 1000), 1);
    assert.equal(out.data(0), 0x2_0000_0001);
    assert.equal(out.events(0), EPOLLIN);

    eventfdWrite(a, 2);
    const n = epollWait(epfd, out, 0);
    assert.equal(n, 2);
    const seen = new Set([out.data(0), out.data(1)]);
    assert.deepEqual(seen, new Set([7, 0x2_0000_0001]));

    eventfdRead(a);
    eventfdRead(b);
    assert.equal(epollWait(epfd, out, 0), 0, "drained");

    // EPOLLET with EPOLLOUT: the high bit survives packing.
    epollCtl(epfd, EPOLL_CTL_MOD, a, EPOLLOUT | EPOLLET, 9);
    assert.equal(epollWait(epfd, out, 0), 1);
    assert.equal(out.data(0), 9);
    assert.equal(out.events(0), EPOLLOUT);
    assert.equal(epollWait(epfd, out, 0), 0, "edge-triggered: reported once");

    epollCtl(epfd, EPOLL_CTL_DEL, a, 0, 0);
    assert.throws(() => epollCtl(epfd, EPOLL_CTL_DEL, a, 0, 0), { code: "ENOENT" });
    assert.throws(() => epollCtl(epfd, EPOLL_CTL_ADD, b, EPOLLIN, 0), { code: "EEXIST" });
  } finally {
    closeFd(a);
    closeFd(b);
    closeFd(epfd);
  }
});

Deno.test("pollFd returns revents, 0 on timeout, POLLNVAL for a closed fd", () => {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  try {
    assert.equal(pollFd(fd, POLLIN, 10), 0);
    eventfdWrite(fd);
    assert.equal(pollFd(fd, POLLIN, 0), POLLIN);
    assert.equal(pollFd(fd, POLLIN | POLLOUT, 0), POLLIN | POLLOUT);
  } finally {
    closeFd(fd);
  }
  assert.equal(pollFd(fd, POLLIN, 0), POLLNVAL);
});

Deno.test("a Worker blocked in epollWait is woken by an eventfd write from this thread", async () => {
  const epfd = epollCreate();
  const kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const worker = new Worker(new URL("./testdata/epoll_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    epollCtl(epfd, EPOLL_CTL_ADD, kick, EPOLLIN, 42);
    let reply = nextMessage<WaitReply>(worker);
    worker.postMessage({ epfd, timeoutMs: 10_000 } satisfies WaitRequest);
    const waiting = await reply;
    assert.deepEqual(waiting, { kind: "waiting", closeErrorCode: "EBADF" });
    reply = nextMessage<WaitReply>(worker);
    // Let the Worker reach epoll_wait and block there.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const sent = performance.now();
    eventfdWrite(kick);
    const woken = await reply;
    const latency = performance.now() - sent;
    assert.equal(woken.kind, "woken");
    if (woken.kind !== "woken") return;
    assert.equal(woken.count, 1);
    assert.equal(woken.data, 42);
    assert.equal(woken.events, EPOLLIN);
    assert.ok(woken.elapsedMs >= 250, `Worker was blocked (${woken.elapsedMs.toFixed(0)} ms)`);
    assert.ok(latency < 5_000, `woken promptly (${latency.toFixed(1)} ms)`);
    assert.equal(eventfdRead(kick), 1);
  } finally {
    worker.terminate();
    closeQuietly(kick);
    closeQuietly(epfd);
  }
});

Deno.test("signalEventfd: true when signalled (EAGAIN at the counter's maximum too), false on error, never throws", () => {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  try {
    assert.equal(signalEventfd(fd), true);
    assert.equal(signalEventfd(fd), true);
    assert.equal(eventfdRead(fd), 2);
    // The largest counter an eventfd holds: one more would block a blocking eventfd.
    eventfdWrite(fd, 0xffff_ffff_ffff_fffen);
    assert.throws(() => eventfdWrite(fd, 1), { code: "EAGAIN" });
    const started = performance.now();
    assert.equal(signalEventfd(fd), true, "at its maximum it is signalled already");
    assert.ok(performance.now() - started < 1000);
    assert.equal(pollFd(fd, POLLIN, 0) & POLLIN, POLLIN, "still readable");
    const counter = new Uint8Array(8);
    assert.equal(readFd(fd, counter), 8);
    assert.equal(
      new DataView(counter.buffer).getBigUint64(0, true),
      0xffff_ffff_ffff_fffen,
      "the counter was left alone",
    );
  } finally {
    closeFd(fd);
  }
  const closed = eventfd(0);
  closeFd(closed);
  assert.equal(signalEventfd(closed), false, "EBADF");
  assert.equal(signalEventfd(-1), false);
  const [r, w] = pipe2();
  try {
    assert.equal(signalEventfd(r), false, "the read end of a pipe takes no writes");
  } finally {
    closeQuietly(r);
    closeQuietly(w);
  }
});
