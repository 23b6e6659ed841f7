import assert from "node:assert/strict";
import { EOPNOTSUPP, ESTALE, O_RDONLY, S_IFDIR } from "../../../../ffi/mod.ts";
import {
  assertFsErrno,
  bytes,
  makeShare,
  readAll,
  rootTest,
  text,
} from "../../../../tests/support/passthrough_fixture.ts";
import { PassthroughFs } from "./passthrough_fs.ts";

const ROOT = 1n;
/**
 * Fds of this process on files in `dir` (by their /proc links: other test
 * files may run in this process at the same time, with fds of their own).
 */
function fdsInside(dir: string): number {
  let count = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      if (target === dir || target.startsWith(`${dir}/`)) count++;
    } catch {
      // Closed meanwhile.
    }
  }
  return count;
}

/** True when the filesystem of the temporary directory gives a freed inode number to the next file. */
function reusesInodeNumbers(): boolean {
  const dir = Deno.makeTempDirSync({ prefix: "vhostd-ino-probe-" });
  try {
    Deno.writeFileSync(`${dir}/a`, new Uint8Array());
    const first = Deno.statSync(`${dir}/a`).ino;
    Deno.removeSync(`${dir}/a`);
    Deno.writeFileSync(`${dir}/b`, new Uint8Array());
    return Deno.statSync(`${dir}/b`).ino === first;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

rootTest("prefer: known inodes hold no fd; a bounded cache serves every operation", () => {
  const cacheSize = 32;
  const files = 400;
  using share = makeShare({ inodeFileHandles: "prefer", handleFdCacheSize: cacheSize });
  Deno.mkdirSync(`${share.path}/dir`);
  for (let i = 0; i < files; i++) Deno.writeTextFileSync(`${share.path}/dir/f${i}`, `file ${i}`);
  const { fs } = share;
  const dir = fs.lookup(ROOT, bytes("dir")).nodeid;
  const nodeids: bigint[] = [];
  for (let i = 0; i < files; i++) nodeids.push(fs.lookup(dir, bytes(`f${i}`)).nodeid);
  // Share root, its mount fd, the cache: nothing per inode.
  assert.ok(fdsInside(share.path) <= cacheSize + 2, `${fdsInside(share.path)} fds open`);
  assert.equal(fs.inodeInfo(nodeids[0])!.byHandle, true);
  assert.equal(fs.inodeInfo(ROOT)!.byHandle, false, "the root keeps its fd");
  // Evicted inodes open again by handle: attributes, opens, reads all work.
  for (let i = 0; i < files; i++) {
    assert.equal(fs.getattr(nodeids[i]).attr.size, `file ${i}`.length);
  }
  const { fh } = fs.open(nodeids[3], O_RDONLY);
  assert.equal(readAll(fs, fh), "file 3");
  fs.release(fh);
  // Renames keep the inode (the handle follows the file).
  fs.rename(dir, bytes("f5"), ROOT, bytes("moved"), 0);
  assert.equal(fs.lookup(ROOT, bytes("moved")).nodeid, nodeids[5]);
  assert.equal(text(fs.readlink(fs.symlink(dir, bytes("ln"), bytes("f1"), 0, 0).nodeid)), "f1");
  assert.ok(fdsInside(share.path) <= cacheSize + 2);
  // Dropping inodes closes their cached fds.
  for (const id of nodeids) fs.forget(id, 1n);
  fs.close();
  assert.equal(fdsInside(share.path), 0);
});

rootTest(
  "prefer: a host file deleted behind the guest answers ESTALE, a new file with its inode number is a new inode",
  () => {
    using share = makeShare({ inodeFileHandles: "prefer", handleFdCacheSize: 16 });
    const { fs } = share;
    Deno.writeTextFileSync(`${share.path}/old`, "old");
    const old = fs.lookup(ROOT, bytes("old"));
    // Push the old inode's fd out of the cache, so nothing keeps the file alive.
    for (let i = 0; i < 20; i++) {
      Deno.writeFileSync(`${share.path}/f${i}`, new Uint8Array());
      fs.lookup(ROOT, bytes(`f${i}`));
    }
    Deno.removeSync(`${share.path}/old`);
    assertFsErrno(() => fs.getattr(old.nodeid), ESTALE, "getattr of a deleted file");
    if (!reusesInodeNumbers()) return; // The check below needs a filesystem that reuses numbers.
    Deno.writeTextFileSync(`${share.path}/new`, "new!");
    const reused = Deno.statSync(`${share.path}/new`).ino === old.attr.ino;
    const fresh = fs.lookup(ROOT, bytes("new"));
    if (reused) assert.notEqual(fresh.nodeid, old.nodeid, "same inode number, another file");
    assert.equal(fs.getattr(fresh.nodeid).attr.size, 4);
  },
);

rootTest(
  "mandatory refuses a shared directory without file handles; prefer holds fds there",
  () => {
    // procfs makes no file handles.
    assert.throws(
      () =>
        new PassthroughFs({
          sharedDir: "/proc",
          readOnly: true,
          migrationOnError: "abort",
          inodeFileHandles: "mandatory",
        }),
      /mandatory.*file handle/,
    );
    const fs = new PassthroughFs({
      sharedDir: "/proc",
      readOnly: true,
      migrationOnError: "abort",
      inodeFileHandles: "prefer",
    });
    try {
      const entry = fs.lookup(ROOT, bytes("sys"));
      assert.equal(fs.inodeInfo(entry.nodeid)!.byHandle, false);
      assert.equal(fs.getattr(entry.nodeid).attr.mode & 0o170000, S_IFDIR);
    } finally {
      fs.close();
    }
  },
);

rootTest(
  "mandatory answers EOPNOTSUPP for a lookup that reaches a filesystem without handles",
  () => {
    // "/" shared read-only: "proc" below it is procfs (no handles), "tmp" is not.
    const fs = new PassthroughFs({
      sharedDir: "/",
      readOnly: true,
      migrationOnError: "abort",
      inodeFileHandles: "mandatory",
    });
    try {
      assertFsErrno(() => fs.lookup(ROOT, bytes("proc")), EOPNOTSUPP, "lookup of /proc");
      const tmp = fs.lookup(ROOT, bytes("tmp"));
      assert.equal(fs.inodeInfo(tmp.nodeid)!.byHandle, true);
      assert.equal(fs.counts().inodes, 2, "the refused lookup left no inode");
    } finally {
      fs.close();
    }
  },
);

Deno.test("an unknown inodeFileHandles mode is refused", () => {
  assert.throws(
    () =>
      new PassthroughFs({
        sharedDir: "/",
        readOnly: true,
        migrationOnError: "abort",
        inodeFileHandles: "sometimes" as "never",
      }),
    /never, prefer or mandatory/,
  );
});
