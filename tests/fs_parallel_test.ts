/**
 * virtio-fs requests beside a stalled one, through a real `vhostd fs`: the
 * shared directory is scripts/latency_fs in hold mode, whose file answers
 * no read or write until the test releases it. With one READ (or FSYNC's
 * WRITE) held inside vhostd, requests on another queue, on the same queue
 * and on the high-priority queue are all answered; then the held one
 * completes with its data. No timing: the held count comes from latency_fs.
 */

import assert from "node:assert/strict";
import { O_DIRECT, O_RDWR } from "../ffi/mod.ts";
import { FuseOpcode } from "../src/devices/fs/fuse/mod.ts";
import { FsFixture, pattern } from "./support/fs_fixture.ts";
import { HeldBacking } from "./support/held_backing.ts";
import { CHAINS_PER_CLOCK_LOOK } from "../src/backend/ring_runner.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const ROOT = 1n;
const CONTENTS = pattern(64 * 1024, 9);

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/"));
}

/** `vhostd fs` arguments: the backing's directory shared over two request queues, I/O by `aio`. */
function twoQueues(backing: HeldBacking, aio: "io_uring" | "sync"): string[] {
  return ["--shared-dir", dirname(backing.image), "--num-request-queues", "2", "--aio", aio];
}

Deno.test("fs: a READ held by the backing holds back nothing else, on any queue", async () => {
  await using backing = await HeldBacking.start(CONTENTS);
  await withVhostd({ command: "fs", args: twoQueues(backing, "io_uring") }, async (vhostd) => {
    // A back-end that serves one request at a time never answers the GETATTR: fail in a minute.
    using fx = FsFixture.open(vhostd.socketPath, { numRequestQueues: 2, timeoutMs: 60_000 });
    const d = fx.driver;
    const file = d.lookup(ROOT, basename(backing.image));
    const { fh } = d.open(file.nodeid, O_RDWR);

    const heldRead = d.requestLater(FuseOpcode.READ, {
      fh,
      offset: 4096n,
      size: 8192,
      readFlags: 0,
      lockOwner: 0n,
      flags: 0,
    }, { queue: 1 });
    await backing.waitHeld(1);
    // The READ is inside vhostd, waiting for the backing. Everything else goes on:
    assert.equal(d.getattr(ROOT).attr.ino > 0n, true, "GETATTR on the other queue");
    const again = d.request(FuseOpcode.LOOKUP, {
      name: new TextEncoder().encode(basename(backing.image)),
    }, { queue: 1 });
    assert.equal(again.error, 0, "LOOKUP on the READ's own queue");
    d.forget(file.nodeid, 1n); // high-priority queue: returned without a reply
    const list = d.listDirectory(ROOT, true);
    assert.ok(
      list.some((e) => new TextDecoder().decode(e.name) === basename(backing.image)),
      "READDIRPLUS",
    );
    assert.equal(backing.held, 1, "the READ was still held meanwhile");

    backing.release();
    const read = heldRead();
    assert.equal(read.error, 0);
    assert.deepEqual(read.payload, CONTENTS.subarray(4096, 4096 + 8192));
    d.release(fh);
  });
});

Deno.test("fs: a WRITE held by the backing, then FSYNC; both complete in order of the backing", async () => {
  await using backing = await HeldBacking.start(new Uint8Array(16 * 1024));
  const args = ["--shared-dir", dirname(backing.image), "--aio", "io_uring"];
  await withVhostd({ command: "fs", args }, async (vhostd) => {
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    const file = d.lookup(ROOT, basename(backing.image));
    const { fh } = d.open(file.nodeid, O_RDWR);
    const data = pattern(4096, 3);
    const heldWrite = d.requestLater(FuseOpcode.WRITE, {
      fh,
      offset: 8192n,
      writeFlags: 0,
      lockOwner: 0n,
      flags: 0,
      data,
    });
    await backing.waitHeld(1);
    // A STATFS and a second file's metadata go by while the write waits.
    assert.ok(d.statfs().bsize > 0);
    assert.equal(d.getattr(file.nodeid).attr.size, 16n * 1024n);
    backing.stopHolding();
    assert.equal(heldWrite().error, 0);
    d.fsync(fh);
    assert.deepEqual(d.read(fh, 8192n, 4096), data);
    d.release(fh);
  });
});

/** The fdinfo `flags` of every fd of process `pid` open on a file named `name`. */
function openFlagsOf(pid: number, name: string): number[] {
  const flags: number[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      if (basename(Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`)) !== name) continue;
      const info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${entry.name}`);
      flags.push(parseInt(/^flags:\s*([0-7]+)/m.exec(info)![1], 8));
    } catch {
      // Closed meanwhile.
    }
  }
  return flags;
}

Deno.test("fs: WRITEs to a file on a FUSE share go through an O_DIRECT descriptor, in parallel", async () => {
  // io_uring hands a buffered FUSE write (which waits for the server) to its worker threads;
  // with O_DIRECT the kernel sends it to the server asynchronously (direct_writer.ts).
  await using backing = await HeldBacking.start(new Uint8Array(64 * 1024));
  const args = ["--shared-dir", dirname(backing.image), "--aio", "io_uring"];
  await withVhostd({ command: "fs", args }, async (vhostd) => {
    using fx = FsFixture.open(vhostd.socketPath, { timeoutMs: 60_000 });
    const d = fx.driver;
    const name = basename(backing.image);
    const file = d.lookup(ROOT, name);
    const { fh } = d.open(file.nodeid, O_RDWR);
    const direct = () => openFlagsOf(vhostd.daemonPid(), name).filter((f) => (f & O_DIRECT) !== 0);
    assert.equal(direct().length, 0, "no O_DIRECT descriptor before the first WRITE");
    const blocks = [0, 1, 2, 3].map((i) => pattern(4096, 20 + i));
    const writes = blocks.map((data, i) =>
      d.requestLater(FuseOpcode.WRITE, {
        fh,
        offset: BigInt(i * 8192 + 512), // not block-aligned: FUSE's direct I/O needs no alignment
        writeFlags: 0,
        lockOwner: 0n,
        flags: 0,
        data,
      })
    );
    await backing.waitHeld(4);
    assert.equal(direct().length, 1, "one O_DIRECT descriptor of the file");
    backing.stopHolding();
    for (const write of writes) assert.equal(write().error, 0);
    blocks.forEach((data, i) => assert.deepEqual(d.read(fh, BigInt(i * 8192 + 512), 4096), data));
    d.release(fh);
    assert.equal(direct().length, 0, "RELEASE closed the O_DIRECT descriptor too");
  });
});

Deno.test("fs: a queue kept full does not keep the Worker from another queue", async () => {
  // Synchronous I/O: each READ holds the Worker inside the backing until the test releases
  // it, so the test steps the Worker one READ at a time and looks between two steps.
  const reads = CHAINS_PER_CLOCK_LOOK * 3;
  await using backing = await HeldBacking.start(pattern((reads + 1) * 4096, 4));
  await withVhostd({ command: "fs", args: twoQueues(backing, "sync") }, async (vhostd) => {
    using fx = FsFixture.open(vhostd.socketPath, { numRequestQueues: 2, timeoutMs: 60_000 });
    const d = fx.driver;
    const file = d.lookup(ROOT, basename(backing.image));
    // O_DIRECT: every READ reaches the backing (none is answered from the host's page cache).
    const { fh } = d.open(file.nodeid, O_RDWR | O_DIRECT);
    const read = (i: number) =>
      d.requestLater(FuseOpcode.READ, {
        fh,
        offset: BigInt(i * 4096),
        size: 4096,
        readFlags: 0,
        lockOwner: 0n,
        flags: 0,
      }, { queue: 1 });
    const pending = [read(0)];
    await backing.waitHeld(1);
    // The Worker is inside the first READ: its turn on queue 1 outlasts the 1 ms it may take.
    await new Promise((resolve) => setTimeout(resolve, 5));
    for (let i = 1; i < reads; i++) pending.push(read(i));
    const getattr = d.requestLater(FuseOpcode.GETATTR, { getattrFlags: 0, fh: 0n }, { queue: 2 });
    // Release one READ at a time. While one is held the Worker is frozen inside it, so what
    // queue 2 shows then is exact: the GETATTR was answered before READ i, or it was not.
    let readsBeforeGetattr = reads;
    for (let i = 0; i < reads; i++) {
      await backing.waitHeld(1);
      if (readsBeforeGetattr === reads && d.ring(2).hasUsed()) readsBeforeGetattr = i;
      backing.release();
    }
    assert.equal(getattr().error, 0);
    for (const [i, reply] of pending.map((p) => p()).entries()) {
      assert.equal(reply.error, 0);
      assert.deepEqual(
        reply.payload,
        pattern((reads + 1) * 4096, 4).subarray(i * 4096, (i + 1) * 4096),
      );
    }
    // The clock is looked at every CHAINS_PER_CLOCK_LOOK chains of a turn, and this turn
    // outlasted its deadline at its first look: queue 2 got its turn then. (The turn may have
    // begun with the set-up's requests, before the READs: fewer READs came first then.) A
    // turn without an end would have served all 24 READs first.
    assert.ok(
      readsBeforeGetattr >= 1 && readsBeforeGetattr <= CHAINS_PER_CLOCK_LOOK,
      `${readsBeforeGetattr} of ${reads} READs were answered before the other queue's GETATTR`,
    );
    d.release(fh);
  });
});
