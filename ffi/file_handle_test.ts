import assert from "node:assert/strict";
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_PATH,
  O_RDONLY,
  O_WRONLY,
  S_IFLNK,
  S_IFMT,
} from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { closeFd, readFd } from "./fd.ts";
import {
  FILE_HANDLE_HEADER_SIZE,
  fileHandleType,
  MAX_HANDLE_SZ,
  nameToHandleAt,
  openByHandleAt,
} from "./file_handle.ts";
import { fstatat, getuid, openat, renameat2, symlinkat, unlinkat } from "./fs.ts";

const asRoot = getuid() === 0;
const rootOnly = "open_by_handle_at needs CAP_DAC_READ_SEARCH (run as root)";

/** A test that needs CAP_DAC_READ_SEARCH; its name says why when it is skipped. */
function rootTest(name: string, fn: () => void): void {
  Deno.test({ name: asRoot ? name : `${name} (skipped: ${rootOnly})`, ignore: !asRoot, fn });
}

function assertErrno(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SyscallError, `expected SyscallError, got ${error}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** A temporary directory with an O_RDONLY fd on it (a valid mount fd) and clean-up. */
function scratch() {
  const path = Deno.makeTempDirSync({ prefix: "vhostd-handle-test-" });
  const dirFd = openat(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  return {
    path,
    dirFd,
    [Symbol.dispose]() {
      closeFd(dirFd);
      Deno.removeSync(path, { recursive: true });
    },
  };
}

function inoOf(fd: number): bigint {
  return fstatat(fd, "", AT_EMPTY_PATH).ino;
}

Deno.test("nameToHandleAt gives the whole struct file_handle and a mount id", () => {
  using dir = scratch();
  Deno.writeTextFileSync(`${dir.path}/a`, "x");
  const named = nameToHandleAt(dir.dirFd, "a", 0);
  const payload = named.handle.length - FILE_HANDLE_HEADER_SIZE;
  assert.ok(payload > 0 && payload <= MAX_HANDLE_SZ, `payload of ${payload} bytes`);
  const view = new DataView(named.handle.buffer, named.handle.byteOffset);
  assert.equal(view.getUint32(0, true), payload);
  assert.notEqual(fileHandleType(named.handle), 0);
  // The same file through an O_PATH fd and AT_EMPTY_PATH: the same handle and mount.
  const pathFd = openat(dir.dirFd, "a", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  try {
    const again = nameToHandleAt(pathFd, "", AT_EMPTY_PATH);
    assert.deepEqual(again.handle, named.handle);
    assert.equal(again.mountId, named.mountId);
    assert.equal(again.uniqueMountId, named.uniqueMountId);
  } finally {
    closeFd(pathFd);
  }
  // Another file: another handle.
  Deno.writeTextFileSync(`${dir.path}/b`, "y");
  assert.notDeepEqual(nameToHandleAt(dir.dirFd, "b", 0).handle, named.handle);
});

Deno.test("nameToHandleAt: ENOENT for a missing name, EINVAL for a NUL in it", () => {
  using dir = scratch();
  assertErrno(() => nameToHandleAt(dir.dirFd, "missing", 0), "ENOENT");
  assertErrno(() => nameToHandleAt(dir.dirFd, "a\0b", 0), "EINVAL");
});

rootTest("openByHandleAt opens the file again, after a rename too; ESTALE once it is gone", () => {
  using dir = scratch();
  Deno.writeTextFileSync(`${dir.path}/a`, "hello");
  const { handle } = nameToHandleAt(dir.dirFd, "a", 0);
  const ino = fstatat(dir.dirFd, "a", 0).ino;
  renameat2(dir.dirFd, "a", dir.dirFd, "renamed", 0);
  const fd = openByHandleAt(dir.dirFd, handle, O_RDONLY | O_CLOEXEC);
  try {
    assert.equal(inoOf(fd), ino);
    const buf = new Uint8Array(16);
    const n = readFd(fd, buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n)), "hello");
  } finally {
    closeFd(fd);
  }
  unlinkat(dir.dirFd, "renamed", 0);
  assertErrno(() => openByHandleAt(dir.dirFd, handle, O_PATH | O_CLOEXEC), "ESTALE");
});

rootTest("openByHandleAt with O_PATH opens a symbolic link itself", () => {
  using dir = scratch();
  symlinkat("target-that-does-not-exist", dir.dirFd, "link");
  const { handle } = nameToHandleAt(dir.dirFd, "link", 0);
  const fd = openByHandleAt(dir.dirFd, handle, O_PATH | O_CLOEXEC);
  try {
    assert.equal(fstatat(fd, "", AT_EMPTY_PATH).mode & S_IFMT, S_IFLNK);
  } finally {
    closeFd(fd);
  }
});

rootTest("openByHandleAt refuses an O_PATH mount fd (EBADF) and malformed handles (EINVAL)", () => {
  using dir = scratch();
  Deno.writeTextFileSync(`${dir.path}/a`, "x");
  const { handle } = nameToHandleAt(dir.dirFd, "a", 0);
  const pathFd = openat(AT_FDCWD, dir.path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    assertErrno(() => openByHandleAt(pathFd, handle, O_PATH | O_CLOEXEC), "EBADF");
  } finally {
    closeFd(pathFd);
  }
  assertErrno(() => openByHandleAt(dir.dirFd, new Uint8Array(3), O_PATH), "EINVAL");
  const lying = handle.slice();
  new DataView(lying.buffer).setUint32(0, handle.length, true);
  assertErrno(() => openByHandleAt(dir.dirFd, lying, O_PATH), "EINVAL");
  const tooLong = new Uint8Array(FILE_HANDLE_HEADER_SIZE + MAX_HANDLE_SZ + 1);
  assertErrno(() => openByHandleAt(dir.dirFd, tooLong, O_PATH), "EINVAL");
  // Access flags are checked as for open(2): a write open of a directory is EISDIR.
  const dirHandle = nameToHandleAt(dir.dirFd, "", AT_EMPTY_PATH).handle;
  assertErrno(() => openByHandleAt(dir.dirFd, dirHandle, O_WRONLY | O_CREAT), "EISDIR");
});
