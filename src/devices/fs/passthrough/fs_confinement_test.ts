import assert from "node:assert/strict";
import {
  EINVAL,
  ELOOP,
  ENOENT,
  ENOTDIR,
  O_CREAT,
  O_DIRECTORY,
  O_RDONLY,
  O_RDWR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from "../../../../ffi/mod.ts";
import { FuseSetattrValid } from "../fuse/fuse_abi.ts";
import {
  assertFsErrno,
  bytes,
  makeShare,
  readAll,
  setattrArgs,
} from "../../../../tests/support/passthrough_fixture.ts";

const ROOT = 1n;

Deno.test("'..' and names with '/' never leave the share", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.mkdirSync(`${share.path}/d`);
  const d = fs.lookup(ROOT, bytes("d"));
  const shareIno = BigInt(Deno.statSync(share.path).ino!);
  assert.equal(fs.lookup(ROOT, bytes("..")).attr.ino, shareIno, "'..' of the root is the root");
  assert.equal(fs.lookup(d.nodeid, bytes("..")).attr.ino, shareIno);
  for (const name of ["../outside", "../outside/secret", "/etc/passwd", "d/../..", "./d"]) {
    assertFsErrno(() => fs.lookup(ROOT, bytes(name)), EINVAL, `lookup "${name}"`);
    assertFsErrno(() => fs.mkdir(ROOT, bytes(name), 0o755, 0, 0, 0), EINVAL, `mkdir "${name}"`);
    assertFsErrno(
      () => fs.create(ROOT, bytes(name), O_RDWR | O_CREAT, 0o644, 0, 0, 0),
      EINVAL,
      `create "${name}"`,
    );
  }
  for (const name of ["..", "."]) {
    assertFsErrno(() => fs.unlink(d.nodeid, bytes(name)), EINVAL, `unlink "${name}"`);
    assertFsErrno(() => fs.rmdir(d.nodeid, bytes(name)), EINVAL, `rmdir "${name}"`);
    assertFsErrno(() => fs.rename(ROOT, bytes("d"), d.nodeid, bytes(name), 0), EINVAL);
    assertFsErrno(() => fs.link(d.nodeid, ROOT, bytes(name)), EINVAL);
  }
  assert.equal(Deno.readTextFileSync(`${share.outside}/secret`), "outside the share");
  assert.deepEqual([...Deno.readDirSync(share.outside)].map((e) => e.name), ["secret"]);
});

Deno.test("symlinks pointing outside are looked up as links and never followed", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.symlinkSync(share.outside, `${share.path}/absolute`);
  Deno.symlinkSync("../outside", `${share.path}/relative`);
  Deno.symlinkSync(`${share.outside}/secret`, `${share.path}/to-file`);
  Deno.symlinkSync("/proc/self/root", `${share.path}/magic`);
  const secretIno = BigInt(Deno.statSync(`${share.outside}/secret`).ino!);
  const targets = new Map([
    ["absolute", share.outside],
    ["relative", "../outside"],
    ["to-file", `${share.outside}/secret`],
    ["magic", "/proc/self/root"],
  ]);
  for (const [name, target] of targets) {
    const link = fs.lookup(ROOT, bytes(name));
    assert.equal(link.attr.mode & S_IFMT, S_IFLNK, `${name} is the link itself`);
    assert.equal(link.attr.ino, BigInt(Deno.lstatSync(`${share.path}/${name}`).ino!));
    assert.notEqual(link.attr.ino, secretIno);
    assert.equal(new TextDecoder().decode(fs.readlink(link.nodeid)), target, "target untouched");
    assertFsErrno(() => fs.open(link.nodeid, O_RDONLY), ELOOP, `open ${name}`);
    assertFsErrno(() => fs.opendir(link.nodeid, O_DIRECTORY), ENOTDIR, `opendir ${name}`);
    assertFsErrno(() => fs.lookup(link.nodeid, bytes("secret")), ENOTDIR, `lookup via ${name}`);
    assertFsErrno(() => fs.mkdir(link.nodeid, bytes("x"), 0o755, 0, 0, 0), ENOTDIR);
    assertFsErrno(
      () => fs.create(ROOT, bytes(name), O_RDWR | O_CREAT, 0o644, 0, 0, 0),
      ELOOP,
      `create over ${name}`,
    );
    assertFsErrno(
      () => fs.setattr(link.nodeid, setattrArgs({ valid: FuseSetattrValid.SIZE, size: 0n })),
      EINVAL,
      `truncate via ${name}`,
    );
    // Attribute changes apply to the link, never to what it points at.
    fs.setattr(link.nodeid, setattrArgs({ valid: FuseSetattrValid.MODE, mode: 0o777 }));
    fs.setattr(
      link.nodeid,
      setattrArgs({ valid: FuseSetattrValid.MTIME, mtime: 1000n, mtimensec: 0 }),
    );
  }
  const secret = Deno.statSync(`${share.outside}/secret`);
  assert.notEqual(secret.mtime?.getTime(), 1_000_000, "the outside file's times are untouched");
  assert.equal(Deno.readTextFileSync(`${share.outside}/secret`), "outside the share");
});

Deno.test("a directory swapped for a symlink by the host: the held fd is used, the link never", () => {
  using share = makeShare();
  const { fs } = share;
  // The outside holds a "b" too: reaching it would be an escape.
  Deno.writeTextFileSync(`${share.outside}/b`, "outside b");
  const outsideB = BigInt(Deno.statSync(`${share.outside}/b`).ino!);

  // 1. The directory is renamed away and replaced by a link: the old directory is still used.
  Deno.mkdirSync(`${share.path}/a`);
  Deno.writeTextFileSync(`${share.path}/a/b`, "inside b");
  const insideB = BigInt(Deno.statSync(`${share.path}/a/b`).ino!);
  const a = fs.lookup(ROOT, bytes("a"));
  Deno.renameSync(`${share.path}/a`, `${share.path}/a.old`);
  Deno.symlinkSync(share.outside, `${share.path}/a`);
  const b = fs.lookup(a.nodeid, bytes("b"));
  assert.equal(b.attr.ino, insideB);
  assert.notEqual(b.attr.ino, outsideB);
  const { fh } = fs.open(b.nodeid, O_RDONLY);
  assert.equal(readAll(fs, fh), "inside b");
  fs.release(fh);
  // A fresh lookup of the name sees the link itself.
  assert.equal(fs.lookup(ROOT, bytes("a")).attr.mode & S_IFMT, S_IFLNK);

  // 2. The directory is deleted and replaced by a link to "/": the lookup fails.
  Deno.mkdirSync(`${share.path}/c`);
  const c = fs.lookup(ROOT, bytes("c"));
  Deno.removeSync(`${share.path}/c`);
  Deno.symlinkSync("/", `${share.path}/c`);
  assertFsErrno(() => fs.lookup(c.nodeid, bytes("etc")), ENOENT, "lookup in a deleted directory");
  assertFsErrno(
    () => fs.create(c.nodeid, bytes("new"), O_RDWR | O_CREAT, 0o644, 0, 0, 0),
    ENOENT,
    "create in a deleted directory",
  );
  assert.equal(fs.getattr(c.nodeid).attr.mode & S_IFMT, S_IFDIR, "the held inode is the old dir");

  // 3. A link swapped in for a file between LOOKUP and OPEN: the file held is opened.
  Deno.writeTextFileSync(`${share.path}/f`, "real file");
  const f = fs.lookup(ROOT, bytes("f"));
  Deno.removeSync(`${share.path}/f`);
  Deno.symlinkSync(`${share.outside}/secret`, `${share.path}/f`);
  const opened = fs.open(f.nodeid, O_RDONLY);
  assert.equal(readAll(fs, opened.fh), "real file");
  assert.equal(fs.getattr(f.nodeid).attr.mode & S_IFMT, S_IFREG);
});

Deno.test("names are bytes: non-UTF-8 names round-trip and stay single components", () => {
  using share = makeShare();
  const { fs } = share;
  const name = new Uint8Array([0x66, 0xff, 0xfe, 0x5c]); // "f", invalid UTF-8, backslash
  const made = fs.mkdir(ROOT, name, 0o755, 0, 0, 0);
  assert.equal(fs.lookup(ROOT, name).nodeid, made.nodeid);
  assert.deepEqual(fs.inodeInfo(made.nodeid)?.name, name);
  assertFsErrno(() => fs.lookup(ROOT, new Uint8Array([0x61, 0, 0x62])), EINVAL, "NUL in a name");
});
