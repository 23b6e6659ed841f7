/**
 * virtio-fs confinement and read-only sharing over a real socket: `..` and
 * symbolic links (made by the guest or planted on the host) never reach
 * outside the shared directory, and a sentinel file next to it never
 * changes; with `--read-only` every change is EROFS while reads work.
 */

import assert from "node:assert/strict";
import {
  EROFS,
  O_APPEND,
  O_CREAT,
  O_DIRECTORY,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
} from "../ffi/mod.ts";
import { type FsDriver, FsReplyError } from "../src/frontend/mod.ts";
import { errnoOf, FsFixture, type FsTestDirs, withVhostdFs } from "./support/fs_fixture.ts";

const ROOT = 1n;
const dec = new TextDecoder();
const SENTINEL_TEXT = "must never change\n";

interface HostSnapshot {
  sentinel: string;
  mode: number;
  mtime: number | undefined;
  outside: string[];
  parent: string[];
}

function plantSentinel(dirs: FsTestDirs): void {
  Deno.writeTextFileSync(`${dirs.outside}/sentinel`, SENTINEL_TEXT);
  Deno.chmodSync(`${dirs.outside}/sentinel`, 0o644);
}

function hostState(dirs: FsTestDirs): HostSnapshot {
  const st = Deno.statSync(`${dirs.outside}/sentinel`);
  return {
    sentinel: Deno.readTextFileSync(`${dirs.outside}/sentinel`),
    mode: st.mode! & 0o7777,
    mtime: st.mtime?.getTime(),
    outside: [...Deno.readDirSync(dirs.outside)].map((e) => e.name).sort(),
    parent: [...Deno.readDirSync(dirs.root)].map((e) => e.name).sort(),
  };
}

/** Runs `fn`; true when it failed with an error reply (any errno). */
function refused(fn: () => unknown): boolean {
  try {
    fn();
    return false;
  } catch (e) {
    if (e instanceof FsReplyError) return true;
    throw e;
  }
}

Deno.test("fs: `..` and symbolic links never lead outside the shared directory", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    plantSentinel(dirs);
    // Planted on the host: links that point out of the share.
    Deno.symlinkSync("../outside", `${dirs.share}/out-dir`);
    Deno.symlinkSync(`${dirs.outside}/sentinel`, `${dirs.share}/out-file`);
    Deno.mkdirSync(`${dirs.share}/sub`);
    const before = hostState(dirs);
    using fx = FsFixture.open(vhostd.socketPath);
    const d: FsDriver = fx.driver;
    const rootIno = d.getattr(ROOT).attr.ino;

    // `..` of the root is the root (or refused), never the directory above.
    let up = ROOT;
    try {
      up = d.lookup(ROOT, "..").nodeid;
      assert.equal(d.getattr(up).attr.ino, rootIno, "`..` of the root is the root");
    } catch (e) {
      assert.ok(e instanceof FsReplyError);
    }
    assert.ok(refused(() => d.lookup(up, "outside")), "no sibling through `..`");
    assert.ok(refused(() => d.lookup(ROOT, "../outside")), "no slash in names");
    const sub = d.lookup(ROOT, "sub");
    try {
      const subUp = d.lookup(sub.nodeid, "..");
      assert.equal(d.getattr(subUp.nodeid).attr.ino, rootIno, "`..` of sub is the root");
    } catch (e) {
      assert.ok(e instanceof FsReplyError);
    }
    // Files created "above" land inside, or nowhere.
    try {
      const created = d.create(up, "made-above", O_WRONLY | O_CREAT, 0o644);
      d.release(created.open.fh);
    } catch (e) {
      assert.ok(e instanceof FsReplyError);
    }

    // Host-planted links are symlink inodes: never followed as directories or files.
    const outDir = d.lookup(ROOT, "out-dir");
    assert.equal(outDir.attr.mode & 0o170000, 0o120000);
    assert.equal(dec.decode(d.readlink(outDir.nodeid)), "../outside");
    assert.ok(refused(() => d.lookup(outDir.nodeid, "sentinel")));
    assert.ok(refused(() => d.create(outDir.nodeid, "planted", O_WRONLY | O_CREAT, 0o644)));
    assert.ok(refused(() => d.mkdir(outDir.nodeid, "planted-dir")));
    assert.ok(refused(() => d.symlink(outDir.nodeid, "planted-link", "x")));
    assert.ok(refused(() => d.unlink(outDir.nodeid, "sentinel")));
    assert.ok(refused(() => d.rename(ROOT, "sub", outDir.nodeid, "moved")));
    assert.ok(refused(() => d.opendir(outDir.nodeid)));
    const outFile = d.lookup(ROOT, "out-file");
    assert.equal(outFile.attr.mode & 0o170000, 0o120000);
    for (const flags of [O_RDONLY, O_WRONLY | O_TRUNC, O_RDWR | O_APPEND, O_RDONLY | O_DIRECTORY]) {
      assert.ok(refused(() => d.open(outFile.nodeid, flags)), `open flags 0o${flags.toString(8)}`);
    }
    // chmod and truncate of the link itself must not reach its target.
    try {
      d.setattr(outFile.nodeid, { mode: 0o777 });
    } catch (e) {
      assert.ok(e instanceof FsReplyError);
    }
    assert.ok(refused(() => d.setattr(outFile.nodeid, { size: 0n })));
    // A hard link of the symlink stays a symlink inside the share.
    try {
      d.link(outFile.nodeid, ROOT, "hard-of-link");
      assert.equal(Deno.lstatSync(`${dirs.share}/hard-of-link`).isSymlink, true);
    } catch (e) {
      assert.ok(e instanceof FsReplyError);
    }

    // Links the guest makes are stored as text and never followed either.
    const guestLink = d.symlink(ROOT, "guest-abs", `${dirs.outside}/sentinel`);
    assert.ok(refused(() => d.open(guestLink.nodeid, O_WRONLY | O_TRUNC)));
    const guestRel = d.symlink(ROOT, "guest-rel", "../../outside");
    assert.ok(refused(() => d.lookup(guestRel.nodeid, "sentinel")));
    assert.ok(refused(() => d.create(guestRel.nodeid, "x", O_WRONLY | O_CREAT, 0o644)));
    // A directory renamed away on the host keeps being served where it is, inside.
    d.rename(ROOT, "sub", ROOT, "sub2");
    const inSub = d.create(sub.nodeid, "inner", O_WRONLY | O_CREAT, 0o600);
    d.release(inSub.open.fh);
    assert.ok(Deno.statSync(`${dirs.share}/sub2/inner`).isFile);

    assert.deepEqual(hostState(dirs), before, "nothing outside the shared directory changed");
  });
});

Deno.test("fs: --read-only refuses every change with EROFS and still serves reads", async () => {
  await withVhostdFs(["--read-only"], (vhostd, dirs) => {
    plantSentinel(dirs);
    Deno.mkdirSync(`${dirs.share}/dir`);
    Deno.writeTextFileSync(`${dirs.share}/dir/file.txt`, "read me");
    Deno.symlinkSync("dir/file.txt", `${dirs.share}/link`);
    const listing = () => [...Deno.readDirSync(`${dirs.share}/dir`)].map((e) => e.name).sort();
    const before = { listing: listing(), mtime: Deno.statSync(`${dirs.share}/dir/file.txt`).mtime };
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;

    // Reads.
    const dir = d.lookup(ROOT, "dir");
    const file = d.lookup(dir.nodeid, "file.txt");
    assert.equal(file.attr.size, 7n);
    const ro = d.open(file.nodeid, O_RDONLY);
    assert.equal(dec.decode(d.read(ro.fh, 0n, 100)), "read me");
    assert.equal(d.getattr(file.nodeid, ro.fh).attr.size, 7n);
    const names = d.listDirectory(dir.nodeid, true).map((e) => dec.decode(e.name));
    assert.ok(names.includes("file.txt"));
    assert.equal(dec.decode(d.readlink(d.lookup(ROOT, "link").nodeid)), "dir/file.txt");
    assert.ok(d.statfs().bsize > 0);
    d.access(file.nodeid, 4 /* R_OK */);

    // Every change.
    const changes: [string, () => unknown][] = [
      ["create", () => d.create(dir.nodeid, "new", O_WRONLY | O_CREAT, 0o644)],
      ["mkdir", () => d.mkdir(dir.nodeid, "newdir")],
      ["mknod", () => d.mknod(dir.nodeid, "fifo", 0o010644)],
      ["symlink", () => d.symlink(dir.nodeid, "sl", "file.txt")],
      ["link", () => d.link(file.nodeid, dir.nodeid, "hard")],
      ["unlink", () => d.unlink(dir.nodeid, "file.txt")],
      ["rmdir", () => d.rmdir(ROOT, "dir")],
      ["rename", () => d.rename(dir.nodeid, "file.txt", dir.nodeid, "renamed")],
      ["chmod", () => d.setattr(file.nodeid, { mode: 0o600 })],
      ["truncate", () => d.setattr(file.nodeid, { size: 0n })],
      ["utimes", () => d.setattr(file.nodeid, { mtime: { sec: 1n, nsec: 0 } })],
      ["open for writing", () => d.open(file.nodeid, O_WRONLY)],
      ["open read-write", () => d.open(file.nodeid, O_RDWR)],
      ["open with O_TRUNC", () => d.open(file.nodeid, O_RDONLY | O_TRUNC)],
      ["open with O_APPEND", () => d.open(file.nodeid, O_WRONLY | O_APPEND)],
      ["access W_OK", () => d.access(file.nodeid, 2)],
    ];
    for (const [what, change] of changes) {
      assert.equal(errnoOf(change), EROFS, what);
    }
    // Writes through a read-only handle are refused by the host too.
    assert.ok(refused(() => d.write(ro.fh, 0n, new TextEncoder().encode("x"))));
    assert.ok(refused(() => d.fallocate(ro.fh, 0n, 4096n)));
    d.release(ro.fh);

    assert.deepEqual(
      { listing: listing(), mtime: Deno.statSync(`${dirs.share}/dir/file.txt`).mtime },
      before,
    );
    assert.equal(Deno.readTextFileSync(`${dirs.share}/dir/file.txt`), "read me");
    assert.equal(Deno.readTextFileSync(`${dirs.outside}/sentinel`), SENTINEL_TEXT);
  });
});
