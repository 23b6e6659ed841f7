/**
 * virtio-fs DEVICE_STATE between two `vhostd fs` processes sharing one
 * directory: the guest's open file handles and node ids move with a SAVE →
 * LOAD and work on the destination without a new INIT, with inodes held by
 * fd or by file handle (`--inode-file-handles prefer`) on either side; the
 * source resumes unchanged after a SAVE. With `--migration-mode file-handles`
 * a file the guest unlinked while holding it open moves too. A file removed on the host before the LOAD makes
 * an `abort` destination refuse the state (and keep serving), and a
 * `guest-error` destination accept it and answer EIO for that handle.
 */

import assert from "node:assert/strict";
import { EIO, O_CREAT, O_RDONLY, O_RDWR } from "../ffi/mod.ts";
import { BackendRefused, VhostUserClient } from "../src/frontend/mod.ts";
import {
  errnoOf,
  FS_PROTOCOL_FEATURES,
  FsFixture,
  pattern,
  withVhostdFs,
} from "./support/fs_fixture.ts";
import { loadFromBytes, negotiateForState, saveToBytes } from "./support/state_tools.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const ROOT = 1n;

/** A destination connection that has negotiated DEVICE_STATE and nothing else yet. */
function destination(vhostd: VhostdProcess): VhostUserClient {
  const client = VhostUserClient.connect(vhostd.socketPath);
  try {
    negotiateForState(client, FS_PROTOCOL_FEATURES);
    return client;
  } catch (e) {
    client.close();
    throw e;
  }
}

/** Loads `state` over `client`; true when CHECK_DEVICE_STATE reported success. */
function load(client: VhostUserClient, state: Uint8Array): boolean {
  try {
    loadFromBytes(client, state);
    return true;
  } catch (e) {
    if (e instanceof BackendRefused) return false;
    throw e;
  }
}

/** More known files than the file handle mode's fd cache holds (1024): restoring them evicts. */
const MANY_FILES = 1500;

/**
 * Open handles and node ids move from a source started with `sourceArgs` to
 * a destination started with `targetArgs`, with {@linkcode MANY_FILES} more
 * inodes known.
 */
async function openHandlesMove(sourceArgs: string[], targetArgs: string[]): Promise<void> {
  await withVhostdFs(sourceArgs, async (source, dirs) => {
    const data = pattern(150_000, 3);
    let state: Uint8Array;
    let fh: bigint;
    let fileNode: bigint;
    let dirNode: bigint;
    const many: bigint[] = [];
    {
      using fx = FsFixture.open(source.socketPath);
      const d = fx.driver;
      Deno.mkdirSync(`${dirs.share}/many`);
      for (let i = 0; i < MANY_FILES; i++) {
        Deno.writeTextFileSync(`${dirs.share}/many/${i}`, `${i}`);
      }
      const manyDir = d.lookup(ROOT, "many").nodeid;
      for (let i = 0; i < MANY_FILES; i++) many.push(d.lookup(manyDir, `${i}`).nodeid);
      dirNode = d.mkdir(ROOT, "dir").nodeid;
      const created = d.create(dirNode, "file", O_RDWR | O_CREAT, 0o644);
      fh = created.open.fh;
      fileNode = created.entry.nodeid;
      d.write(fh, 0n, data);
      d.stopAll();
      state = saveToBytes(fx.client);
      // SAVE changed nothing: the source resumes where it was.
      d.restartAll();
      assert.deepEqual(d.read(fh, 0n, 10), data.subarray(0, 10));
      d.stopAll();
    }
    const args = ["--shared-dir", dirs.share, ...targetArgs];
    await withVhostd({ command: "fs", args }, (target) => {
      const client = destination(target);
      assert.ok(load(client, state), `LOAD failed; log:\n${target.log()}`);
      using fx = FsFixture.open(target.socketPath, { client, init: false });
      const d = fx.driver;
      for (let i = 0; i < MANY_FILES; i++) {
        assert.equal(d.getattr(many[i]).attr.size, BigInt(`${i}`.length), `many/${i}`);
      }
      // No INIT: the session moved. The handle and node ids are the source's.
      assert.deepEqual(d.read(fh, 0n, data.length), data);
      assert.equal(d.getattr(fileNode).attr.size, BigInt(data.length));
      assert.equal(d.lookup(dirNode, "file").nodeid, fileNode);
      assert.equal(d.write(fh, BigInt(data.length), pattern(10, 4)), 10);
      d.release(fh);
      assert.equal(Deno.statSync(`${dirs.share}/dir/file`).size, data.length + 10);
      assert.match(target.log(), /device state load done/);
    });
  });
}

Deno.test("fs: open handles move with DEVICE_STATE and work on the destination", () =>
  openHandlesMove([], []));

Deno.test("fs: open handles move with DEVICE_STATE with --inode-file-handles prefer", () =>
  openHandlesMove(["--inode-file-handles", "prefer"], ["--inode-file-handles", "prefer"]));

Deno.test("fs: the state does not depend on the inode mode (prefer → never, never → prefer)", async () => {
  await openHandlesMove(["--inode-file-handles", "prefer"], []);
  await openHandlesMove([], ["--inode-file-handles", "prefer"]);
});

Deno.test("fs: a file removed before LOAD: abort refuses the state, guest-error answers EIO", async () => {
  await withVhostdFs([], async (source, dirs) => {
    const kept = pattern(5000, 5);
    let state: Uint8Array;
    let goneFh: bigint;
    let keptFh: bigint;
    {
      using fx = FsFixture.open(source.socketPath);
      const d = fx.driver;
      const gone = d.create(ROOT, "gone", O_RDWR | O_CREAT, 0o644);
      goneFh = gone.open.fh;
      d.write(goneFh, 0n, pattern(100, 6));
      const k = d.create(ROOT, "kept", O_RDWR | O_CREAT, 0o644);
      d.write(k.open.fh, 0n, kept);
      d.release(k.open.fh);
      keptFh = d.open(k.entry.nodeid, O_RDONLY).fh;
      d.stopAll();
      state = saveToBytes(fx.client);
    }
    Deno.removeSync(`${dirs.share}/gone`);

    await withVhostd({ command: "fs", args: ["--shared-dir", dirs.share] }, (target) => {
      const client = destination(target);
      assert.equal(load(client, state), false, "abort: the LOAD is refused");
      assert.match(target.log(), /device state load refused: .*gone/);
      // The destination still serves, as a fresh device.
      using fx = FsFixture.open(target.socketPath, { client });
      const d = fx.driver;
      const k = d.lookup(ROOT, "kept");
      const h = d.open(k.nodeid, O_RDONLY);
      assert.deepEqual(d.read(h.fh, 0n, kept.length), kept);
      d.release(h.fh);
    });

    await withVhostd({
      command: "fs",
      args: ["--shared-dir", dirs.share, "--migration-on-error", "guest-error"],
    }, (target) => {
      const client = destination(target);
      assert.ok(load(client, state), `guest-error: LOAD failed; log:\n${target.log()}`);
      using fx = FsFixture.open(target.socketPath, { client, init: false });
      const d = fx.driver;
      assert.equal(errnoOf(() => d.read(goneFh, 0n, 100)), EIO);
      assert.deepEqual(d.read(keptFh, 0n, kept.length), kept);
      assert.match(target.log(), /gone/);
    });
  });
});

/**
 * A file the guest unlinked while holding it open, saved with
 * `--migration-mode MODE` and loaded by a default destination: true when the
 * LOAD succeeded and the destination read the file's bytes through the moved
 * handle.
 */
async function unlinkedOpenFileMoves(mode: string): Promise<boolean> {
  return await withVhostdFs(["--migration-mode", mode], async (source, dirs) => {
    const data = pattern(20_000, 7);
    using fx = FsFixture.open(source.socketPath);
    const d = fx.driver;
    const created = d.create(ROOT, "scratch", O_RDWR | O_CREAT, 0o644);
    d.write(created.open.fh, 0n, data);
    d.unlink(ROOT, "scratch");
    d.stopAll();
    const state = saveToBytes(fx.client);
    // The source keeps its fd open during the switch-over, as a paused source does. The
    // destination runs in the same mode: its sandbox opens handles only when told to.
    const args = ["--shared-dir", dirs.share, "--migration-mode", mode];
    return await withVhostd({ command: "fs", args }, (target) => {
      const client = destination(target);
      if (!load(client, state)) {
        client.close();
        return false;
      }
      using moved = FsFixture.open(target.socketPath, { client, init: false });
      assert.deepEqual(moved.driver.read(created.open.fh, 0n, data.length), data);
      assert.equal(moved.driver.getattr(created.entry.nodeid).attr.size, BigInt(data.length));
      moved.driver.release(created.open.fh);
      return true;
    });
  });
}

Deno.test("fs --migration-mode file-handles: a file unlinked while open moves; find-paths cannot move it", async () => {
  assert.equal(await unlinkedOpenFileMoves("file-handles"), true, "file-handles: LOAD refused");
  assert.equal(await unlinkedOpenFileMoves("find-paths"), false, "find-paths: LOAD accepted");
});
