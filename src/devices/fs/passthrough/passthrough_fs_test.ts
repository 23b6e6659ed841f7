import assert from "node:assert/strict";
import {
  EACCES,
  EBADF,
  EEXIST,
  EINVAL,
  EISDIR,
  ELOOP,
  ENOENT,
  ENOTDIR,
  ENOTEMPTY,
  ENXIO,
  EPERM,
  EPROTO,
  EROFS,
  F_OK,
  FALLOC_FL_KEEP_SIZE,
  getStatusFlags,
  O_APPEND,
  O_CREAT,
  O_DIRECT,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  pwrite,
  R_OK,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SEEK_DATA,
  SEEK_HOLE,
  W_OK,
  X_OK,
} from "../../../../ffi/mod.ts";
import { FuseInitFlag, FuseOpenOutFlag, FuseSetattrValid } from "../fuse/fuse_abi.ts";
import type { FuseInitArgs } from "../fuse/fuse_request.ts";
import {
  assertFsErrno,
  bytes,
  makeShare,
  readAll,
  setattrArgs,
  text,
  writeAt,
} from "../../../../tests/support/passthrough_fixture.ts";
import { PassthroughFs } from "./passthrough_fs.ts";
import { entryOut, splitTimeout } from "./fs_attr.ts";
import { encodeAttrOut, encodeEntryOut } from "../fuse/fuse_reply.ts";

const ROOT = 1n;
const isRoot = Deno.uid() === 0;

function initArgs(flags: number): FuseInitArgs {
  return { major: 7, minor: 37, maxReadahead: 131072, flags, flags2: 0 };
}

Deno.test("constructor refuses a missing directory or a file with a clear message", () => {
  using share = makeShare();
  Deno.writeTextFileSync(`${share.path}/file`, "");
  for (const sharedDir of [`${share.path}/missing`, `${share.path}/file`]) {
    assert.throws(
      () => new PassthroughFs({ sharedDir, readOnly: false, migrationOnError: "abort" }),
      (error: unknown) =>
        error instanceof Error && error.message.includes(sharedDir) &&
        /ENOENT|ENOTDIR/.test(error.message),
    );
  }
  assert.throws(
    () => new PassthroughFs({ sharedDir: "", readOnly: false, migrationOnError: "abort" }),
    /empty/,
  );
});

Deno.test("init accepts only what it wants of the guest's offer and remembers it", () => {
  using share = makeShare();
  const offered = FuseInitFlag.ASYNC_READ | FuseInitFlag.ATOMIC_O_TRUNC |
    FuseInitFlag.DO_READDIRPLUS | FuseInitFlag.READDIRPLUS_AUTO | FuseInitFlag.MAX_PAGES |
    FuseInitFlag.WRITEBACK_CACHE | FuseInitFlag.POSIX_ACL | FuseInitFlag.PARALLEL_DIROPS |
    FuseInitFlag.BIG_WRITES | FuseInitFlag.INIT_EXT | FuseInitFlag.HANDLE_KILLPRIV_V2;
  const result = share.fs.init(initArgs(offered));
  assert.equal(result.flags & FuseInitFlag.WRITEBACK_CACHE, 0);
  assert.equal(result.flags & FuseInitFlag.POSIX_ACL, 0);
  for (
    const wanted of [
      FuseInitFlag.ASYNC_READ,
      FuseInitFlag.ATOMIC_O_TRUNC,
      FuseInitFlag.DO_READDIRPLUS,
      FuseInitFlag.READDIRPLUS_AUTO,
      FuseInitFlag.MAX_PAGES,
      FuseInitFlag.PARALLEL_DIROPS,
      FuseInitFlag.BIG_WRITES,
      FuseInitFlag.HANDLE_KILLPRIV_V2,
    ]
  ) {
    assert.notEqual(result.flags & wanted, 0, `flag ${wanted} accepted`);
  }
  assert.equal(result.maxPages, 256);
  assert.equal(result.maxWrite, 256 * 4096);
  assert.equal(result.maxReadahead, 131072);
  assert.deepEqual(share.fs.negotiated, result);

  // Nothing offered: nothing accepted, the kernel's default page limit.
  const bare = share.fs.init(initArgs(0));
  assert.equal(bare.flags, 0);
  assert.equal(bare.maxPages, 32);
  assertFsErrno(() => share.fs.init({ ...initArgs(0), major: 6 }), EPROTO);
});

Deno.test("lookup: attributes, counting, forget, and the root is never dropped", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/file`, "hello");
  const hostStat = Deno.lstatSync(`${share.path}/file`);
  const entry = fs.lookup(ROOT, bytes("file"));
  assert.equal(entry.attr.ino, BigInt(hostStat.ino!));
  assert.equal(entry.attr.size, 5);
  assert.equal(entry.attr.mode & S_IFMT, S_IFREG);
  assert.notEqual(entry.nodeid, ROOT);
  assert.equal(entry.generation, 0n);
  assert.equal(entry.entryTimeoutSec, 1);
  assert.equal(entry.attrTimeoutSec, 1);

  assert.equal(fs.lookup(ROOT, bytes("file")).nodeid, entry.nodeid, "same file, same node id");
  fs.lookup(ROOT, bytes("file"));
  assert.equal(fs.inodeInfo(entry.nodeid)?.lookups, 3n);
  assert.equal(fs.counts().inodes, 2);
  fs.forget(entry.nodeid, 2n);
  assert.equal(fs.inodeInfo(entry.nodeid)?.lookups, 1n);
  fs.batchForget([{ nodeid: entry.nodeid, nlookup: 5n }, { nodeid: 999n, nlookup: 1n }]);
  assert.equal(fs.inodeInfo(entry.nodeid), undefined, "dropped at zero");
  assert.equal(fs.counts().inodes, 1);
  assertFsErrno(() => fs.getattr(entry.nodeid), EBADF, "getattr of a forgotten node");

  // A new lookup gets a new node id (ids are never reused).
  assert.ok(fs.lookup(ROOT, bytes("file")).nodeid > entry.nodeid);

  fs.forget(ROOT, 1000n);
  assert.equal(fs.getattr(ROOT).attr.mode & S_IFMT, S_IFDIR, "the root survives a forget");

  assertFsErrno(() => fs.lookup(ROOT, bytes("missing")), ENOENT);
  assertFsErrno(() => fs.lookup(12345n, bytes("file")), EBADF);
  const fileNode = fs.lookup(ROOT, bytes("file")).nodeid;
  assertFsErrno(() => fs.lookup(fileNode, bytes("x")), ENOTDIR);
  assertFsErrno(() => fs.lookup(ROOT, bytes("")), EINVAL);
  assertFsErrno(() => fs.lookup(ROOT, bytes("a/b")), EINVAL);
  assertFsErrno(() => fs.lookup(ROOT, new Uint8Array(256).fill(0x61)), 36 /* ENAMETOOLONG */);
});

Deno.test("hard links share one inode; the inode's fd lives until the last forget", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/a`, "shared");
  Deno.linkSync(`${share.path}/a`, `${share.path}/b`);
  const a = fs.lookup(ROOT, bytes("a"));
  const b = fs.lookup(ROOT, bytes("b"));
  assert.equal(a.nodeid, b.nodeid);
  assert.equal(a.attr.nlink, 2);
  assert.equal(fs.inodeInfo(a.nodeid)?.lookups, 2n);
  assert.equal(fs.counts().inodes, 2);
  // The most recent name is the recorded location.
  assert.equal(text(fs.inodeInfo(a.nodeid)!.name!), "b");
  // Both names removed by the host: the held fd still reaches the file.
  Deno.removeSync(`${share.path}/a`);
  Deno.removeSync(`${share.path}/b`);
  const attr = fs.getattr(a.nodeid).attr;
  assert.equal(attr.nlink, 0);
  assert.equal(attr.size, 6);
});

Deno.test("a name looked up again is checked on the host: renamed or replaced files are found anew", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "one");
  Deno.mkdirSync(`${share.path}/d`);
  const first = fs.lookup(ROOT, bytes("f"));
  const dir = fs.lookup(ROOT, bytes("d"));
  assert.equal(fs.lookup(ROOT, bytes("f")).nodeid, first.nodeid, "unchanged: the same inode");
  assert.equal(fs.inodeInfo(first.nodeid)?.lookups, 2n);

  // The host renames f away and puts another file under its name.
  Deno.renameSync(`${share.path}/f`, `${share.path}/g`);
  Deno.writeTextFileSync(`${share.path}/f`, "second");
  const second = fs.lookup(ROOT, bytes("f"));
  assert.notEqual(second.nodeid, first.nodeid);
  assert.equal(second.attr.size, 6);
  assert.equal(second.attr.ino, BigInt(Deno.lstatSync(`${share.path}/f`).ino!));
  assert.equal(fs.lookup(ROOT, bytes("g")).nodeid, first.nodeid, "the old file under its new name");
  assert.equal(fs.inodeInfo(first.nodeid)?.lookups, 3n);

  // Replaced by a symbolic link (never followed) and then removed.
  Deno.removeSync(`${share.path}/f`);
  Deno.symlinkSync("g", `${share.path}/f`);
  const link = fs.lookup(ROOT, bytes("f"));
  assert.equal(link.attr.mode & S_IFMT, S_IFLNK);
  assert.notEqual(link.nodeid, first.nodeid);
  Deno.removeSync(`${share.path}/f`);
  assertFsErrno(() => fs.lookup(ROOT, bytes("f")), ENOENT);

  // A directory replaced by a file of the same name.
  Deno.removeSync(`${share.path}/d`);
  Deno.writeTextFileSync(`${share.path}/d`, "");
  const file = fs.lookup(ROOT, bytes("d"));
  assert.notEqual(file.nodeid, dir.nodeid);
  assert.equal(file.attr.mode & S_IFMT, S_IFREG);
});

Deno.test("'.' is the directory itself, '..' its parent, and '..' of the root is the root", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.mkdirSync(`${share.path}/d/e`, { recursive: true });
  const d = fs.lookup(ROOT, bytes("d"));
  const e = fs.lookup(d.nodeid, bytes("e"));
  assert.equal(fs.lookup(d.nodeid, bytes(".")).nodeid, d.nodeid);
  assert.equal(fs.lookup(e.nodeid, bytes("..")).nodeid, d.nodeid);
  assert.equal(fs.lookup(d.nodeid, bytes("..")).nodeid, ROOT);
  const up = fs.lookup(ROOT, bytes(".."));
  assert.equal(up.nodeid, ROOT);
  assert.equal(up.attr.ino, BigInt(Deno.statSync(share.path).ino!), "the share, not its parent");
  assert.equal(fs.inodeInfo(d.nodeid)?.lookups, 3n, "lookup, '.', and '..' from e");
});

Deno.test("getattr, with and without a file handle", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "12345");
  const f = fs.lookup(ROOT, bytes("f"));
  const { fh } = fs.open(f.nodeid, O_RDWR);
  writeAt(fs, fh, "1234567890");
  assert.equal(fs.getattr(f.nodeid).attr.size, 10);
  assert.equal(fs.getattr(f.nodeid, fh).attr.size, 10);
  assert.equal(fs.getattr(f.nodeid, 999n).attr.size, 10, "an unknown fh falls back to the inode");
  const root = fs.getattr(ROOT);
  assert.equal(root.attr.mode & S_IFMT, S_IFDIR);
  assert.equal(root.attrTimeoutSec, 1);
});

Deno.test("getattrInto writes the fuse_attr_out getattr's result encodes to, or fails the same", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "12345");
  Deno.mkdirSync(`${share.path}/d`);
  const f = fs.lookup(ROOT, bytes("f"));
  const d = fs.lookup(ROOT, bytes("d"));
  const { fh } = fs.open(f.nodeid, O_RDWR);
  writeAt(fs, fh, "1234567890");
  const cases: [bigint, bigint | undefined][] = [[ROOT, undefined], [f.nodeid, undefined], [
    f.nodeid,
    fh,
  ], [d.nodeid, 999n]];
  for (const [nodeid, handle] of cases) {
    const result = fs.getattr(nodeid, handle);
    const valid = splitTimeout(result.attrTimeoutSec);
    const expected = encodeAttrOut({
      attrValid: valid.sec,
      attrValidNsec: valid.nsec,
      attr: result.attr,
    });
    const target = new Uint8Array(16 + expected.length + 4).fill(0xcc);
    fs.getattrInto(nodeid, handle, target.subarray(2), 14);
    assert.deepEqual(target.subarray(16, 16 + expected.length), expected, `node ${nodeid}`);
    assert.ok(target.subarray(0, 16).every((b) => b === 0xcc), "nothing before");
    assert.ok(target.subarray(16 + expected.length).every((b) => b === 0xcc), "nothing after");
  }
  const untouched = new Uint8Array(200).fill(0xcc);
  assertFsErrno(() => fs.getattrInto(4242n, undefined, untouched, 16), EBADF, "unknown node");
  assert.ok(untouched.every((b) => b === 0xcc), "nothing written on failure");
});

Deno.test("lookupInto writes the fuse_entry_out lookup's result encodes to, and counts the same", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "12345");
  Deno.mkdirSync(`${share.path}/d`);
  const into = (parent: bigint, name: string) => {
    const target = new Uint8Array(16 + 128 + 4).fill(0xcc);
    fs.lookupInto(parent, bytes(name), target.subarray(2), 14);
    assert.ok(target.subarray(0, 16).every((b) => b === 0xcc), "nothing before");
    assert.ok(target.subarray(16 + 128).every((b) => b === 0xcc), "nothing after");
    return target.subarray(16, 16 + 128);
  };
  // A new name (no inode recorded there), then the same name again (answered from one statx).
  const first = into(ROOT, "f");
  const f = fs.lookup(ROOT, bytes("f"));
  assert.deepEqual(first, encodeEntryOut(entryOut(f)));
  const again = into(ROOT, "f");
  Deno.writeTextFileSync(`${share.path}/f`, "1234567");
  assert.deepEqual(again, first, "the known name, answered from its statx alone: the same bytes");
  assert.deepEqual(into(ROOT, "f"), encodeEntryOut(entryOut(fs.lookup(ROOT, bytes("f")))));
  // Five references in all: forgetting four keeps the inode, the fifth drops it.
  const inodes = fs.counts().inodes;
  fs.forget(f.nodeid, 4n);
  assert.equal(fs.counts().inodes, inodes);
  fs.forget(f.nodeid, 1n);
  assert.equal(fs.counts().inodes, inodes - 1);
  // The name now names another file: a new inode, as lookup finds it.
  const d = fs.lookup(ROOT, bytes("d"));
  into(d.nodeid, "..");
  Deno.renameSync(`${share.path}/d`, `${share.path}/old`);
  Deno.mkdirSync(`${share.path}/d`);
  const replaced = into(ROOT, "d");
  const now = fs.lookup(ROOT, bytes("d"));
  assert.notEqual(now.nodeid, d.nodeid);
  assert.deepEqual(replaced, encodeEntryOut(entryOut(now)));
  // Failures as lookup's, with nothing written.
  const untouched = new Uint8Array(200).fill(0xcc);
  assertFsErrno(() => fs.lookupInto(4242n, bytes("f"), untouched, 16), EBADF, "unknown node");
  assertFsErrno(() => fs.lookupInto(ROOT, bytes("missing"), untouched, 16), ENOENT, "no such name");
  assertFsErrno(() => fs.lookupInto(f.nodeid, bytes("x"), untouched, 16), EBADF, "forgotten node");
  assert.ok(untouched.every((b) => b === 0xcc), "nothing written on failure");
  assert.throws(() => fs.lookupInto(ROOT, bytes("f"), untouched, 100), RangeError);
});

Deno.test("setattr: mode, owner, size (by path and by handle), times; symlink mode skipped", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "0123456789");
  Deno.symlinkSync("f", `${share.path}/link`);
  const f = fs.lookup(ROOT, bytes("f"));

  let attr = fs.setattr(f.nodeid, setattrArgs({ valid: FuseSetattrValid.MODE, mode: 0o100640 }))
    .attr;
  assert.equal(attr.mode, S_IFREG | 0o640);
  assert.equal(Deno.statSync(`${share.path}/f`).mode! & 0o7777, 0o640);

  if (isRoot) {
    attr = fs.setattr(
      f.nodeid,
      setattrArgs({ valid: FuseSetattrValid.UID | FuseSetattrValid.GID, uid: 1234, gid: 5678 }),
    ).attr;
    assert.deepEqual([attr.uid, attr.gid], [1234, 5678]);
    attr = fs.setattr(f.nodeid, setattrArgs({ valid: FuseSetattrValid.GID, gid: 42 })).attr;
    assert.deepEqual([attr.uid, attr.gid], [1234, 42], "uid left alone");
  }

  attr = fs.setattr(f.nodeid, setattrArgs({ valid: FuseSetattrValid.SIZE, size: 4n })).attr;
  assert.equal(attr.size, 4);
  assert.equal(Deno.readTextFileSync(`${share.path}/f`), "0123");
  const { fh } = fs.open(f.nodeid, O_RDWR);
  attr = fs.setattr(
    f.nodeid,
    setattrArgs({ valid: FuseSetattrValid.SIZE | FuseSetattrValid.FH, fh, size: 2n }),
  ).attr;
  assert.equal(attr.size, 2);

  attr = fs.setattr(
    f.nodeid,
    setattrArgs({
      valid: FuseSetattrValid.ATIME | FuseSetattrValid.MTIME,
      atime: 1_000_000_000n,
      atimensec: 5,
      mtime: 1_200_000_000n,
      mtimensec: 7,
    }),
  ).attr;
  assert.deepEqual([attr.atime, attr.atimensec], [1_000_000_000, 5]);
  assert.deepEqual([attr.mtime, attr.mtimensec], [1_200_000_000, 7]);
  const before = Math.floor(Date.now() / 1000);
  attr = fs.setattr(
    f.nodeid,
    setattrArgs({ valid: FuseSetattrValid.MTIME | FuseSetattrValid.MTIME_NOW }),
  ).attr;
  assert.ok(Number(attr.mtime) >= before, "mtime set to now");
  assert.equal(attr.atime, 1_000_000_000, "atime left alone");

  const link = fs.lookup(ROOT, bytes("link"));
  attr = fs.setattr(link.nodeid, setattrArgs({ valid: FuseSetattrValid.MODE, mode: 0o600 })).attr;
  assert.equal(attr.mode & S_IFMT, S_IFLNK, "the link's attributes, not the target's");
  assert.equal(Deno.statSync(`${share.path}/f`).mode! & 0o777, 0o640, "target untouched");

  const dir = fs.mkdir(ROOT, bytes("d"), 0o755, 0, 0, 0);
  assertFsErrno(
    () => fs.setattr(dir.nodeid, setattrArgs({ valid: FuseSetattrValid.SIZE, size: 0n })),
    EISDIR,
  );
  assertFsErrno(() => fs.setattr(777n, setattrArgs({ valid: FuseSetattrValid.MODE })), EBADF);
});

Deno.test("readlink returns the exact target bytes; EINVAL on a file", () => {
  using share = makeShare();
  const { fs } = share;
  const target = new Uint8Array([0x2e, 0x2e, 0x2f, 0xff, 0xfe, 0x41]); // "../" + invalid UTF-8
  const link = fs.symlink(ROOT, bytes("odd"), target, 0, 0);
  assert.deepEqual(fs.readlink(link.nodeid), target);
  Deno.writeTextFileSync(`${share.path}/f`, "");
  assertFsErrno(() => fs.readlink(fs.lookup(ROOT, bytes("f")).nodeid), EINVAL);
});

Deno.test("symlink creates a link owned by the caller; EEXIST on a taken name", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.chmodSync(share.path, 0o777); // the caller creates: it needs write access
  const entry = fs.symlink(ROOT, bytes("l"), bytes("/etc/passwd"), 1234, 5678);
  assert.equal(entry.attr.mode & S_IFMT, S_IFLNK);
  assert.equal(Deno.readLinkSync(`${share.path}/l`), "/etc/passwd");
  if (isRoot) {
    const st = Deno.lstatSync(`${share.path}/l`);
    assert.deepEqual([st.uid, st.gid], [1234, 5678]);
  }
  assert.equal(fs.inodeInfo(entry.nodeid)?.lookups, 1n);
  assertFsErrno(() => fs.symlink(ROOT, bytes("l"), bytes("x"), 0, 0), EEXIST);
  assertFsErrno(() => fs.symlink(ROOT, bytes(".."), bytes("x"), 0, 0), EINVAL);
});

Deno.test("mknod makes files, FIFOs and device nodes; none of the specials can be opened", () => {
  using share = makeShare();
  const { fs } = share;
  const plain = fs.mknod(ROOT, bytes("plain"), S_IFREG | 0o640, 0, 0o022, 0, 0);
  assert.equal(plain.attr.mode, S_IFREG | 0o640);
  const fifo = fs.mknod(ROOT, bytes("fifo"), S_IFIFO | 0o666, 0, 0o022, 0, 0);
  assert.equal(fifo.attr.mode, S_IFIFO | 0o644);
  assertFsErrno(() => fs.open(fifo.nodeid, O_RDONLY), EPERM, "open of a FIFO");
  if (isRoot) {
    const rdev = (1 << 8) | 3; // makedev(1, 3): /dev/null
    const dev = fs.mknod(ROOT, bytes("null"), S_IFCHR | 0o666, rdev, 0, 0, 0);
    assert.equal(dev.attr.mode & S_IFMT, S_IFCHR);
    assert.equal(dev.attr.rdev, rdev);
    assertFsErrno(() => fs.open(dev.nodeid, O_RDWR), EPERM, "open of a device node");
  }
  assertFsErrno(() => fs.mknod(ROOT, bytes("plain"), S_IFREG | 0o644, 0, 0, 0, 0), EEXIST);
  assertFsErrno(() => fs.mknod(ROOT, bytes("d"), S_IFDIR | 0o755, 0, 0, 0, 0), EPERM);
});

Deno.test("mkdir applies the guest's umask exactly and the caller's ids; setgid parents win", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.chmodSync(share.path, 0o777); // the caller creates: it needs write access
  const a = fs.mkdir(ROOT, bytes("a"), 0o777, 0o027, 1234, 5678);
  assert.equal(a.attr.mode, S_IFDIR | 0o750);
  // The process umask (022 usually) must not strip what the guest asked for.
  const b = fs.mkdir(ROOT, bytes("b"), 0o777, 0, 0, 0);
  assert.equal(b.attr.mode, S_IFDIR | 0o777);
  if (isRoot) {
    assert.deepEqual([a.attr.uid, a.attr.gid], [1234, 5678]);
    fs.setattr(a.nodeid, setattrArgs({ valid: FuseSetattrValid.MODE, mode: 0o2777 }));
    const inner = fs.mkdir(a.nodeid, bytes("inner"), 0o755, 0, 1, 1);
    assert.equal(inner.attr.gid, 5678, "group of the setgid parent");
    assert.equal(inner.attr.uid, 1);
    assert.equal(inner.attr.mode, S_IFDIR | 0o2755, "setgid inherited by a directory");
  }
  assertFsErrno(() => fs.mkdir(ROOT, bytes("a"), 0o755, 0, 0, 0), EEXIST);
  assertFsErrno(() => fs.mkdir(a.nodeid + 1000n, bytes("x"), 0o755, 0, 0, 0), EBADF);
  assertFsErrno(() => fs.mkdir(ROOT, bytes("."), 0o755, 0, 0, 0), EINVAL);
});

Deno.test("unlink and rmdir: happy paths, ENOENT, ENOTEMPTY, EISDIR, ENOTDIR", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.mkdirSync(`${share.path}/full`);
  Deno.writeTextFileSync(`${share.path}/full/x`, "");
  Deno.mkdirSync(`${share.path}/empty`);
  Deno.writeTextFileSync(`${share.path}/f`, "");
  const f = fs.lookup(ROOT, bytes("f"));
  assertFsErrno(() => fs.rmdir(ROOT, bytes("full")), ENOTEMPTY);
  assertFsErrno(() => fs.rmdir(ROOT, bytes("f")), ENOTDIR);
  assertFsErrno(() => fs.unlink(ROOT, bytes("empty")), EISDIR);
  assertFsErrno(() => fs.unlink(ROOT, bytes("missing")), ENOENT);
  fs.rmdir(ROOT, bytes("empty"));
  fs.unlink(ROOT, bytes("f"));
  assert.deepEqual([...Deno.readDirSync(share.path)].map((e) => e.name), ["full"]);
  const info = fs.inodeInfo(f.nodeid);
  assert.equal(info?.name, null, "an unlinked inode has no location");
  assert.equal(info?.lookups, 1n, "but the guest still holds it");
});

Deno.test("unlink of a name the host gave to another file forgets the location recorded there", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/a`, "first");
  const first = fs.lookup(ROOT, bytes("a"));
  // Behind the guest's back: the first file moves away, a new one takes its name.
  Deno.renameSync(`${share.path}/a`, `${share.path}/moved`);
  Deno.writeTextFileSync(`${share.path}/a`, "second");
  fs.unlink(ROOT, bytes("a"));
  assert.deepEqual([...Deno.readDirSync(share.path)].map((e) => e.name), ["moved"]);
  assert.equal(
    fs.inodeInfo(first.nodeid)?.name,
    null,
    "nothing is at the recorded name any more: a snapshot must not send the inode there",
  );
});

Deno.test("rename over names the host gave to other files forgets the locations recorded there", () => {
  for (const flags of [0, RENAME_EXCHANGE]) {
    using share = makeShare();
    const { fs } = share;
    Deno.writeTextFileSync(`${share.path}/a`, "a");
    Deno.writeTextFileSync(`${share.path}/b`, "b");
    const a = fs.lookup(ROOT, bytes("a"));
    const b = fs.lookup(ROOT, bytes("b"));
    // Behind the guest's back: both files move away, files vhostd never saw take their names.
    Deno.renameSync(`${share.path}/a`, `${share.path}/a.away`);
    Deno.renameSync(`${share.path}/b`, `${share.path}/b.away`);
    Deno.writeTextFileSync(`${share.path}/a`, "new a");
    Deno.writeTextFileSync(`${share.path}/b`, "new b");
    fs.rename(ROOT, bytes("a"), ROOT, bytes("b"), flags);
    assert.equal(Deno.readTextFileSync(`${share.path}/b`), "new a");
    for (const [label, entry] of [["a", a], ["b", b]] as const) {
      assert.equal(
        fs.inodeInfo(entry.nodeid)?.name,
        null,
        `flags ${flags}: the inode looked up as ${label} is at neither name now`,
      );
    }
  }
});

Deno.test("rename keeps the inode table consistent: plain, NOREPLACE, EXCHANGE, replace", () => {
  using share = makeShare();
  const { fs } = share;
  const d1 = fs.mkdir(ROOT, bytes("d1"), 0o755, 0, 0, 0);
  const d2 = fs.mkdir(ROOT, bytes("d2"), 0o755, 0, 0, 0);
  const a = fs.create(d1.nodeid, bytes("a"), O_WRONLY, 0o644, 0, 0, 0);
  fs.release(a.open.fh);
  const b = fs.create(d2.nodeid, bytes("b"), O_WRONLY, 0o644, 0, 0, 0);
  fs.release(b.open.fh);
  const location = (nodeid: bigint) => {
    const info = fs.inodeInfo(nodeid)!;
    return info.name === null ? null : `${info.parent}/${text(info.name)}`;
  };
  assert.equal(fs.inodeInfo(d1.nodeid)?.refs, 1, "a is located in d1");

  fs.rename(d1.nodeid, bytes("a"), d2.nodeid, bytes("a2"), 0);
  assert.equal(location(a.entry.nodeid), `${d2.nodeid}/a2`);
  assert.equal(fs.inodeInfo(d1.nodeid)?.refs, 0);
  assert.equal(fs.inodeInfo(d2.nodeid)?.refs, 2);
  assert.ok(Deno.statSync(`${share.path}/d2/a2`).isFile);

  assertFsErrno(
    () => fs.rename(d2.nodeid, bytes("a2"), d2.nodeid, bytes("b"), RENAME_NOREPLACE),
    EEXIST,
  );
  fs.rename(d2.nodeid, bytes("a2"), d2.nodeid, bytes("b"), RENAME_EXCHANGE);
  assert.equal(location(a.entry.nodeid), `${d2.nodeid}/b`);
  assert.equal(location(b.entry.nodeid), `${d2.nodeid}/a2`);

  // Plain rename over an existing name: the replaced inode loses its location.
  fs.rename(d2.nodeid, bytes("a2"), d2.nodeid, bytes("b"), 0);
  assert.equal(location(b.entry.nodeid), `${d2.nodeid}/b`);
  assert.equal(location(a.entry.nodeid), null);
  assert.equal(fs.getattr(a.entry.nodeid).attr.nlink, 0);

  assertFsErrno(() => fs.rename(d2.nodeid, bytes("nope"), ROOT, bytes("x"), 0), ENOENT);
  assertFsErrno(() => fs.rename(d2.nodeid, bytes("b"), ROOT, bytes("x"), 0x100), EINVAL);
  assertFsErrno(() => fs.rename(ROOT, bytes("d1"), d1.nodeid, bytes("inside"), 0), EINVAL);
  // A snapshot of this state names each file where it really is.
  const byId = new Map(fs.snapshot().inodes.map((r) => [r.nodeid, r]));
  assert.equal(byId.get(b.entry.nodeid.toString())?.parent, d2.nodeid.toString());
});

Deno.test("link adds a name for the same inode; EEXIST, EPERM for directories", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/orig`, "data");
  const orig = fs.lookup(ROOT, bytes("orig"));
  const d = fs.mkdir(ROOT, bytes("d"), 0o755, 0, 0, 0);
  const linked = fs.link(orig.nodeid, d.nodeid, bytes("copy"));
  assert.equal(linked.nodeid, orig.nodeid);
  assert.equal(linked.attr.nlink, 2);
  assert.equal(fs.inodeInfo(orig.nodeid)?.lookups, 2n);
  assert.equal(Deno.readTextFileSync(`${share.path}/d/copy`), "data");
  assertFsErrno(() => fs.link(orig.nodeid, d.nodeid, bytes("copy")), EEXIST);
  assertFsErrno(() => fs.link(d.nodeid, ROOT, bytes("dirlink")), EPERM);
  // A symbolic link is linked as itself.
  const sym = fs.symlink(ROOT, bytes("sym"), bytes("/"), 0, 0);
  fs.link(sym.nodeid, ROOT, bytes("sym2"));
  assert.equal(Deno.readLinkSync(`${share.path}/sym2`), "/");
});

Deno.test("open honours O_APPEND and O_TRUNC, drops O_DIRECT; refuses dirs and links", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "start");
  const f = fs.lookup(ROOT, bytes("f"));
  const reader = fs.open(f.nodeid, O_RDONLY);
  assert.equal(reader.openFlags, 0);
  assert.equal(readAll(fs, reader.fh), "start");
  const appender = fs.open(f.nodeid, O_WRONLY | O_APPEND | O_DIRECT);
  assert.equal(getStatusFlags(fs.readFd(appender.fh)) & O_DIRECT, 0, "O_DIRECT dropped");
  writeAt(fs, appender.fh, "+more", 0); // pwrite on O_APPEND still appends (Linux)
  assert.equal(Deno.readTextFileSync(`${share.path}/f`), "start+more");
  const truncating = fs.open(f.nodeid, O_WRONLY | O_TRUNC);
  assert.equal(Deno.readTextFileSync(`${share.path}/f`), "");
  assert.notEqual(reader.fh, truncating.fh);
  assertFsErrno(() => fs.open(ROOT, O_RDONLY), EISDIR);
  const link = fs.symlink(ROOT, bytes("link"), bytes("f"), 0, 0);
  assertFsErrno(() => fs.open(link.nodeid, O_RDONLY), ELOOP);
  assertFsErrno(() => fs.readFd(12345n), EBADF);
  const dir = fs.opendir(ROOT, 0);
  assertFsErrno(() => fs.readFd(dir.fh), EISDIR);
  for (const fh of [reader.fh, appender.fh, truncating.fh]) fs.release(fh);
  assertFsErrno(() => fs.readFd(reader.fh), EBADF, "released");
  fs.release(reader.fh); // twice: ignored
  assert.equal(fs.counts().handles, 1);
});

Deno.test("create: O_EXCL semantics, mode, owner, and opening an existing file", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.chmodSync(share.path, 0o777); // the caller creates: it needs write access
  const made = fs.create(ROOT, bytes("new"), O_RDWR | O_CREAT | O_EXCL, 0o4755, 0o022, 1234, 77);
  assert.equal(made.entry.attr.mode, S_IFREG | 0o4755, "setuid asked for at creation is kept");
  if (isRoot) assert.deepEqual([made.entry.attr.uid, made.entry.attr.gid], [1234, 77]);
  assert.equal(fs.inodeInfo(made.entry.nodeid)?.lookups, 1n);
  writeAt(fs, made.open.fh, "created");
  assert.equal(readAll(fs, made.open.fh), "created");
  assertFsErrno(
    () => fs.create(ROOT, bytes("new"), O_RDWR | O_CREAT | O_EXCL, 0o644, 0, 0, 0),
    EEXIST,
  );
  // Without O_EXCL the existing file is opened (and O_TRUNC honoured); its
  // mode is left alone (a root caller's truncation keeps setuid).
  const again = fs.create(ROOT, bytes("new"), O_RDWR | O_CREAT | O_TRUNC, 0o600, 0, 0, 0);
  assert.equal(again.entry.nodeid, made.entry.nodeid);
  assert.equal(fs.inodeInfo(made.entry.nodeid)?.lookups, 2n);
  assert.equal(Deno.readTextFileSync(`${share.path}/new`), "");
  assert.equal(Deno.statSync(`${share.path}/new`).mode! & 0o7777, 0o4755, "mode untouched");
  Deno.symlinkSync("new", `${share.path}/link`);
  assertFsErrno(() => fs.create(ROOT, bytes("link"), O_RDWR | O_CREAT, 0o644, 0, 0, 0), ELOOP);
  Deno.mkdirSync(`${share.path}/dir`);
  assertFsErrno(() => fs.create(ROOT, bytes("dir"), O_RDWR | O_CREAT, 0o644, 0, 0, 0), EISDIR);
  assertFsErrno(() => fs.create(ROOT, bytes("a/b"), O_RDWR | O_CREAT, 0o644, 0, 0, 0), EINVAL);
});

Deno.test("createInto writes the fuse_create_out create's result encodes to", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.chmodSync(share.path, 0o777);
  const root = { uid: 0, gid: 0, groups: [] };
  const into = (name: string, flags: number, mode: number, umask: number, caller = root) => {
    const target = new Uint8Array(16 + 144 + 4).fill(0xcc);
    fs.createInto(
      ROOT,
      { name: bytes(name), flags, mode, umask },
      caller,
      false,
      target.subarray(2),
      14,
    );
    assert.ok(target.subarray(0, 16).every((b) => b === 0xcc), "nothing before");
    assert.ok(target.subarray(16 + 144).every((b) => b === 0xcc), "nothing after");
    return { entry: target.subarray(16, 16 + 128), open: target.subarray(16 + 128, 16 + 144) };
  };
  const fhOf = (open: Uint8Array) =>
    new DataView(open.buffer, open.byteOffset).getBigUint64(0, true);
  // A new file (its mode left as made), one whose mode is fixed up after the
  // umask (its status read again), and an existing file opened without O_EXCL.
  const cases: [string, number, number, number][] = [
    ["plain", O_RDWR | O_CREAT | O_EXCL, 0o644, 0o022],
    ["setuid", O_RDWR | O_CREAT | O_EXCL, 0o4775, 0o002],
    ["plain", O_RDWR | O_CREAT, 0o600, 0],
  ];
  const reference = fs.create(ROOT, bytes("reference"), O_RDWR | O_CREAT, 0o644, 0, 0, 0);
  for (const [name, flags, mode, umask] of cases) {
    const made = into(name, flags, mode, umask, { uid: 1234, gid: 77, groups: [] });
    // What a LOOKUP of the name answers now, byte for byte (node id and attributes).
    const looked = fs.lookup(ROOT, bytes(name));
    assert.deepEqual(made.entry, encodeEntryOut(entryOut(looked)), name);
    assert.equal(Deno.statSync(`${share.path}/${name}`).mode! & 0o7777, looked.attr.mode & 0o7777);
    // The handle works, with the open flags create's handles get; fuse_open_out's padding is 0.
    const fh = fhOf(made.open);
    writeAt(fs, fh, "via createInto");
    assert.equal(readAll(fs, fh), "via createInto");
    assert.deepEqual(
      made.open.subarray(8),
      new Uint8Array(new Uint32Array([reference.open.openFlags, 0]).buffer),
    );
    fs.release(fh);
  }
  if (isRoot) assert.equal(Deno.statSync(`${share.path}/setuid`).uid, 1234);
  assert.equal(Deno.statSync(`${share.path}/setuid`).mode! & 0o7777, 0o4775);
  // The two CREATEs and two LOOKUPs of "plain", and the LOOKUP just made: five references.
  const plain = fs.lookup(ROOT, bytes("plain"));
  assert.equal(fs.inodeInfo(plain.nodeid)?.lookups, 5n);
  // Failures as create's, with nothing written.
  const untouched = new Uint8Array(200).fill(0xcc);
  const fail = (name: string, flags: number) => () =>
    fs.createInto(
      ROOT,
      { name: bytes(name), flags, mode: 0o644, umask: 0 },
      root,
      false,
      untouched,
      16,
    );
  assertFsErrno(fail("plain", O_RDWR | O_CREAT | O_EXCL), EEXIST);
  assertFsErrno(fail("a/b", O_RDWR | O_CREAT), EINVAL);
  assert.ok(untouched.every((b) => b === 0xcc), "nothing written on failure");
  assert.throws(
    () => {
      const args = { name: bytes("x"), flags: O_RDWR | O_CREAT, mode: 0o644, umask: 0 };
      fs.createInto(ROOT, args, root, false, untouched, 60);
    },
    RangeError,
  );
  assert.throws(() => Deno.statSync(`${share.path}/x`), Deno.errors.NotFound);
});

Deno.test("statfs reports the host filesystem", () => {
  using share = makeShare();
  const st = share.fs.statfs(ROOT);
  assert.ok(Number(st.blocks) > 0);
  assert.ok(st.bsize > 0);
  assert.ok(st.namelen >= 255);
  assert.ok(Number(st.bfree) <= Number(st.blocks));
});

Deno.test("flush, fsync, fsyncdir work on open handles; EBADF after release", () => {
  using share = makeShare();
  const { fs } = share;
  const { open } = fs.create(ROOT, bytes("f"), O_WRONLY | O_CREAT, 0o644, 0, 0, 0);
  writeAt(fs, open.fh, "x");
  fs.flush(open.fh);
  fs.fsync(open.fh, false);
  fs.fsync(open.fh, true);
  const dir = fs.opendir(ROOT, 0);
  fs.fsyncdir(dir.fh, false);
  assertFsErrno(() => fs.fsyncdir(open.fh, false), ENOTDIR);
  fs.releasedir(dir.fh);
  fs.release(open.fh);
  assertFsErrno(() => fs.flush(open.fh), EBADF);
  assertFsErrno(() => fs.fsync(open.fh, false), EBADF);
  assertFsErrno(() => fs.fsyncdir(dir.fh, false), EBADF);
  assert.equal(fs.counts().handles, 0);
});

Deno.test("fallocate and lseek with SEEK_DATA / SEEK_HOLE", () => {
  using share = makeShare();
  const { fs } = share;
  const { entry, open } = fs.create(ROOT, bytes("sparse"), O_RDWR | O_CREAT, 0o644, 0, 0, 0);
  fs.fallocate(open.fh, 0, 0n, 8192n);
  assert.equal(fs.getattr(entry.nodeid).attr.size, 8192);
  fs.fallocate(open.fh, FALLOC_FL_KEEP_SIZE, 8192n, 8192n);
  assert.equal(fs.getattr(entry.nodeid).attr.size, 8192, "KEEP_SIZE");
  // Data at 1 MiB, a hole before it.
  fs.setattr(entry.nodeid, setattrArgs({ valid: FuseSetattrValid.SIZE, size: 0n }));
  writeAt(fs, open.fh, "data", 1 << 20);
  assert.equal(fs.lseek(open.fh, 0n, SEEK_DATA), BigInt(1 << 20));
  assert.equal(fs.lseek(open.fh, 0n, SEEK_HOLE), 0n);
  assertFsErrno(() => fs.lseek(open.fh, BigInt(2 << 20), SEEK_DATA), ENXIO);
  assertFsErrno(() => fs.lseek(open.fh, 0n, 7), EINVAL);
  assertFsErrno(() => fs.fallocate(open.fh, 0, 1n << 60n, 1n), 27 /* EFBIG */);
});

Deno.test("access checks with vhostd's effective ids", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "");
  Deno.chmodSync(`${share.path}/f`, 0o644);
  const f = fs.lookup(ROOT, bytes("f"));
  fs.access(f.nodeid, F_OK);
  fs.access(f.nodeid, R_OK | W_OK);
  assertFsErrno(() => fs.access(f.nodeid, X_OK), EACCES, "X_OK on a non-executable file");
  Deno.chmodSync(`${share.path}/f`, 0o755);
  fs.access(f.nodeid, X_OK);
});

Deno.test("write clears setuid and group-exec setgid only when the guest asks", () => {
  using share = makeShare();
  const { fs } = share;
  const { entry, open } = fs.create(ROOT, bytes("s"), O_RDWR | O_CREAT, 0o6755, 0, 0, 0);
  const data = bytes("x");
  assert.equal(fs.write(open.fh, false, (fd) => pwrite(fd, data, 0)), 1);
  // vhostd as root has CAP_FSETID: a plain write keeps the bits.
  if (isRoot) assert.equal(fs.getattr(entry.nodeid).attr.mode & 0o7777, 0o6755);
  fs.setattr(entry.nodeid, setattrArgs({ valid: FuseSetattrValid.MODE, mode: 0o6755 }));
  assert.equal(fs.write(open.fh, true, (fd) => pwrite(fd, data, 1)), 1);
  assert.equal(fs.getattr(entry.nodeid).attr.mode & 0o7777, 0o755);
  assertFsErrno(() => fs.write(999n, true, () => 0), EBADF);
});

Deno.test("read-only: every change is EROFS, reading works", () => {
  using share = makeShare({ readOnly: true });
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "read me");
  Deno.mkdirSync(`${share.path}/d`);
  const f = fs.lookup(ROOT, bytes("f"));
  const d = fs.lookup(ROOT, bytes("d"));
  const reader = fs.open(f.nodeid, O_RDONLY);
  assert.equal(readAll(fs, reader.fh), "read me");
  const changes: [string, () => unknown][] = [
    ["open for writing", () => fs.open(f.nodeid, O_WRONLY)],
    ["open with O_TRUNC", () => fs.open(f.nodeid, O_RDONLY | O_TRUNC)],
    ["create", () => fs.create(ROOT, bytes("n"), O_RDWR | O_CREAT, 0o644, 0, 0, 0)],
    ["mkdir", () => fs.mkdir(ROOT, bytes("n"), 0o755, 0, 0, 0)],
    ["mknod", () => fs.mknod(ROOT, bytes("n"), S_IFREG | 0o644, 0, 0, 0, 0)],
    ["symlink", () => fs.symlink(ROOT, bytes("n"), bytes("f"), 0, 0)],
    ["link", () => fs.link(f.nodeid, ROOT, bytes("n"))],
    ["unlink", () => fs.unlink(ROOT, bytes("f"))],
    ["rmdir", () => fs.rmdir(ROOT, bytes("d"))],
    ["rename", () => fs.rename(ROOT, bytes("f"), d.nodeid, bytes("f"), 0)],
    ["setattr", () => fs.setattr(f.nodeid, setattrArgs({ valid: FuseSetattrValid.MODE }))],
    ["fallocate", () => fs.fallocate(reader.fh, 0, 0n, 10n)],
    ["access W_OK", () => fs.access(f.nodeid, W_OK)],
  ];
  for (const [what, change] of changes) assertFsErrno(change, EROFS, what);
  assert.equal(Deno.readTextFileSync(`${share.path}/f`), "read me");
  assert.deepEqual([...Deno.readDirSync(share.path)].map((e) => e.name).sort(), ["d", "f"]);
});

Deno.test("destroy closes every handle and forgets every inode but the root", () => {
  using share = makeShare();
  const { fs } = share;
  fs.init(initArgs(FuseInitFlag.ASYNC_READ));
  const { entry } = fs.create(ROOT, bytes("f"), O_RDWR | O_CREAT, 0o644, 0, 0, 0);
  fs.opendir(ROOT, 0);
  assert.deepEqual(fs.counts(), { inodes: 2, handles: 2 });
  fs.destroy();
  assert.deepEqual(fs.counts(), { inodes: 1, handles: 0 });
  assert.equal(fs.negotiated, null);
  assertFsErrno(() => fs.getattr(entry.nodeid), EBADF);
  assert.equal(fs.lookup(ROOT, bytes("f")).attr.mode & S_IFMT, S_IFREG, "still usable");
});

/**
 * This process's fds open on something under `dir`. Counting every fd of the
 * process would race with other test modules running in parallel in it.
 */
function fdsUnder(dir: string): number {
  let count = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`).startsWith(dir)) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

Deno.test("no fd is left open: successes, failures, forget, release, close", () => {
  let sharePath: string;
  {
    using share = makeShare();
    sharePath = share.path;
    const { fs } = share;
    Deno.writeTextFileSync(`${share.path}/f`, "data");
    Deno.symlinkSync("f", `${share.path}/link`);
    const f = fs.lookup(ROOT, bytes("f"));
    fs.lookup(ROOT, bytes("f"));
    const link = fs.lookup(ROOT, bytes("link"));
    const d = fs.mkdir(ROOT, bytes("d"), 0o755, 0, 0, 0);
    const made = fs.create(d.nodeid, bytes("n"), O_RDWR | O_CREAT, 0o644, 0, 0, 0);
    assertFsErrno(
      () => fs.create(d.nodeid, bytes("n"), O_RDWR | O_CREAT | O_EXCL, 0, 0, 0, 0),
      EEXIST,
    );
    assertFsErrno(() => fs.open(link.nodeid, O_RDONLY), ELOOP);
    assertFsErrno(() => fs.lookup(ROOT, bytes("missing")), ENOENT);
    fs.setattr(f.nodeid, setattrArgs({ valid: FuseSetattrValid.SIZE, size: 1n }));
    const dir = fs.opendir(ROOT, 0);
    fs.readdir(ROOT, dir.fh, 0n, 4096, true);
    fs.flush(made.open.fh);
    fs.link(f.nodeid, d.nodeid, bytes("hard"));
    fs.forget(f.nodeid, 3n);
    fs.release(made.open.fh);
    fs.open(made.entry.nodeid, O_RDONLY); // left open: close() must release it
    assert.ok(fdsUnder(sharePath) > 0);
  }
  assert.equal(fdsUnder(sharePath), 0);
});

Deno.test("the cache policy sets open flags and timeouts", () => {
  for (
    const [cache, fileFlags, timeout, dirCached] of [
      ["never", FuseOpenOutFlag.DIRECT_IO, 0, false],
      ["metadata", FuseOpenOutFlag.DIRECT_IO, 86400, true],
      ["auto", 0, 1, false],
      ["always", FuseOpenOutFlag.KEEP_CACHE, 86400, true],
    ] as const
  ) {
    using share = makeShare({ cache });
    Deno.writeTextFileSync(`${share.path}/f`, "data");
    const entry = share.fs.lookup(ROOT, bytes("f"));
    assert.equal(entry.entryTimeoutSec, timeout, cache);
    assert.equal(share.fs.getattr(entry.nodeid).attrTimeoutSec, timeout, cache);
    assert.equal(share.fs.open(entry.nodeid, O_RDONLY).openFlags, fileFlags, cache);
    const dirFlags = share.fs.opendir(ROOT, 0).openFlags;
    assert.equal((dirFlags & FuseOpenOutFlag.CACHE_DIR) !== 0, dirCached, cache);
    assert.equal((dirFlags & FuseOpenOutFlag.KEEP_CACHE) !== 0, dirCached, cache);
  }
});

Deno.test({
  name: `operations run as their caller; KILL_SUIDGID opens drop CAP_FSETID${
    isRoot ? "" : " (skipped: needs root)"
  }`,
  ignore: !isRoot,
  fn() {
    using share = makeShare();
    const { fs } = share;
    Deno.writeTextFileSync(`${share.path}/secret`, "x");
    Deno.chmodSync(`${share.path}/secret`, 0o600);
    const secret = fs.lookup(ROOT, bytes("secret")).nodeid;
    const user = { uid: 1000, gid: 1000 };
    assertFsErrno(() => fs.open(secret, O_RDONLY, user), EACCES, "open as 1000");
    assertFsErrno(
      () => fs.setattr(secret, setattrArgs({ valid: FuseSetattrValid.MODE, mode: 0o666 }), user),
      EPERM,
    );
    assertFsErrno(() => fs.unlink(ROOT, bytes("secret"), user), EACCES);
    assertFsErrno(() => fs.rename(ROOT, bytes("secret"), ROOT, bytes("mine"), 0, user), EACCES);
    fs.release(fs.open(secret, O_RDONLY).fh); // vhostd itself (no caller) may
    // A root caller's O_TRUNC keeps setuid unless the guest says it lacks CAP_FSETID.
    Deno.chmodSync(`${share.path}/secret`, 0o6755);
    const root = { uid: 0, gid: 0 };
    fs.release(fs.open(secret, O_WRONLY | O_TRUNC, root, false).fh);
    assert.equal(Deno.statSync(`${share.path}/secret`).mode! & 0o7777, 0o6755);
    fs.release(fs.open(secret, O_WRONLY | O_TRUNC, root, true).fh);
    assert.equal(Deno.statSync(`${share.path}/secret`).mode! & 0o7777, 0o755);
  },
});
