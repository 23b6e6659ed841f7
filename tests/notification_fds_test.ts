/**
 * Notification fds from a hostile or broken front-end, against a real vhostd
 * process: a kick, call or err fd that is not an eventfd (/dev/null, a
 * regular file, a directory, a pipe, a full pipe, a socket) is refused when
 * it arrives, the ring keeps the fd it had and goes on serving, and a good
 * eventfd sent later is taken. A call eventfd whose counter is at its maximum
 * (a signal would block) never stops the queue Worker: GET_VRING_BASE
 * answers and the next front-end is served.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo } from "./support/fd_checks.ts";
import {
  closeQuietly,
  EFD_CLOEXEC,
  eventfd,
  eventfdWrite,
  getStatusFlags,
  isErrno,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  openFile,
  pipe2,
  pollFd,
  POLLIN,
  readFd,
  setNonBlocking,
  socketPair,
  writeFd,
} from "../ffi/mod.ts";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { BackendRefused, type BlkDriver } from "../src/frontend/mod.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

/** The largest value an eventfd counter holds: adding 1 would block (or give EAGAIN). */
const EVENTFD_MAX = 0xffff_ffff_ffff_fffen;

/** A bad fd to send, and its name. */
interface BadFd {
  name: string;
  /** Opens the fd to send (closed by the test afterwards) and any others to close with it. */
  open: (vhostd: VhostdProcess) => { fd: number; keep?: number[] };
}

/** The write end of a pipe whose buffer is full and that nobody reads (blocking again). */
function fullPipe(): { fd: number; keep: number[] } {
  const [r, w] = pipe2(O_CLOEXEC);
  setNonBlocking(w, true);
  const chunk = new Uint8Array(65536);
  for (;;) {
    try {
      writeFd(w, chunk);
    } catch (e) {
      if (isErrno(e, "EAGAIN")) break;
      throw e;
    }
  }
  setNonBlocking(w, false);
  return { fd: w, keep: [r] };
}

/** Two ends of a pipe: send `end`, keep the other. */
function pipeEnd(end: 0 | 1): { fd: number; keep: number[] } {
  const ends = pipe2(O_CLOEXEC);
  return { fd: ends[end], keep: [ends[1 - end]] };
}

const DEV_NULL: BadFd = {
  name: "/dev/null",
  open: () => ({ fd: openFile("/dev/null", O_RDWR | O_CLOEXEC) }),
};
const REGULAR_FILE: BadFd = {
  name: "a regular file",
  open: (vhostd) => {
    const path = `${vhostd.dir}/not-an-eventfd`;
    Deno.writeFileSync(path, new Uint8Array(8));
    return { fd: openFile(path, O_RDWR | O_CLOEXEC) };
  },
};
const DIRECTORY: BadFd = {
  name: "a directory",
  open: (vhostd) => ({ fd: openFile(vhostd.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }),
};
const SOCKET: BadFd = {
  name: "a socket",
  open: () => {
    const [a, b] = socketPair();
    return { fd: a, keep: [b] };
  },
};

const BAD_KICKS: BadFd[] = [
  DEV_NULL,
  REGULAR_FILE,
  DIRECTORY,
  { name: "the read end of a pipe", open: () => pipeEnd(0) },
  { name: "the write end of a pipe", open: () => pipeEnd(1) },
  SOCKET,
];

const BAD_CALLS: BadFd[] = [
  { name: "the write end of a full pipe nobody reads", open: fullPipe },
  { name: "the write end of a pipe", open: () => pipeEnd(1) },
  DEV_NULL,
  REGULAR_FILE,
];

const BAD_ERRS: BadFd[] = [
  { name: "the write end of a full pipe nobody reads", open: fullPipe },
  DEV_NULL,
];

/** A verified write and read-back on queue 0, through the driver's own kick and call fds. */
function assertIo(driver: BlkDriver, seed: number, what: string): void {
  const data = pattern(4096, seed);
  assert.equal(driver.write(0, 8 * seed, data).status, BlkStatus.OK, `${what}: write`);
  const back = driver.read(0, 8 * seed, 4096);
  assert.equal(back.status, BlkStatus.OK, `${what}: read`);
  assert.deepEqual(back.data, data, `${what}: read-back`);
}

/** Sends `bad` with `send` and expects a refusal (a non-zero REPLY_ACK). */
function assertRefused(
  vhostd: VhostdProcess,
  bad: BadFd,
  what: string,
  send: (fd: number) => void,
): void {
  const { fd, keep = [] } = bad.open(vhostd);
  try {
    assert.throws(() => send(fd), BackendRefused, `${what} = ${bad.name} must be refused`);
  } finally {
    closeQuietly(fd);
    keep.forEach(closeQuietly);
  }
}

async function assertNoFdLeak(vhostd: VhostdProcess, before: number): Promise<void> {
  const after = await vhostd.fdCountDownTo(before);
  assertFdsBackTo(after, before, vhostd.fdTargets().join("\n"));
}

/** Waits (polling the used ring, not the call fd) until queue 0 has a used element. */
async function waitUsed(driver: BlkDriver, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!driver.ring(0).hasUsed()) {
    if (performance.now() > deadline) throw new Error(`no used element in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("a kick fd that is not an eventfd is refused, the ring keeps its kick fd, a later eventfd is taken", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    BlkFixture.open(vhostd.socketPath).close();
    const baseline = await vhostd.settledFdCount();
    {
      using s = BlkFixture.open(vhostd.socketPath);
      assertIo(s.driver, 1, "before");
      for (const [i, bad] of BAD_KICKS.entries()) {
        assertRefused(vhostd, bad, "kick fd", (fd) => s.client.setVringKick(0, fd));
        // The ring still runs on the driver's kick eventfd.
        assertIo(s.driver, 2 + i, `after a kick fd = ${bad.name}`);
      }
      assert.match(vhostd.log(), /SET_VRING_KICK failed: ring 0: kick fd refused.*not an eventfd/);

      // A new, good kick eventfd: the ring serves what is kicked through it.
      const kick = eventfd(0, EFD_CLOEXEC);
      try {
        s.client.setVringKick(0, kick);
        const data = pattern(4096, 50);
        const written = s.driver.submit(0, { op: "write", sector: 400, data });
        eventfdWrite(kick, 1);
        assert.equal(s.driver.waitFor(0, written).status, BlkStatus.OK);
        const read = s.driver.submit(0, { op: "read", sector: 400, length: 4096 });
        eventfdWrite(kick, 1);
        const back = s.driver.waitFor(0, read);
        assert.equal(back.status, BlkStatus.OK);
        assert.deepEqual(back.data, data);
      } finally {
        closeQuietly(kick);
      }
    }
    // A bad kick fd for a ring that is not started yet: refused, the ring then starts normally.
    {
      using s = BlkFixture.open(vhostd.socketPath);
      s.driver.stopQueue(0);
      assertRefused(vhostd, DEV_NULL, "kick fd", (fd) => s.client.setVringKick(0, fd));
      s.driver.restartQueue(0);
      assertIo(s.driver, 60, "stopped ring, bad kick, then its own");
    }
    await assertNoFdLeak(vhostd, baseline);
  });
});

Deno.test("a call or err fd that is not an eventfd (a full pipe, a pipe, /dev/null, a file) is refused; the ring keeps signalling its call eventfd", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    BlkFixture.open(vhostd.socketPath).close();
    const baseline = await vhostd.settledFdCount();
    {
      using s = BlkFixture.open(vhostd.socketPath);
      const ring = s.driver.ring(0);
      for (const [i, bad] of BAD_CALLS.entries()) {
        assertRefused(vhostd, bad, "call fd", (fd) => s.client.setVringCall(0, fd));
        // The completion is signalled on the driver's own call eventfd.
        const data = pattern(4096, 10 + i);
        const token = s.driver.submit(0, { op: "write", sector: 80 + 8 * i, data });
        s.driver.notify(0);
        assert.ok(
          (pollFd(ring.callFd, POLLIN, 3000) & POLLIN) !== 0,
          `after a call fd = ${bad.name}: the ring's call eventfd is signalled`,
        );
        assert.equal(s.driver.waitFor(0, token).status, BlkStatus.OK);
        assertIo(s.driver, 20 + i, `after a call fd = ${bad.name}`);
      }
      for (const [i, bad] of BAD_ERRS.entries()) {
        assertRefused(vhostd, bad, "err fd", (fd) => s.client.setVringErr(0, fd));
        assertIo(s.driver, 30 + i, `after an err fd = ${bad.name}`);
      }
      assert.match(vhostd.log(), /SET_VRING_CALL failed: ring 0: call fd refused.*not an eventfd/);
      assert.match(vhostd.log(), /SET_VRING_ERR failed: ring 0: err fd refused.*not an eventfd/);
      // GET_VRING_BASE answers: nothing is stuck on a pipe.
      assert.equal(s.driver.stopQueue(0), ring.queue.availIndex());
    }
    {
      using next = BlkFixture.open(vhostd.socketPath);
      assertIo(next.driver, 40, "next session");
    }
    await assertNoFdLeak(vhostd, baseline);
  });
});

Deno.test("a call eventfd at its counter's maximum does not block the queue Worker: GET_VRING_BASE answers, the next session works", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    {
      using s = BlkFixture.open(vhostd.socketPath);
      assertIo(s.driver, 1, "before");
      // A blocking eventfd, as a front-end may make it, one signal away from overflow.
      const call = eventfd(0, EFD_CLOEXEC);
      try {
        eventfdWrite(call, EVENTFD_MAX);
        s.client.setVringCall(0, call);
        const data = pattern(4096, 7);
        const token = s.driver.submit(0, { op: "write", sector: 56, data });
        s.driver.notify(0);
        await waitUsed(s.driver, 5000);
        assert.equal(s.driver.waitFor(0, token).status, BlkStatus.OK);
        // The Worker signalled (or found the counter full) and went on: it answers a stop
        // (a blocked Worker never would: the client's timeout would end the test).
        assert.equal(s.driver.stopQueue(0), s.driver.ring(0).queue.availIndex());
        assert.equal(
          getStatusFlags(call) & O_NONBLOCK,
          O_NONBLOCK,
          "vhostd made the accepted call fd non-blocking",
        );
        const counter = new Uint8Array(8);
        assert.equal(readFd(call, counter), 8);
        assert.equal(new DataView(counter.buffer).getBigUint64(0, true), EVENTFD_MAX);
        // The ring starts again (with the driver's own call eventfd) and serves.
        s.driver.restartQueue(0);
        assert.deepEqual(s.driver.read(0, 56, 4096).data, data);
        assertIo(s.driver, 3, "restarted");
      } finally {
        closeQuietly(call);
      }
    }
    using next = BlkFixture.open(vhostd.socketPath);
    assertIo(next.driver, 2, "next session");
    assert.deepEqual(next.driver.read(0, 56, 4096).data, pattern(4096, 7));
  });
});
