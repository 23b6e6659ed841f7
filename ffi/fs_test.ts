import assert from "node:assert/strict";
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_REMOVEDIR,
  AT_SYMLINK_FOLLOW,
  AT_SYMLINK_NOFOLLOW,
  DT_DIR,
  DT_LNK,
  DT_REG,
  F_OK,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NOFOLLOW,
  O_PATH,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  R_OK,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RESOLVE_BENEATH,
  RESOLVE_IN_ROOT,
  RESOLVE_NO_SYMLINKS,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SEEK_SET,
} from "./constants.ts";
import { EBADF, EEXIST, ELOOP, ENOENT, ENOTDIR, EXDEV, SyscallError } from "./errno.ts";
import { closeFd, getStatusFlags, readFd, writeAll } from "./fd.ts";
import {
  chmodProcFd,
  faccessat,
  fchmod,
  fchownat,
  fdHoldsFile,
  fstatat,
  fstatatOrErrno,
  fstatfs,
  getdents64,
  getgid,
  getuid,
  linkat,
  lseek64,
  makedev,
  mkdirat,
  mknodat,
  openat,
  openat2,
  openat2OrErrno,
  openat2Supported,
  openatOrErrno,
  parseDirents,
  pathFdOfOrErrno,
  procSelfFdPath,
  readlinkat,
  renameat2,
  reopenFd,
  symlinkat,
  umask,
  unlinkat,
  utimensat,
} from "./fs.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A temporary directory, its O_PATH fd, and clean-up. */
interface Scratch {
  path: string;
  dirfd: number;
  [Symbol.dispose](): void;
}

function scratch(): Scratch {
  const path = Deno.makeTempDirSync({ prefix: "vhostd-fs-test-" });
  const dirfd = openat(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  return {
    path,
    dirfd,
    [Symbol.dispose]() {
      closeFd(dirfd);
      Deno.removeSync(path, { recursive: true });
    },
  };
}

/** Creates a file `name` in `dirfd` holding `text`. */
function writeFile(dirfd: number, name: string | Uint8Array, text: string): void {
  const fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644);
  try {
    writeAll(fd, encoder.encode(text));
  } finally {
    closeFd(fd);
  }
}

/** The contents of an fd open for reading, from its current position. */
function readText(fd: number): string {
  const buf = new Uint8Array(4096);
  const n = readFd(fd, buf);
  return decoder.decode(buf.subarray(0, n));
}

function readFileAt(dirfd: number, name: string): string {
  const fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  try {
    return readText(fd);
  } finally {
    closeFd(fd);
  }
}

/** Asserts that `fn` throws a SyscallError with `code`. */
function assertErrno(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SyscallError, `expected SyscallError, got ${error}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

Deno.test("openat creates, opens and refuses; names are bytes or text", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "a.txt", "alpha");
  assert.equal(readFileAt(dir.dirfd, "a.txt"), "alpha");
  assertErrno(() => openat(dir.dirfd, "missing", O_RDONLY), "ENOENT");
  assertErrno(() => writeFile(dir.dirfd, "a.txt", "again"), "EEXIST");

  // A name that is not UTF-8 passes through byte for byte.
  const rawName = new Uint8Array([0x66, 0xe9, 0xff, 0x2e, 0x62]);
  writeFile(dir.dirfd, rawName, "latin1");
  const listed = Deno.readDirSync(dir.path).map((e) => e.name).toArray();
  assert.equal(listed.length, 2);
  const fd = openat(dir.dirfd, rawName, O_RDONLY | O_CLOEXEC);
  assert.equal(readText(fd), "latin1");
  closeFd(fd);

  // Embedded NUL is refused before the call, for both forms.
  assertErrno(() => openat(dir.dirfd, "a.txt\0b", O_RDONLY), "EINVAL");
  assertErrno(() => openat(dir.dirfd, new Uint8Array([0x61, 0, 0x62]), O_RDONLY), "EINVAL");
});

Deno.test("openat with O_NOFOLLOW refuses a symlink with ELOOP; O_PATH|O_NOFOLLOW holds it", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "target", "t");
  symlinkat("target", dir.dirfd, "link");
  assertErrno(() => openat(dir.dirfd, "link", O_RDONLY | O_NOFOLLOW), "ELOOP");
  const fd = openat(dir.dirfd, "link", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  try {
    assert.equal(fstatat(fd, "", AT_EMPTY_PATH).mode & S_IFMT, S_IFLNK);
    assert.deepEqual(readlinkat(fd, ""), encoder.encode("target"));
  } finally {
    closeFd(fd);
  }
});

Deno.test("openat2OrErrno and openatOrErrno answer a failure with its errno, negated, and open like the throwing ones", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "file", "inside");
  symlinkat("file", dir.dirfd, "link");
  const how = {
    flags: O_PATH | O_NOFOLLOW | O_CLOEXEC,
    resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
  };
  assert.equal(openat2OrErrno(dir.dirfd, "missing", how), -ENOENT);
  assert.equal(openat2OrErrno(dir.dirfd, "../x", how), -EXDEV);
  assert.equal(openat2OrErrno(dir.dirfd, "link", { ...how, flags: O_RDONLY | O_CLOEXEC }), -ELOOP);
  assert.equal(openatOrErrno(dir.dirfd, "missing", O_RDONLY | O_CLOEXEC), -ENOENT);
  assert.equal(openatOrErrno(dir.dirfd, "file", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC), -EEXIST);
  let fd = openatOrErrno(dir.dirfd, "file", O_RDONLY | O_CLOEXEC);
  assert.ok(fd >= 0);
  assert.equal(readText(fd), "inside");
  closeFd(fd);
  fd = openat2OrErrno(dir.dirfd, "file", { flags: O_RDONLY | O_CLOEXEC, resolve: RESOLVE_BENEATH });
  assert.ok(fd >= 0);
  assert.equal(readText(fd), "inside");
  closeFd(fd);
  // The throwing forms still throw, with the errno.
  assert.throws(
    () => openat2(dir.dirfd, "missing", how),
    (e) => e instanceof SyscallError && e.errno === ENOENT,
  );
  assert.throws(
    () => openat(dir.dirfd, "missing", O_RDONLY),
    (e) => e instanceof SyscallError && e.errno === ENOENT,
  );
});

Deno.test("fstatatOrErrno answers a failure with its errno, negated, and states like fstatat", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "file", "inside");
  symlinkat("file", dir.dirfd, "link");
  assert.equal(fstatatOrErrno(dir.dirfd, "missing", AT_SYMLINK_NOFOLLOW), -ENOENT);
  assert.equal(fstatatOrErrno(dir.dirfd, "file/x", AT_SYMLINK_NOFOLLOW), -ENOTDIR);
  const link = fstatatOrErrno(dir.dirfd, "link", AT_SYMLINK_NOFOLLOW);
  assert.ok(typeof link !== "number");
  assert.deepEqual(link, fstatat(dir.dirfd, "link", AT_SYMLINK_NOFOLLOW));
  assert.notEqual(link.ino, fstatat(dir.dirfd, "file", 0).ino, "the link itself, not followed");
  assert.throws(
    () => fstatat(dir.dirfd, "missing", 0),
    (e) => e instanceof SyscallError && e.errno === ENOENT,
  );
});

Deno.test("fdHoldsFile compares the fd's file with a device and inode number, links not followed", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "file", "inside");
  writeFile(dir.dirfd, "other", "else");
  symlinkat("file", dir.dirfd, "link");
  const file = fstatat(dir.dirfd, "file", 0);
  const fd = openat(dir.dirfd, "file", O_PATH | O_CLOEXEC);
  const link = openat(dir.dirfd, "link", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  try {
    assert.equal(fdHoldsFile(fd, file.dev, file.ino), true);
    assert.equal(fdHoldsFile(fd, file.dev, fstatat(dir.dirfd, "other", 0).ino), false);
    assert.equal(fdHoldsFile(fd, file.dev + 1, file.ino), false, "same inode number, other device");
    assert.equal(fdHoldsFile(link, file.dev, file.ino), false, "the link itself, not its target");
    assert.equal(fdHoldsFile(-1, file.dev, file.ino), false, "a failing statx");
  } finally {
    closeFd(fd);
    closeFd(link);
  }
});

Deno.test("pathFdOfOrErrno: an O_PATH fd of the fd's own file, even once its name is gone", () => {
  using dir = scratch();
  const fd = openat(dir.dirfd, "file", O_CREAT | O_RDWR | O_CLOEXEC, 0o600);
  const file = fstatat(dir.dirfd, "file", 0);
  const pathFds: number[] = [];
  try {
    // The name now holds another file: the new fd still has the first one.
    renameat2(dir.dirfd, "file", dir.dirfd, "moved", 0);
    writeFile(dir.dirfd, "file", "impostor");
    const pathFd = pathFdOfOrErrno(fd);
    assert.ok(pathFd >= 0, `open_tree failed with errno ${-pathFd}`);
    pathFds.push(pathFd);
    assert.equal(getStatusFlags(pathFd) & O_PATH, O_PATH);
    assert.equal(fdHoldsFile(pathFd, file.dev, file.ino), true);
    unlinkat(dir.dirfd, "moved", 0);
    const ofUnlinked = pathFdOfOrErrno(fd);
    assert.ok(ofUnlinked >= 0);
    pathFds.push(ofUnlinked);
    assert.equal(fdHoldsFile(ofUnlinked, file.dev, file.ino), true);
    assert.equal(pathFdOfOrErrno(-1), -EBADF);
  } finally {
    closeFd(fd);
    for (const pathFd of pathFds) closeFd(pathFd);
  }
});

Deno.test("openat2 confines resolution with RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT", () => {
  assert.equal(openat2Supported(), true, "this kernel has openat2 (Linux 5.6+)");
  using dir = scratch();
  mkdirat(dir.dirfd, "inner", 0o755);
  const inner = openat(dir.dirfd, "inner", O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    writeFile(inner, "file", "inside");
    writeFile(dir.dirfd, "x", "outside");
    symlinkat("file", inner, "relative");
    symlinkat("/inner/file", dir.dirfd, "absolute");
    symlinkat("../x", inner, "escape");

    // Happy path: a plain name and a symlink that stays inside.
    let fd = openat2(inner, "file", { flags: O_RDONLY | O_CLOEXEC, resolve: RESOLVE_BENEATH });
    assert.equal(readText(fd), "inside");
    closeFd(fd);
    fd = openat2(inner, "relative", { flags: O_RDONLY | O_CLOEXEC, resolve: RESOLVE_BENEATH });
    assert.equal(readText(fd), "inside");
    closeFd(fd);

    // ".." and links that leave the tree are EXDEV; without RESOLVE_BENEATH "../x" works.
    const beneath = { flags: O_RDONLY | O_CLOEXEC, resolve: RESOLVE_BENEATH };
    assertErrno(() => openat2(inner, "../x", beneath), "EXDEV");
    assertErrno(() => openat2(inner, "escape", beneath), "EXDEV");
    assertErrno(() => openat2(dir.dirfd, "absolute", beneath), "EXDEV");
    assertErrno(() => openat2(inner, "/etc/hostname", beneath), "EXDEV");
    fd = openat2(inner, "../x", { flags: O_RDONLY | O_CLOEXEC, resolve: 0 });
    assert.equal(readText(fd), "outside");
    closeFd(fd);

    // RESOLVE_NO_SYMLINKS refuses every link with ELOOP, even one that stays inside.
    const noLinks = { flags: O_RDONLY | O_CLOEXEC, resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS };
    assertErrno(() => openat2(inner, "relative", noLinks), "ELOOP");
    assertErrno(() => openat2(dir.dirfd, "absolute", noLinks), "ELOOP");

    // RESOLVE_IN_ROOT resolves an absolute link inside the dirfd, as in a chroot.
    fd = openat2(dir.dirfd, "absolute", { flags: O_RDONLY | O_CLOEXEC, resolve: RESOLVE_IN_ROOT });
    assert.equal(readText(fd), "inside");
    closeFd(fd);

    // Mode without O_CREAT and unknown resolve bits are EINVAL; creation works with a mode.
    assertErrno(
      () => openat2(inner, "file", { flags: O_RDONLY, mode: 0o644, resolve: 0 }),
      "EINVAL",
    );
    assertErrno(() => openat2(inner, "file", { flags: O_RDONLY, resolve: 0x4000 }), "EINVAL");
    fd = openat2(inner, "made", {
      flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
      mode: 0o600,
      resolve: RESOLVE_BENEATH,
    });
    closeFd(fd);
    assert.equal(fstatat(inner, "made", 0).mode & 0o777, 0o600);
    assertErrno(() => openat2(inner, "missing", beneath), "ENOENT");
  } finally {
    closeFd(inner);
  }
});

Deno.test("reopenFd turns an O_PATH fd into a readable fd, and refuses a held symlink", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "data", "reopened contents");
  symlinkat("data", dir.dirfd, "link");
  const pathFd = openat(dir.dirfd, "data", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  const linkFd = openat(dir.dirfd, "link", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  try {
    // An O_PATH fd cannot be read.
    assertErrno(() => readFd(pathFd, new Uint8Array(8)), "EBADF");
    // O_NOFOLLOW is dropped (it would refuse the magic link), so callers may pass it.
    const fd = reopenFd(pathFd, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    try {
      assert.equal(readText(fd), "reopened contents");
      assert.equal(getStatusFlags(fd) & O_PATH, 0);
    } finally {
      closeFd(fd);
    }
    // The file moved: the reopen still finds the inode, not the name.
    renameat2(dir.dirfd, "data", dir.dirfd, "moved");
    writeFile(dir.dirfd, "data", "impostor");
    const again = reopenFd(pathFd, O_RDONLY | O_CLOEXEC);
    assert.equal(readText(again), "reopened contents");
    closeFd(again);
    // A held symlink is not followed.
    assertErrno(() => reopenFd(linkFd, O_RDONLY | O_CLOEXEC), "ELOOP");
  } finally {
    closeFd(pathFd);
    closeFd(linkFd);
  }
  assertErrno(() => reopenFd(1_000_000, O_RDONLY), "ENOENT");
});

Deno.test("fstatat (statx) matches Deno.lstatSync for a file, a directory, a symlink and a device", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "file", "x".repeat(5000));
  mkdirat(dir.dirfd, "sub", 0o750);
  symlinkat("file", dir.dirfd, "link");
  const names = ["file", "sub", "link"];
  if (getuid() === 0) {
    mknodat(dir.dirfd, "null", S_IFCHR | 0o600, makedev(1, 3));
    names.push("null");
  }
  for (const name of names) {
    const ours = fstatat(dir.dirfd, name, AT_SYMLINK_NOFOLLOW);
    const theirs = Deno.lstatSync(`${dir.path}/${name}`);
    assert.equal(ours.mode, theirs.mode, name);
    assert.equal(ours.nlink, theirs.nlink, name);
    assert.equal(ours.uid, theirs.uid, name);
    assert.equal(ours.gid, theirs.gid, name);
    assert.equal(ours.rdev, theirs.rdev, name);
    assert.equal(ours.ino, BigInt(theirs.ino!), name);
    assert.equal(ours.dev, theirs.dev, name);
    assert.equal(ours.size, theirs.size, name);
    assert.equal(ours.blocks, theirs.blocks, name);
    assert.equal(ours.blksize, theirs.blksize, name);
    // Deno's Dates carry milliseconds (and whole seconds for ctime).
    const ms = (sec: number, nsec: number) => sec * 1000 + Math.floor(nsec / 1e6);
    assert.equal(ms(ours.atimeSec, ours.atimeNsec), theirs.atime!.getTime(), name);
    assert.equal(ms(ours.mtimeSec, ours.mtimeNsec), theirs.mtime!.getTime(), name);
    assert.equal(ours.ctimeSec, Math.floor(theirs.ctime!.getTime() / 1000), name);
    assert.ok(ours.atimeNsec >= 0 && ours.atimeNsec < 1e9);
  }
  if (getuid() === 0) assert.equal(fstatat(dir.dirfd, "null", 0).rdev, makedev(1, 3));
  // Without AT_SYMLINK_NOFOLLOW the link is followed.
  assert.equal(fstatat(dir.dirfd, "link", 0).mode & S_IFMT, S_IFREG);
  // "" with AT_EMPTY_PATH stats the (O_PATH) dirfd itself; without the flag it is ENOENT.
  assert.equal(fstatat(dir.dirfd, "", AT_EMPTY_PATH).ino, BigInt(Deno.lstatSync(dir.path).ino!));
  assertErrno(() => fstatat(dir.dirfd, "", 0), "ENOENT");
  assertErrno(() => fstatat(dir.dirfd, "missing", 0), "ENOENT");
});

Deno.test("makedev encodes like glibc", () => {
  assert.equal(makedev(1, 3), 0x103);
  assert.equal(makedev(8, 0), 0x800);
  assert.equal(makedev(0x123, 0x45678), 0x45612378);
  assert.equal(makedev(0x1001, 0), 0x1000_0000_0100);
});

Deno.test("fstatfs agrees with stat -f", async () => {
  using dir = scratch();
  const ours = fstatfs(dir.dirfd);
  const output = await new Deno.Command("stat", {
    args: ["-f", "-c", "%t %S %s %b %c %l", dir.path],
  }).output();
  assert.ok(output.success, decoder.decode(output.stderr));
  const [type, frsize, bsize, blocks, files, namelen] = decoder.decode(output.stdout).trim()
    .split(" ");
  assert.equal(ours.type, parseInt(type, 16));
  assert.equal(ours.frsize, Number(frsize));
  assert.equal(ours.bsize, Number(bsize));
  assert.equal(ours.blocks, Number(blocks));
  assert.equal(ours.files, Number(files));
  assert.equal(ours.namelen, Number(namelen));
  assert.ok(ours.bavail <= ours.bfree && ours.bfree <= ours.blocks);
  assert.ok(ours.ffree <= ours.files);
  assertErrno(() => fstatfs(-1), "EBADF");
});

Deno.test("mkdirat, mknodat, symlinkat, unlinkat: happy paths and errors", () => {
  using dir = scratch();
  mkdirat(dir.dirfd, "d", 0o700);
  assert.equal(fstatat(dir.dirfd, "d", 0).mode, S_IFDIR | 0o700);
  assertErrno(() => mkdirat(dir.dirfd, "d", 0o700), "EEXIST");

  mknodat(dir.dirfd, "fifo", S_IFIFO | 0o640, 0);
  assert.equal(fstatat(dir.dirfd, "fifo", 0).mode, S_IFIFO | 0o640);
  assertErrno(() => mknodat(dir.dirfd, "fifo", S_IFIFO | 0o640, 0), "EEXIST");
  assertErrno(() => mknodat(dir.dirfd, "bad", S_IFIFO, 1.5), "EINVAL");

  symlinkat("d", dir.dirfd, "sym");
  assert.deepEqual(readlinkat(dir.dirfd, "sym"), encoder.encode("d"));
  assertErrno(() => symlinkat("elsewhere", dir.dirfd, "sym"), "EEXIST");

  writeFile(dir.dirfd, "d/child", "c");
  assertErrno(() => unlinkat(dir.dirfd, "d", AT_REMOVEDIR), "ENOTEMPTY");
  assertErrno(() => unlinkat(dir.dirfd, "d"), "EISDIR");
  unlinkat(dir.dirfd, "d/child");
  unlinkat(dir.dirfd, "d", AT_REMOVEDIR);
  unlinkat(dir.dirfd, "sym");
  unlinkat(dir.dirfd, "fifo");
  assertErrno(() => unlinkat(dir.dirfd, "fifo"), "ENOENT");
  assert.deepEqual(Deno.readDirSync(dir.path).toArray(), []);
});

Deno.test("readlinkat returns the exact bytes of a non-UTF-8 target", () => {
  using dir = scratch();
  const target = new Uint8Array([0x2e, 0x2e, 0x2f, 0xff, 0xfe, 0x80, 0xc3, 0x28, 0x7a]);
  symlinkat(target, dir.dirfd, "odd");
  assert.deepEqual(readlinkat(dir.dirfd, "odd"), target);
  const long = "p/".repeat(2000) + "end";
  symlinkat(long, dir.dirfd, "long");
  assert.equal(decoder.decode(readlinkat(dir.dirfd, "long")), long);
  writeFile(dir.dirfd, "plain", "");
  assertErrno(() => readlinkat(dir.dirfd, "plain"), "EINVAL");
  assertErrno(() => readlinkat(dir.dirfd, "missing"), "ENOENT");
});

Deno.test("renameat2: plain, RENAME_NOREPLACE and RENAME_EXCHANGE", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "a", "A");
  writeFile(dir.dirfd, "b", "B");
  assertErrno(() => renameat2(dir.dirfd, "a", dir.dirfd, "b", RENAME_NOREPLACE), "EEXIST");
  assert.equal(readFileAt(dir.dirfd, "a"), "A");

  renameat2(dir.dirfd, "a", dir.dirfd, "b", RENAME_EXCHANGE);
  assert.equal(readFileAt(dir.dirfd, "a"), "B");
  assert.equal(readFileAt(dir.dirfd, "b"), "A");
  assertErrno(() => renameat2(dir.dirfd, "a", dir.dirfd, "c", RENAME_EXCHANGE), "ENOENT");

  renameat2(dir.dirfd, "a", dir.dirfd, "c", RENAME_NOREPLACE);
  assert.equal(readFileAt(dir.dirfd, "c"), "B");
  renameat2(dir.dirfd, "c", dir.dirfd, "b");
  assert.equal(readFileAt(dir.dirfd, "b"), "B");
  assertErrno(() => renameat2(dir.dirfd, "a", dir.dirfd, "d"), "ENOENT");
});

Deno.test("linkat links an O_PATH fd via /proc/self/fd with AT_SYMLINK_FOLLOW", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "orig", "linked");
  const pathFd = openat(dir.dirfd, "orig", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  try {
    linkat(AT_FDCWD, procSelfFdPath(pathFd), dir.dirfd, "hard", AT_SYMLINK_FOLLOW);
    assert.equal(readFileAt(dir.dirfd, "hard"), "linked");
    assert.equal(fstatat(pathFd, "", AT_EMPTY_PATH).nlink, 2);
    assertErrno(
      () => linkat(AT_FDCWD, procSelfFdPath(pathFd), dir.dirfd, "hard", AT_SYMLINK_FOLLOW),
      "EEXIST",
    );
    // Without AT_SYMLINK_FOLLOW linkat would link the magic link itself, which Linux refuses.
    if (getuid() === 0) {
      // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH.
      linkat(pathFd, "", dir.dirfd, "hard2", AT_EMPTY_PATH);
      assert.equal(fstatat(pathFd, "", AT_EMPTY_PATH).nlink, 3);
    }
    linkat(dir.dirfd, "orig", dir.dirfd, "byname");
    assert.equal(readFileAt(dir.dirfd, "byname"), "linked");
    assertErrno(() => linkat(dir.dirfd, "missing", dir.dirfd, "x"), "ENOENT");
  } finally {
    closeFd(pathFd);
  }
});

Deno.test("fchmod needs a real fd; chmodProcFd works on O_PATH fds", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "f", "");
  const pathFd = openat(dir.dirfd, "f", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  try {
    assertErrno(() => fchmod(pathFd, 0o600), "EBADF");
    chmodProcFd(pathFd, 0o600);
    assert.equal(fstatat(dir.dirfd, "f", 0).mode, S_IFREG | 0o600);
    const fd = reopenFd(pathFd, O_RDONLY | O_CLOEXEC);
    fchmod(fd, 0o4751);
    closeFd(fd);
    assert.equal(fstatat(dir.dirfd, "f", 0).mode, S_IFREG | 0o4751);
  } finally {
    closeFd(pathFd);
  }
  assertErrno(() => chmodProcFd(1_000_000, 0o600), "ENOENT");
});

Deno.test("fchownat changes a link itself with AT_SYMLINK_NOFOLLOW and an O_PATH fd with AT_EMPTY_PATH", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "f", "");
  symlinkat("f", dir.dirfd, "link");
  const root = getuid() === 0;
  const uid = root ? 1234 : getuid();
  const gid = root ? 5678 : getgid();
  fchownat(dir.dirfd, "link", uid, gid, AT_SYMLINK_NOFOLLOW);
  const link = Deno.lstatSync(`${dir.path}/link`);
  assert.equal(link.uid, uid);
  assert.equal(link.gid, gid);
  const pathFd = openat(dir.dirfd, "f", O_PATH | O_CLOEXEC);
  try {
    fchownat(pathFd, "", uid, -1, AT_EMPTY_PATH);
    const file = Deno.lstatSync(`${dir.path}/f`);
    assert.equal(file.uid, uid);
    assert.equal(file.gid, getgid(), "gid -1 leaves the group alone");
  } finally {
    closeFd(pathFd);
  }
  assertErrno(() => fchownat(dir.dirfd, "missing", uid, gid, 0), "ENOENT");
});

Deno.test("utimensat sets exact times, now, and omit; on an O_PATH fd and on a link itself", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "f", "");
  symlinkat("f", dir.dirfd, "link");
  const pathFd = openat(dir.dirfd, "f", O_PATH | O_CLOEXEC);
  try {
    utimensat(
      pathFd,
      "",
      { sec: 1_000_000_000, nsec: 123_456_789 },
      { sec: 1_500_000_000n, nsec: 1 },
      AT_EMPTY_PATH,
    );
    let st = fstatat(dir.dirfd, "f", 0);
    assert.deepEqual([st.atimeSec, st.atimeNsec], [1_000_000_000, 123_456_789]);
    assert.deepEqual([st.mtimeSec, st.mtimeNsec], [1_500_000_000, 1]);

    const before = Math.floor(Date.now() / 1000);
    utimensat(dir.dirfd, "f", "omit", "now", 0);
    st = fstatat(dir.dirfd, "f", 0);
    assert.deepEqual([st.atimeSec, st.atimeNsec], [1_000_000_000, 123_456_789]);
    assert.ok(st.mtimeSec >= before && st.mtimeSec <= before + 5, `mtime ${st.mtimeSec}`);

    utimensat(dir.dirfd, "link", { sec: 42, nsec: 0 }, { sec: 43, nsec: 0 }, AT_SYMLINK_NOFOLLOW);
    const link = fstatat(dir.dirfd, "link", AT_SYMLINK_NOFOLLOW);
    assert.deepEqual([link.atimeSec, link.mtimeSec], [42, 43]);
    assert.equal(fstatat(dir.dirfd, "f", 0).atimeSec, 1_000_000_000, "target untouched");

    assertErrno(() => utimensat(dir.dirfd, "f", { sec: 1, nsec: 2e9 }, "omit", 0), "EINVAL");
    assertErrno(() => utimensat(dir.dirfd, "f", { sec: 0.5, nsec: 0 }, "omit", 0), "EINVAL");
    assertErrno(() => utimensat(dir.dirfd, "missing", "now", "now", 0), "ENOENT");
  } finally {
    closeFd(pathFd);
  }
});

Deno.test("faccessat reports existence and permission", () => {
  using dir = scratch();
  writeFile(dir.dirfd, "f", "");
  faccessat(dir.dirfd, "f", F_OK);
  faccessat(dir.dirfd, "f", R_OK);
  assertErrno(() => faccessat(dir.dirfd, "missing", F_OK), "ENOENT");
});

Deno.test("getdents64 lists 2,000 entries through small buffers, each exactly once", () => {
  using dir = scratch();
  const count = 2000;
  const expected = new Set<string>();
  for (let i = 0; i < count; i++) {
    const name = `entry-${i.toString().padStart(4, "0")}-${"n".repeat(i % 37)}`;
    writeFile(dir.dirfd, name, "");
    expected.add(name);
  }
  mkdirat(dir.dirfd, "subdir", 0o755);
  symlinkat("subdir", dir.dirfd, "link");
  const fd = reopenFd(dir.dirfd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  try {
    const buf = new Uint8Array(1024);
    const seen = new Map<string, number>();
    const offsets: bigint[] = [];
    let calls = 0;
    for (;;) {
      const n = getdents64(fd, buf);
      if (n === 0) break;
      calls++;
      for (const entry of parseDirents(buf, n)) {
        const name = decoder.decode(entry.name);
        seen.set(name, (seen.get(name) ?? 0) + 1);
        offsets.push(entry.off);
        if (expected.has(name)) assert.equal(entry.type, DT_REG, name);
        if (name === "subdir" || name === "." || name === "..") assert.equal(entry.type, DT_DIR);
        if (name === "link") assert.equal(entry.type, DT_LNK);
        if (name === "subdir") {
          assert.equal(entry.ino, fstatat(dir.dirfd, "subdir", 0).ino);
        }
      }
    }
    assert.ok(calls > 10, `expected many small reads, got ${calls}`);
    assert.equal(seen.size, count + 4);
    for (const [name, times] of seen) assert.equal(times, 1, name);
    for (const name of [...expected, ".", "..", "subdir", "link"]) assert.ok(seen.has(name), name);

    // Seeking to an entry's off (a 63-bit hash cookie on ext4) resumes right after it.
    const middle = Math.floor(offsets.length / 2);
    assert.equal(lseek64(fd, offsets[middle], SEEK_SET), offsets[middle]);
    const n = getdents64(fd, buf);
    assert.ok(n > 0);
    assert.equal(parseDirents(buf, n)[0].off, offsets[middle + 1]);

    assertErrno(() => getdents64(fd, new Uint8Array(8)), "EINVAL");
  } finally {
    closeFd(fd);
  }
  writeFile(dir.dirfd, "plain", "");
  const file = openat(dir.dirfd, "plain", O_RDONLY | O_CLOEXEC);
  try {
    assertErrno(() => getdents64(file, new Uint8Array(1024)), "ENOTDIR");
  } finally {
    closeFd(file);
  }
});

Deno.test("parseDirents rejects malformed records", () => {
  const record = new Uint8Array(24);
  const view = new DataView(record.buffer);
  view.setBigUint64(0, 7n, true);
  view.setBigInt64(8, 99n, true);
  view.setUint16(16, 24, true);
  record[18] = DT_REG;
  record.set([0x61, 0x62, 0], 19);
  assert.deepEqual(parseDirents(record, 24), [{
    ino: 7n,
    off: 99n,
    type: DT_REG,
    name: new Uint8Array([0x61, 0x62]),
  }]);
  const copied = parseDirents(record, 24)[0].name;
  const viewed = parseDirents(record, 24, true)[0].name;
  assert.deepEqual(viewed, copied);
  assert.notEqual(copied.buffer, record.buffer, "a copy by default");
  assert.equal(viewed.buffer, record.buffer, "a view when asked");
  assertErrno(() => parseDirents(record, 20), "EIO");
  assertErrno(() => parseDirents(record, 25), "EINVAL");
  view.setUint16(16, 0, true);
  assertErrno(() => parseDirents(record, 24), "EIO");
  view.setUint16(16, 24, true);
  record.fill(0x61, 19);
  assertErrno(() => parseDirents(record, 24), "EIO");
});

Deno.test("umask applies to creation and returns the previous mask", () => {
  using dir = scratch();
  // umask is process-wide and tests may run in parallel Workers: keep the window tiny.
  const previous = umask(0o077);
  let fd: number;
  try {
    fd = openat(dir.dirfd, "masked", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o666);
  } finally {
    assert.equal(umask(previous), 0o077);
  }
  closeFd(fd);
  assert.equal(fstatat(dir.dirfd, "masked", 0).mode & 0o777, 0o600);
});

Deno.test("getuid and getgid match Deno", () => {
  assert.equal(getuid(), Deno.uid());
  assert.equal(getgid(), Deno.gid());
});
