/**
 * `--inode-file-handles` over a real socket: a `vhostd fs` process limited
 * to 4,096 open fds serves LOOKUP and GETATTR of every file of a 200,000-file
 * tree with `prefer` (the guest holding every lookup), and runs out of fds
 * with `never`, where every known inode holds one.
 */

import assert from "node:assert/strict";
import {
  AT_FDCWD,
  closeFd,
  EMFILE,
  ENFILE,
  mkdirat,
  mknodat,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  openat,
  S_IFREG,
} from "../ffi/mod.ts";
import { errnoOf, FsFixture } from "./support/fs_fixture.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const ROOT = 1n;
const FD_LIMIT = 4096;
const DIRECTORIES = 200;
const FILES_PER_DIRECTORY = 1000;

/** Creates `dirs` directories of `perDir` empty files under `root` (mknodat: one call per file). */
function makeTree(root: string, dirs: number, perDir: number): void {
  const rootFd = openat(AT_FDCWD, root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    for (let d = 0; d < dirs; d++) {
      mkdirat(rootFd, `d${d}`, 0o755);
      const dirFd = openat(rootFd, `d${d}`, O_PATH | O_DIRECTORY | O_CLOEXEC);
      try {
        for (let f = 0; f < perDir; f++) mknodat(dirFd, `f${f}`, S_IFREG | 0o644, 0);
      } finally {
        closeFd(dirFd);
      }
    }
  } finally {
    closeFd(rootFd);
  }
}

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
  let parent: string | undefined;
  try {
    if (Deno.statSync("/dev/shm").isDirectory) parent = "/dev/shm";
  } catch {
    parent = undefined;
  }
  const base = await Deno.makeTempDir({ prefix: "vhostd-fs-handles-", dir: parent });
  try {
    const share = `${base}/share`;
    await Deno.mkdir(share);
    makeTree(share, dirs, perDir);
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
      const dir = d.lookup(ROOT, `d${i}`).nodeid;
      for (let f = 0; f < FILES_PER_DIRECTORY; f++) {
        const entry = d.lookup(dir, `f${f}`);
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
    const first = d.lookup(d.lookup(ROOT, "d0").nodeid, "f0");
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
      const dir = d.lookup(ROOT, `d${i}`).nodeid;
      for (let f = 0; f < FILES_PER_DIRECTORY; f++) {
        try {
          d.getattr(d.lookup(dir, `f${f}`).nodeid);
          served++;
        } catch {
          failure = errnoOf(() => d.lookup(dir, `f${f}`));
          break outer;
        }
      }
    }
    assert.ok(failure === EMFILE || failure === ENFILE, `errno ${failure} after ${served} files`);
    assert.ok(served < FD_LIMIT, `${served} files served`);
  });
});
