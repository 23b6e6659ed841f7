/**
 * `--inode-file-handles` over a real socket: a `vhostd fs` process limited
 * to 4,096 open fds serves LOOKUP and GETATTR of every file of a 200,000-file
 * tree with `prefer` (the guest holding every lookup), and runs out of fds
 * with `never`, where every known inode holds one.
 */

import assert from "node:assert/strict";
import { EMFILE, ENFILE, S_IFREG } from "../ffi/mod.ts";
import { makeFileTree, treeDirName, treeFileName, treeParentDir } from "./support/file_tree.ts";
import { errnoOf, FsFixture } from "./support/fs_fixture.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const ROOT = 1n;
const FD_LIMIT = 4096;
const DIRECTORIES = 200;
const FILES_PER_DIRECTORY = 1000;

/**
 * Runs `body` against a `vhostd fs --inode-file-handles MODE` limited to
 * {@linkcode FD_LIMIT} fds, over a tree of `dirs` × `perDir` files on tmpfs
 * (/dev/shm when it is there: creating 200,000 files is fast in memory).
 */
async function withLimitedVhostd(
  mode: string,
  dirs: number,
  perDir: number,
  body: (vhostd: VhostdProcess, fx: FsFixture) => void,
): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "vhostd-fs-handles-", dir: treeParentDir() });
  try {
    const share = `${base}/share`;
    await Deno.mkdir(share);
    makeFileTree(share, dirs, perDir);
    await withVhostd({
      command: "fs",
      args: ["--shared-dir", share, "--inode-file-handles", mode],
      dir: base,
      fdLimit: FD_LIMIT,
    }, (vhostd) => {
      using fx = FsFixture.open(vhostd.socketPath);
      body(vhostd, fx);
    });
  } finally {
    await Deno.remove(base, { recursive: true });
  }
}

Deno.test("fs --inode-file-handles prefer: LOOKUP+GETATTR of 200,000 files under a 4,096 fd limit", async () => {
  await withLimitedVhostd("prefer", DIRECTORIES, FILES_PER_DIRECTORY, (vhostd, fx) => {
    const d = fx.driver;
    let seen = 0;
    for (let i = 0; i < DIRECTORIES; i++) {
      const dir = d.lookup(ROOT, treeDirName(i)).nodeid;
      for (let f = 0; f < FILES_PER_DIRECTORY; f++) {
        const entry = d.lookup(dir, treeFileName(f));
        const attr = d.getattr(entry.nodeid);
        assert.equal(attr.attr.mode & 0o170000, S_IFREG, `d${i}/f${f}`);
        seen++;
      }
    }
    assert.equal(seen, DIRECTORIES * FILES_PER_DIRECTORY);
    // Every lookup is still held, yet vhostd keeps its fds far below the limit.
    const fds = vhostd.fdCount();
    assert.ok(fds < FD_LIMIT / 2, `vhostd holds ${fds} fds`);
    // The first files are still served (their fds were evicted long ago).
    const first = d.lookup(d.lookup(ROOT, treeDirName(0)).nodeid, treeFileName(0));
    assert.equal(d.getattr(first.nodeid).attr.mode & 0o170000, S_IFREG);
  });
});

Deno.test("fs --inode-file-handles never: the same tree runs out of fds under a 4,096 fd limit", async () => {
  // Just enough files to pass the limit: every known inode holds an fd.
  const dirs = 6;
  await withLimitedVhostd("never", dirs, FILES_PER_DIRECTORY, (_vhostd, fx) => {
    const d = fx.driver;
    let failure: number | undefined;
    let served = 0;
    outer: for (let i = 0; i < dirs; i++) {
      const dir = d.lookup(ROOT, treeDirName(i)).nodeid;
      for (let f = 0; f < FILES_PER_DIRECTORY; f++) {
        try {
          d.getattr(d.lookup(dir, treeFileName(f)).nodeid);
          served++;
        } catch {
          failure = errnoOf(() => d.lookup(dir, treeFileName(f)));
          break outer;
        }
      }
    }
    assert.ok(failure === EMFILE || failure === ENFILE, `errno ${failure} after ${served} files`);
    assert.ok(served < FD_LIMIT, `${served} files served`);
  });
});
