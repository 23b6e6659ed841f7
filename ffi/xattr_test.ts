import assert from "node:assert/strict";
import { AT_FDCWD, O_CLOEXEC, O_NOFOLLOW, O_PATH, O_RDONLY } from "./constants.ts";
import { EBADF, EEXIST, EINVAL, ENODATA, ERANGE, SyscallError } from "./errno.ts";
import { closeFd } from "./fd.ts";
import { openat, procSelfFdPath } from "./fs.ts";
import {
  fgetxattr,
  flistxattr,
  fremovexattr,
  fsetxattr,
  getxattr,
  listxattr,
  removexattr,
  setxattr,
  splitXattrList,
  XATTR_CREATE,
  XATTR_REPLACE,
} from "./xattr.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof SyscallError) return e.errno;
    throw e;
  }
  throw new Error("the call succeeded, a SyscallError was expected");
}

async function withFile(body: (dir: string, file: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-xattr-" });
  try {
    const file = `${dir}/f`;
    await Deno.writeTextFile(file, "x");
    await body(dir, file);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("fsetxattr/fgetxattr: size probe, exact read, ERANGE, ENODATA", () =>
  withFile((_dir, file) => {
    const fd = openat(AT_FDCWD, file, O_RDONLY | O_CLOEXEC);
    try {
      fsetxattr(fd, "user.colour", encoder.encode("blue"), 0);
      assert.equal(fgetxattr(fd, "user.colour", null), 4);
      const value = new Uint8Array(16);
      assert.equal(fgetxattr(fd, "user.colour", value), 4);
      assert.equal(decoder.decode(value.subarray(0, 4)), "blue");
      assert.equal(errnoOf(() => fgetxattr(fd, "user.colour", new Uint8Array(3))), ERANGE);
      assert.equal(errnoOf(() => fgetxattr(fd, "user.none", value)), ENODATA);
      assert.equal(errnoOf(() => fsetxattr(fd, "user.colour", value, XATTR_CREATE)), EEXIST);
      assert.equal(errnoOf(() => fsetxattr(fd, "user.none", value, XATTR_REPLACE)), ENODATA);
      fsetxattr(fd, "user.empty", new Uint8Array(0), 0);
      assert.equal(fgetxattr(fd, "user.empty", value), 0);
      const list = new Uint8Array(flistxattr(fd, null));
      flistxattr(fd, list);
      const names = splitXattrList(list).map((n) => decoder.decode(n)).sort();
      assert.deepEqual(names, ["user.colour", "user.empty"]);
      fremovexattr(fd, "user.colour");
      assert.equal(errnoOf(() => fgetxattr(fd, "user.colour", null)), ENODATA);
      assert.equal(errnoOf(() => fremovexattr(fd, "user.colour")), ENODATA);
    } finally {
      closeFd(fd);
    }
  }));

Deno.test("f*xattr fail with EBADF on an O_PATH fd; /proc/self/fd/N reaches it", () =>
  withFile((_dir, file) => {
    const fd = openat(AT_FDCWD, file, O_PATH | O_CLOEXEC);
    try {
      assert.equal(errnoOf(() => fgetxattr(fd, "user.a", null)), EBADF);
      setxattr(procSelfFdPath(fd), "user.a", encoder.encode("1"), 0);
      assert.equal(getxattr(file, "user.a", null), 1);
      assert.equal(listxattr(procSelfFdPath(fd), null), "user.a\0".length);
      removexattr(procSelfFdPath(fd), "user.a");
      assert.equal(errnoOf(() => getxattr(file, "user.a", null)), ENODATA);
    } finally {
      closeFd(fd);
    }
  }));

Deno.test("path forms: nofollow works on the link, follow on its target", () =>
  withFile(async (dir, file) => {
    const link = `${dir}/l`;
    await Deno.symlink(file, link);
    setxattr(link, "user.t", encoder.encode("target"), 0); // follows to the file
    assert.equal(getxattr(file, "user.t", null), 6);
    assert.equal(errnoOf(() => getxattr(link, "user.t", null, "nofollow")), ENODATA);
    // The link's own attribute through an O_PATH|O_NOFOLLOW fd (trusted.* needs root).
    if (Deno.uid() !== 0) return;
    const fd = openat(AT_FDCWD, link, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    try {
      setxattr(procSelfFdPath(fd), "trusted.own", encoder.encode("link"), 0);
    } finally {
      closeFd(fd);
    }
    assert.equal(getxattr(link, "trusted.own", null, "nofollow"), 4);
    assert.equal(errnoOf(() => getxattr(file, "trusted.own", null)), ENODATA);
    const list = new Uint8Array(64);
    const length = listxattr(link, list, "nofollow");
    assert.deepEqual(splitXattrList(list.subarray(0, length)).map((n) => decoder.decode(n)), [
      "trusted.own",
    ]);
    removexattr(link, "trusted.own", "nofollow");
    assert.equal(errnoOf(() => getxattr(link, "trusted.own", null, "nofollow")), ENODATA);
  }));

Deno.test("names with a NUL byte are EINVAL before any call", () =>
  withFile((_dir, file) => {
    assert.equal(errnoOf(() => getxattr(file, "user.a\0b", null)), EINVAL);
    assert.equal(
      errnoOf(() => setxattr(file, new Uint8Array([117, 0]), new Uint8Array(1), 0)),
      EINVAL,
    );
  }));

Deno.test("splitXattrList ignores empty names and a missing final NUL", () => {
  const names = splitXattrList(encoder.encode("a\0\0bc\0tail"));
  assert.deepEqual(names.map((n) => decoder.decode(n)), ["a", "bc"]);
  assert.deepEqual(splitXattrList(new Uint8Array(0)), []);
});
