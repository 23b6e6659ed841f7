import assert from "node:assert/strict";
import {
  E2BIG,
  EEXIST,
  ENODATA,
  ENOSYS,
  ENOTSUP,
  EPERM,
  EPROTO,
  ERANGE,
  EROFS,
  getxattr,
  listxattr,
  S_IFIFO,
  setxattr,
  splitXattrList,
  XATTR_CREATE,
  XATTR_SIZE_MAX,
} from "../../../../ffi/mod.ts";
import { FuseInitFlag, FuseSetxattrFlag } from "../fuse/fuse_abi.ts";
import type { FuseInitArgs } from "../fuse/fuse_request.ts";
import { FsRestoreError, PassthroughFs, type XattrReply } from "./passthrough_fs.ts";
import {
  assertFsErrno,
  bytes,
  makeShare,
  text,
} from "../../../../tests/support/passthrough_fixture.ts";
import { POSIX_ACL_INIT_FLAGS } from "./xattr_ops.ts";
import { extendedAcl } from "../../../../tests/support/posix_acl.ts";

const ROOT = 1n;
const isRoot = Deno.uid() === 0;

function initArgs(flags: number): FuseInitArgs {
  return { major: 7, minor: 37, maxReadahead: 131072, flags, flags2: 0 };
}

function sizeOf(reply: XattrReply): number {
  assert.ok("size" in reply, "a size reply was expected");
  return reply.size;
}

function valueOf(reply: XattrReply): Uint8Array {
  assert.ok("value" in reply, "a value reply was expected");
  return reply.value;
}

function names(reply: XattrReply): string[] {
  return splitXattrList(valueOf(reply)).map(text).sort();
}

function hostNames(path: string): string[] {
  const list = new Uint8Array(4096);
  const length = listxattr(path, list, "nofollow");
  return splitXattrList(list.subarray(0, length)).map(text).sort();
}

Deno.test("xattr off (the default): all four operations are ENOSYS", () => {
  using share = makeShare();
  Deno.writeTextFileSync(`${share.path}/f`, "");
  const node = share.fs.lookup(ROOT, bytes("f")).nodeid;
  assertFsErrno(() => share.fs.getxattr(node, bytes("user.a"), 0), ENOSYS, "getxattr");
  assertFsErrno(() => share.fs.listxattr(node, 0), ENOSYS, "listxattr");
  assertFsErrno(() => share.fs.setxattr(node, bytes("user.a"), bytes("v"), 0, 0), ENOSYS);
  assertFsErrno(() => share.fs.removexattr(node, bytes("user.a")), ENOSYS, "removexattr");
});

Deno.test("regular file and directory: set, size probe, get, ERANGE, ENODATA, list, remove", () => {
  using share = makeShare({ xattr: true });
  Deno.writeTextFileSync(`${share.path}/f`, "");
  Deno.mkdirSync(`${share.path}/d`);
  for (const name of ["f", "d"]) {
    const node = share.fs.lookup(ROOT, bytes(name)).nodeid;
    share.fs.setxattr(node, bytes("user.colour"), bytes("blue"), 0, 0);
    share.fs.setxattr(node, bytes("user.empty"), new Uint8Array(0), 0, 0);
    assert.equal(getxattr(`${share.path}/${name}`, "user.colour", null), 4, "the host has it");
    assert.equal(sizeOf(share.fs.getxattr(node, bytes("user.colour"), 0)), 4);
    assert.equal(text(valueOf(share.fs.getxattr(node, bytes("user.colour"), 100))), "blue");
    assert.equal(valueOf(share.fs.getxattr(node, bytes("user.empty"), 10)).length, 0);
    assertFsErrno(() => share.fs.getxattr(node, bytes("user.colour"), 3), ERANGE, name);
    assertFsErrno(() => share.fs.getxattr(node, bytes("user.none"), 10), ENODATA, name);
    assertFsErrno(
      () => share.fs.setxattr(node, bytes("user.colour"), bytes("red"), XATTR_CREATE, 0),
      EEXIST,
    );
    const listSize = sizeOf(share.fs.listxattr(node, 0));
    assert.equal(listSize, "user.colour\0user.empty\0".length);
    assert.deepEqual(names(share.fs.listxattr(node, listSize)), ["user.colour", "user.empty"]);
    assertFsErrno(() => share.fs.listxattr(node, listSize - 1), ERANGE, `${name} list`);
    share.fs.removexattr(node, bytes("user.colour"));
    assertFsErrno(() => share.fs.removexattr(node, bytes("user.colour")), ENODATA, name);
    assert.deepEqual(hostNames(`${share.path}/${name}`), ["user.empty"]);
  }
});

Deno.test("values are bounded: XATTR_SIZE_MAX is stored, one byte more is E2BIG", () => {
  using share = makeShare({ xattr: true });
  Deno.writeTextFileSync(`${share.path}/f`, "");
  const node = share.fs.lookup(ROOT, bytes("f")).nodeid;
  assertFsErrno(
    () => share.fs.setxattr(node, bytes("user.big"), new Uint8Array(XATTR_SIZE_MAX + 1), 0, 0),
    E2BIG,
  );
  // ext4 keeps values of up to a block; the host's own limit answers past it.
  const value = new Uint8Array(1000).fill(7);
  share.fs.setxattr(node, bytes("user.big"), value, 0, 0);
  assert.deepEqual(valueOf(share.fs.getxattr(node, bytes("user.big"), XATTR_SIZE_MAX * 4)), value);
});

Deno.test("symbolic links and FIFOs are never opened: their own attributes are served", () => {
  using share = makeShare({ xattr: true });
  Deno.symlinkSync("missing-target", `${share.path}/l`);
  const link = share.fs.lookup(ROOT, bytes("l")).nodeid;
  // The host refuses user.* on a link (EPERM), as it would for the guest.
  assertFsErrno(() => share.fs.setxattr(link, bytes("user.a"), bytes("v"), 0, 0), EPERM);
  assertFsErrno(() => share.fs.getxattr(link, bytes("user.a"), 10), ENODATA, "link get");
  const fifo = share.fs.mknod(ROOT, bytes("p"), S_IFIFO | 0o644, 0, 0, 0, 0).nodeid;
  if (!isRoot) return; // trusted.* needs CAP_SYS_ADMIN
  share.fs.setxattr(link, bytes("trusted.t"), bytes("on-link"), 0, 0);
  share.fs.setxattr(fifo, bytes("trusted.t"), bytes("on-fifo"), 0, 0);
  assert.equal(text(valueOf(share.fs.getxattr(link, bytes("trusted.t"), 64))), "on-link");
  assert.equal(text(valueOf(share.fs.getxattr(fifo, bytes("trusted.t"), 64))), "on-fifo");
  assert.deepEqual(names(share.fs.listxattr(link, 64)), ["trusted.t"]);
  assert.deepEqual(hostNames(`${share.path}/l`), ["trusted.t"], "on the link, not a target");
  share.fs.removexattr(link, bytes("trusted.t"));
  assert.deepEqual(hostNames(`${share.path}/l`), []);
});

Deno.test("read-only share: get and list work, set and remove are EROFS", () => {
  using share = makeShare({ xattr: true, readOnly: true });
  Deno.writeTextFileSync(`${share.path}/f`, "");
  setxattr(`${share.path}/f`, "user.a", bytes("1"), 0);
  const node = share.fs.lookup(ROOT, bytes("f")).nodeid;
  assert.equal(text(valueOf(share.fs.getxattr(node, bytes("user.a"), 8))), "1");
  assert.deepEqual(names(share.fs.listxattr(node, 64)), ["user.a"]);
  assertFsErrno(() => share.fs.setxattr(node, bytes("user.b"), bytes("v"), 0, 0), EROFS);
  assertFsErrno(() => share.fs.removexattr(node, bytes("user.a")), EROFS, "remove");
});

Deno.test("without a POSIX ACL session the ACL attributes are ENOTSUP and hidden", () => {
  using share = makeShare({ xattr: true });
  Deno.writeTextFileSync(`${share.path}/f`, "");
  setxattr(`${share.path}/f`, "system.posix_acl_access", extendedAcl(1234), 0);
  setxattr(`${share.path}/f`, "user.visible", bytes("1"), 0);
  const node = share.fs.lookup(ROOT, bytes("f")).nodeid;
  share.fs.init(initArgs(POSIX_ACL_INIT_FLAGS)); // offered, but vhostd was not asked for ACLs
  assertFsErrno(() => share.fs.getxattr(node, bytes("system.posix_acl_access"), 64), ENOTSUP);
  assertFsErrno(
    () => share.fs.setxattr(node, bytes("system.posix_acl_default"), extendedAcl(1), 0, 0),
    ENOTSUP,
  );
  assert.deepEqual(names(share.fs.listxattr(node, 256)), ["user.visible"]);
  assert.equal(sizeOf(share.fs.listxattr(node, 0)), "user.visible\0".length);
});

Deno.test("posixAcl: INIT needs POSIX_ACL, DONT_MASK and SETXATTR_EXT, and accepts them", () => {
  using share = makeShare({ posixAcl: true });
  for (
    const missing of [FuseInitFlag.POSIX_ACL, FuseInitFlag.DONT_MASK, FuseInitFlag.SETXATTR_EXT]
  ) {
    assertFsErrno(() => share.fs.init(initArgs(POSIX_ACL_INIT_FLAGS & ~missing)), EPROTO);
  }
  const accepted = share.fs.init(initArgs(POSIX_ACL_INIT_FLAGS | FuseInitFlag.ASYNC_READ));
  assert.equal(accepted.flags & POSIX_ACL_INIT_FLAGS, POSIX_ACL_INIT_FLAGS);
  using plain = makeShare({ xattr: true });
  assert.equal(plain.fs.init(initArgs(POSIX_ACL_INIT_FLAGS)).flags & POSIX_ACL_INIT_FLAGS, 0);
});

Deno.test("posixAcl session: ACLs pass through, KILL_SGID clears setgid, default ACLs inherit", () => {
  using share = makeShare({ posixAcl: true });
  share.fs.init(initArgs(POSIX_ACL_INIT_FLAGS));
  Deno.writeTextFileSync(`${share.path}/f`, "");
  Deno.chmodSync(`${share.path}/f`, 0o2664);
  const node = share.fs.lookup(ROOT, bytes("f")).nodeid;
  const acl = extendedAcl(1234);
  share.fs.setxattr(node, bytes("system.posix_acl_access"), acl, 0, 0);
  assert.deepEqual(valueOf(share.fs.getxattr(node, bytes("system.posix_acl_access"), 256)), acl);
  assert.ok(names(share.fs.listxattr(node, 256)).includes("system.posix_acl_access"));
  assert.equal(Deno.statSync(`${share.path}/f`).mode! & 0o7777, 0o2640, "mode follows the ACL");
  share.fs.setxattr(
    node,
    bytes("system.posix_acl_access"),
    acl,
    0,
    FuseSetxattrFlag.ACL_KILL_SGID,
  );
  assert.equal(Deno.statSync(`${share.path}/f`).mode! & 0o7777, 0o640, "setgid cleared");

  // A directory with a default ACL: new entries get it, and the umask does not apply.
  Deno.mkdirSync(`${share.path}/d`);
  setxattr(`${share.path}/d`, "system.posix_acl_default", extendedAcl(1234), 0);
  const dir = share.fs.lookup(ROOT, bytes("d")).nodeid;
  share.fs.create(dir, bytes("file"), 0o1, /* O_WRONLY */ 0o666, 0o077, 0, 0);
  share.fs.mkdir(dir, bytes("sub"), 0o777, 0o077, 0, 0);
  assert.equal(Deno.statSync(`${share.path}/d/file`).mode! & 0o777, 0o640, "mode ∩ default ACL");
  assert.ok(getxattr(`${share.path}/d/file`, "system.posix_acl_access", null) > 0);
  assert.ok(getxattr(`${share.path}/d/sub`, "system.posix_acl_default", null) > 0);
  // Without a default ACL the guest's umask applies as before.
  share.fs.create(ROOT, bytes("plain"), 0o1, 0o666, 0o027, 0, 0);
  assert.equal(Deno.statSync(`${share.path}/plain`).mode! & 0o777, 0o640);
});

Deno.test("a migrated POSIX ACL session needs posixAcl on the destination", () => {
  using share = makeShare({ posixAcl: true });
  share.fs.init(initArgs(POSIX_ACL_INIT_FLAGS));
  const snapshot = JSON.parse(JSON.stringify(share.fs.snapshot()));
  const without = new PassthroughFs({
    sharedDir: share.path,
    readOnly: false,
    migrationOnError: "abort",
    xattr: true,
  });
  try {
    assert.throws(() => without.restore(snapshot), FsRestoreError);
  } finally {
    without.close();
  }
  const withAcl = new PassthroughFs({
    sharedDir: share.path,
    readOnly: false,
    migrationOnError: "abort",
    posixAcl: true,
  });
  try {
    assert.deepEqual(withAcl.restore(snapshot), { errors: [] });
    assert.equal((withAcl.negotiated?.flags ?? 0) & POSIX_ACL_INIT_FLAGS, POSIX_ACL_INIT_FLAGS);
  } finally {
    withAcl.close();
  }
});

Deno.test("a mapping renames names both ways and refuses or hides the rest", () => {
  using share = makeShare({ xattrMapping: "/map/trusted./user.virtiofs./" });
  Deno.writeTextFileSync(`${share.path}/f`, "");
  setxattr(`${share.path}/f`, "trusted.host-only", bytes("x"), 0);
  const node = share.fs.lookup(ROOT, bytes("f")).nodeid;
  share.fs.setxattr(node, bytes("trusted.guest"), bytes("g"), 0, 0);
  share.fs.setxattr(node, bytes("user.plain"), bytes("p"), 0, 0);
  assert.deepEqual(
    hostNames(`${share.path}/f`).filter((n) => n !== "trusted.host-only"),
    ["user.plain", "user.virtiofs.trusted.guest"],
  );
  assert.equal(text(valueOf(share.fs.getxattr(node, bytes("trusted.guest"), 8))), "g");
  assert.deepEqual(names(share.fs.listxattr(node, 256)), ["trusted.guest", "user.plain"]);
  assertFsErrno(
    () => share.fs.setxattr(node, bytes("user.virtiofs.x"), bytes("v"), 0, 0),
    EPERM,
  );
  assertFsErrno(() => share.fs.getxattr(node, bytes("user.virtiofs.x"), 8), ENODATA, "bad get");
});
