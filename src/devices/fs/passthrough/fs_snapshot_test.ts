import assert from "node:assert/strict";
import { EIO, O_CREAT, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } from "../../../../ffi/mod.ts";
import { FuseInitFlag } from "../fuse/fuse_abi.ts";
import { decodeDirents } from "../fuse/fuse_reply_decode.ts";
import { toHex } from "./fs_names.ts";
import {
  assertFsErrno,
  bytes,
  makeShare,
  readAll,
  type Share,
  text,
  writeAt,
} from "../../../../tests/support/passthrough_fixture.ts";
import {
  FsRestoreError,
  type FsSnapshot,
  type MigrationOnError,
  PassthroughFs,
} from "./passthrough_fs.ts";

const ROOT = 1n;

/** Source-side state built for the migration tests. */
interface Built {
  dirNode: bigint;
  subNode: bigint;
  fileNode: bigint;
  renamedNode: bigint;
  victimNode: bigint;
  readFh: bigint;
  writeFh: bigint;
  victimFh: bigint;
  dirFh: bigint;
  /** Names of `dir` listed before the snapshot, and where to continue. */
  listedBefore: string[];
  resumeAt: bigint;
  dirNames: Set<string>;
}

function build(share: Share): Built {
  const { fs } = share;
  fs.init({
    major: 7,
    minor: 37,
    maxReadahead: 65536,
    flags: FuseInitFlag.ASYNC_READ | FuseInitFlag.DO_READDIRPLUS | FuseInitFlag.MAX_PAGES,
    flags2: 0,
  });
  Deno.mkdirSync(`${share.path}/dir/sub`, { recursive: true });
  const dirNames = new Set(["sub", "victim"]);
  for (let i = 0; i < 300; i++) {
    Deno.writeTextFileSync(`${share.path}/dir/n${i}`, `${i}`);
    dirNames.add(`n${i}`);
  }
  Deno.writeTextFileSync(`${share.path}/dir/sub/file.txt`, "file contents");
  Deno.writeTextFileSync(`${share.path}/dir/victim`, "victim contents");
  const dir = fs.lookup(ROOT, bytes("dir"));
  const sub = fs.lookup(dir.nodeid, bytes("sub"));
  const file = fs.lookup(sub.nodeid, bytes("file.txt"));
  fs.lookup(sub.nodeid, bytes("file.txt"));
  fs.lookup(sub.nodeid, bytes("file.txt"));
  // "sub" is forgotten by the guest but stays as the parent of file.txt.
  fs.forget(sub.nodeid, 1n);
  const victim = fs.lookup(dir.nodeid, bytes("victim"));
  // Created with O_TRUNC and written: a restore must not truncate it again.
  const created = fs.create(ROOT, bytes("old-name"), O_RDWR | O_CREAT | O_TRUNC, 0o644, 0, 0, 0);
  writeAt(fs, created.open.fh, "written before migration");
  fs.rename(ROOT, bytes("old-name"), dir.nodeid, bytes("new-name"), 0);
  dirNames.add("new-name");
  const readFh = fs.open(file.nodeid, O_RDONLY).fh;
  const victimFh = fs.open(victim.nodeid, O_RDONLY).fh;
  const dirFh = fs.opendir(dir.nodeid, O_RDONLY).fh;
  const firstPage = decodeDirents(fs.readdir(dir.nodeid, dirFh, 0n, 1500, false));
  assert.ok(firstPage.length > 5 && firstPage.length < 150, "mid-listing");
  return {
    dirNode: dir.nodeid,
    subNode: sub.nodeid,
    fileNode: file.nodeid,
    renamedNode: created.entry.nodeid,
    victimNode: victim.nodeid,
    readFh,
    writeFh: created.open.fh,
    victimFh,
    dirFh,
    listedBefore: firstPage.map((r) => text(r.name)),
    resumeAt: firstPage[firstPage.length - 1].off,
    dirNames,
  };
}

/** The snapshot after a trip through JSON, as it travels in the state stream. */
function viaJson(snapshot: FsSnapshot): FsSnapshot {
  return JSON.parse(JSON.stringify(snapshot));
}

function destination(share: Share, migrationOnError: MigrationOnError): PassthroughFs {
  return new PassthroughFs({ sharedDir: share.path, readOnly: false, migrationOnError });
}

Deno.test("snapshot → JSON → restore keeps node ids, lookups, handles and a listing in progress", () => {
  using share = makeShare();
  const built = build(share);
  const snapshot = share.fs.snapshot();
  assert.deepEqual(share.fs.snapshot(), snapshot, "taking a snapshot changes nothing");

  // Parents come before their children.
  const order = snapshot.inodes.map((r) => r.nodeid);
  for (const record of snapshot.inodes) {
    if (record.parent !== null && record.parent !== "1") {
      assert.ok(order.indexOf(record.parent) < order.indexOf(record.nodeid));
    }
  }
  const renamed = snapshot.inodes.find((r) => r.nodeid === built.renamedNode.toString())!;
  assert.equal(renamed.parent, built.dirNode.toString());
  assert.equal(renamed.name, toHex(bytes("new-name")));

  const fs2 = destination(share, "abort");
  try {
    assert.deepEqual(fs2.restore(viaJson(snapshot)), { errors: [] });
    assert.deepEqual(fs2.negotiated, share.fs.negotiated);
    assert.deepEqual(fs2.counts(), share.fs.counts());
    for (const nodeid of [built.dirNode, built.subNode, built.fileNode, built.renamedNode]) {
      const before = share.fs.inodeInfo(nodeid)!;
      const after = fs2.inodeInfo(nodeid)!;
      assert.equal(after.lookups, before.lookups, `lookups of ${nodeid}`);
      assert.equal(after.ino, before.ino, `same file behind ${nodeid}`);
      assert.equal(after.parent, before.parent);
    }
    assert.equal(fs2.inodeInfo(built.fileNode)?.lookups, 3n);
    assert.equal(fs2.inodeInfo(built.subNode)?.lookups, 0n, "kept as a parent only");

    // The restored handles work, with their numbers.
    assert.equal(readAll(fs2, built.readFh), "file contents");
    assert.equal(readAll(fs2, built.writeFh), "written before migration", "not truncated again");
    writeAt(fs2, built.writeFh, "WRITTEN");
    assert.equal(
      Deno.readTextFileSync(`${share.path}/dir/new-name`),
      "WRITTEN before migration",
    );

    // The listing continues where the guest left it: every name exactly once.
    const rest: string[] = [];
    let offset = built.resumeAt;
    for (;;) {
      const page = decodeDirents(fs2.readdir(built.dirNode, built.dirFh, offset, 2000, false));
      if (page.length === 0) break;
      rest.push(...page.map((r) => text(r.name)));
      offset = page[page.length - 1].off;
    }
    const all = [...built.listedBefore, ...rest];
    assert.equal(all.length, new Set(all).size, "no name twice");
    assert.deepEqual(new Set(all), new Set([...built.dirNames, ".", ".."]));

    // New ids do not collide with migrated ones.
    const fresh = fs2.create(ROOT, bytes("after"), O_WRONLY | O_CREAT, 0o644, 0, 0, 0);
    assert.ok(fresh.entry.nodeid > built.victimNode && fresh.entry.nodeid > built.renamedNode);
    assert.ok(fresh.open.fh > built.dirFh);
    // Lookups continue to count on the migrated inode.
    assert.equal(fs2.lookup(built.subNode, bytes("file.txt")).nodeid, built.fileNode);
    assert.equal(fs2.inodeInfo(built.fileNode)?.lookups, 4n);
    fs2.forget(built.fileNode, 4n);
    fs2.release(built.readFh);
    assert.equal(fs2.inodeInfo(built.fileNode), undefined, "dropped after the last forget");
  } finally {
    fs2.close();
  }
});

Deno.test("a file removed on the host before restore: abort throws, guest-error fails only it", () => {
  using share = makeShare();
  const built = build(share);
  const snapshot = viaJson(share.fs.snapshot());
  Deno.removeSync(`${share.path}/dir/victim`);

  const aborting = destination(share, "abort");
  try {
    assert.throws(
      () => aborting.restore(snapshot),
      (error: unknown) =>
        error instanceof FsRestoreError && error.message.includes("dir/victim") &&
        error.message.includes("ENOENT"),
    );
    assert.deepEqual(aborting.counts(), { inodes: 1, handles: 0 }, "left fresh");
  } finally {
    aborting.close();
  }

  const tolerant = destination(share, "guest-error");
  try {
    const { errors } = tolerant.restore(snapshot);
    assert.equal(errors.length, 2, errors.join("\n"));
    assert.ok(errors[0].includes(`inode ${built.victimNode}`) && errors[0].includes("dir/victim"));
    assert.ok(errors[1].includes(`file handle ${built.victimFh}`));
    assertFsErrno(() => tolerant.readFd(built.victimFh), EIO, "the victim's handle");
    assertFsErrno(() => tolerant.getattr(built.victimNode), EIO, "the victim's inode");
    assertFsErrno(() => tolerant.open(built.victimNode, O_RDONLY), EIO);
    // Everything else works.
    assert.equal(readAll(tolerant, built.readFh), "file contents");
    assert.equal(tolerant.getattr(built.fileNode).attr.size, 13);
    // A second migration keeps the broken state without failing again.
    const again = viaJson(tolerant.snapshot());
    const fs3 = destination(share, "abort");
    try {
      assert.deepEqual(fs3.restore(again), { errors: [] });
      assertFsErrno(() => fs3.readFd(built.victimFh), EIO);
    } finally {
      fs3.close();
    }
    // Release and forget clean the broken entries up.
    tolerant.release(built.victimFh);
    tolerant.forget(built.victimNode, 1n);
    assert.equal(tolerant.inodeInfo(built.victimNode), undefined);
    assertFsErrno(() => tolerant.readFd(built.victimFh), 9 /* EBADF */);
  } finally {
    tolerant.close();
  }
});

Deno.test("an inode unlinked while held has no path; a replaced file is detected", () => {
  using share = makeShare();
  const { fs } = share;
  const gone = fs.create(ROOT, bytes("gone"), O_RDWR | O_CREAT, 0o644, 0, 0, 0);
  fs.unlink(ROOT, bytes("gone"));
  Deno.writeTextFileSync(`${share.path}/swapped`, "original");
  const swapped = fs.lookup(ROOT, bytes("swapped"));
  const snapshot = viaJson(fs.snapshot());
  const goneRecord = snapshot.inodes.find((r) => r.nodeid === gone.entry.nodeid.toString())!;
  assert.equal(goneRecord.name, null);
  assert.equal(goneRecord.parent, null);
  // The host replaces "swapped" by another file of the same name.
  Deno.removeSync(`${share.path}/swapped`);
  Deno.writeTextFileSync(`${share.path}/swapped`, "impostor");

  const aborting = destination(share, "abort");
  try {
    assert.throws(() => aborting.restore(snapshot), /unlinked/);
  } finally {
    aborting.close();
  }
  const tolerant = destination(share, "guest-error");
  try {
    const { errors } = tolerant.restore(snapshot);
    assert.ok(errors.some((e) => e.includes("different file")), errors.join("\n"));
    assertFsErrno(() => tolerant.getattr(swapped.nodeid), EIO);
    assertFsErrno(() => tolerant.readFd(gone.open.fh), EIO);
  } finally {
    tolerant.close();
  }
});

Deno.test("restore refuses malformed snapshots and a filesystem that is not fresh", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.mkdirSync(`${share.path}/d`);
  fs.lookup(ROOT, bytes("d"));
  fs.opendir(ROOT, O_RDONLY);
  const good = viaJson(fs.snapshot());
  const inode = good.inodes[0];
  const cases: [string, unknown][] = [
    ["not an object", 42],
    ["wrong version", { ...good, version: 99 }],
    ["'..' as a name", { ...good, inodes: [{ ...inode, name: toHex(bytes("..")) }] }],
    ["a path as a name", { ...good, inodes: [{ ...inode, name: toHex(bytes("../outside")) }] }],
    ["an empty name", { ...good, inodes: [{ ...inode, name: "" }] }],
    ["bad hex", { ...good, inodes: [{ ...inode, name: "zz" }] }],
    ["the root's node id", { ...good, inodes: [{ ...inode, nodeid: "1" }] }],
    ["a duplicate node id", { ...good, inodes: [inode, inode] }],
    ["an unknown parent", { ...good, inodes: [{ ...inode, parent: "77" }] }],
    ["a number as a node id", { ...good, inodes: [{ ...inode, nodeid: 5 }] }],
    ["a handle on an unknown inode", {
      ...good,
      handles: [{ ...good.handles[0], nodeid: "99" }],
    }],
    ["a duplicate handle", { ...good, handles: [good.handles[0], good.handles[0]] }],
    ["bad init", { ...good, init: { flags: -1 } }],
  ];
  for (const [what, data] of cases) {
    const fs2 = destination(share, "guest-error");
    try {
      assert.throws(
        () => fs2.restore(data as FsSnapshot),
        (error: unknown) => error instanceof FsRestoreError && /malformed/.test(error.message),
        what,
      );
      assert.deepEqual(fs2.counts(), { inodes: 1, handles: 0 }, what);
    } finally {
      fs2.close();
    }
  }
  assert.throws(() => fs.restore(good), /fresh/);
  // The good one restores.
  const fs2 = destination(share, "abort");
  try {
    assert.deepEqual(fs2.restore(good), { errors: [] });
  } finally {
    fs2.close();
  }
});
