import assert from "node:assert/strict";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  S_IFMT,
  S_IFREG,
  SEEK_DATA,
  SEEK_HOLE,
} from "./constants.ts";
import {
  closeFd,
  closeQuietly,
  dupFd,
  EVENTFD_TARGET,
  fallocate,
  fdatasync,
  fdTarget,
  fstat,
  fsync,
  getStatusFlags,
  ioctlBlkGetSize64,
  isEventfd,
  lseek,
  openFile,
  pipe2,
  pread,
  preadv,
  pwrite,
  pwritev,
  readFd,
  setNonBlocking,
  setPipeSize,
  writeAll,
  writeFd,
} from "./fd.ts";
import { IovecArray } from "./iovec.ts";
import { SyscallError } from "./errno.ts";
import { ftruncate, memfdCreate, pointerValue } from "./memory.ts";
import { epollCreate, eventfd } from "./events.ts";
import { socketPair } from "./socket.ts";

function filled(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(new ArrayBuffer(length));
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 255;
  return bytes;
}

Deno.test("pipe2 carries bytes from the write end to the read end", () => {
  const [readEnd, writeEnd] = pipe2();
  try {
    assert.notEqual(readEnd, writeEnd);
    const message = new TextEncoder().encode("hello pipe");
    assert.equal(writeFd(writeEnd, message), message.length);
    const buf = new Uint8Array(64);
    const n = readFd(readEnd, buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n)), "hello pipe");
    // Reading from an offset inside a larger buffer uses the view, not the buffer start.
    writeAll(writeEnd, message);
    const window = buf.subarray(10, 20);
    assert.equal(readFd(readEnd, window), 10);
    assert.deepEqual(buf.subarray(10, 20), message);
    closeFd(writeEnd);
    assert.equal(readFd(readEnd, buf), 0, "EOF after the writer closed");
  } finally {
    closeQuietly(readEnd);
    closeQuietly(writeEnd);
  }
});

Deno.test("non-blocking read of an empty pipe throws EAGAIN; setNonBlocking toggles O_NONBLOCK", () => {
  const [readEnd, writeEnd] = pipe2(O_CLOEXEC | O_NONBLOCK);
  try {
    assert.throws(() => readFd(readEnd, new Uint8Array(8)), { code: "EAGAIN", syscall: "read" });
    setNonBlocking(readEnd, false);
    assert.equal(getStatusFlags(readEnd) & O_NONBLOCK, 0);
    setNonBlocking(readEnd, true);
    assert.equal(getStatusFlags(readEnd) & O_NONBLOCK, O_NONBLOCK);
  } finally {
    closeQuietly(readEnd);
    closeQuietly(writeEnd);
  }
});

Deno.test("writeAll writes a large buffer completely", async () => {
  const data = filled(256 * 1024, 3);
  const path = await Deno.makeTempFile();
  const fd = openFile(path, O_RDWR | O_CLOEXEC);
  try {
    writeAll(fd, data);
    assert.equal(fstat(fd).size, data.length);
    const back = new Uint8Array(data.length);
    assert.equal(pread(fd, back, 0), data.length);
    assert.deepEqual(back, data);
  } finally {
    closeFd(fd);
    await Deno.remove(path);
  }
});

Deno.test("pwrite/pread at offsets, and fstat reports size and type", async () => {
  const path = await Deno.makeTempFile();
  const fd = openFile(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
  try {
    const data = filled(4096, 7);
    assert.equal(pwrite(fd, data, 8192), 4096);
    const st = fstat(fd);
    assert.equal(st.size, 8192 + 4096);
    assert.equal(st.mode & S_IFMT, S_IFREG);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, Deno.uid());
    assert.ok(st.ino > 0 && st.nlink === 1 && st.blksize > 0);
    const info = Deno.statSync(path);
    assert.equal(st.ino, info.ino);
    assert.equal(st.dev, info.dev);
    assert.equal(Number(st.mtimeNs / 1_000_000n), info.mtime!.getTime());
    const back = new Uint8Array(4096);
    assert.equal(pread(fd, back, 8192), 4096);
    assert.deepEqual(back, data);
    assert.equal(pread(fd, back, 4096 + 8192), 0, "EOF");
    const hole = new Uint8Array(16).fill(1);
    assert.equal(pread(fd, hole, 100), 16);
    assert.deepEqual(hole, new Uint8Array(16));
    fdatasync(fd);
    fsync(fd);
  } finally {
    closeFd(fd);
    await Deno.remove(path);
  }
});

Deno.test("preadv/pwritev scatter and gather across three iovecs on a memfd", () => {
  const fd = memfdCreate("iov-test");
  try {
    ftruncate(fd, 65536);
    const parts = [filled(100, 1), filled(4096, 2), filled(7, 3)];
    const iov = new IovecArray(4);
    parts.forEach((part, i) => iov.set(i, pointerValue(part), part.length));
    const total = 100 + 4096 + 7;
    assert.equal(pwritev(fd, iov, 3, 1000), total);

    const whole = new Uint8Array(total);
    assert.equal(pread(fd, whole, 1000), total);
    assert.deepEqual(whole.subarray(0, 100), parts[0]);
    assert.deepEqual(whole.subarray(100, 4196), parts[1]);
    assert.deepEqual(whole.subarray(4196), parts[2]);

    // Read back split differently, into views inside one buffer.
    const target = new Uint8Array(new ArrayBuffer(total + 64));
    const a = target.subarray(8, 8 + 2000);
    const b = target.subarray(2040, 2040 + total - 2000);
    iov.set(0, pointerValue(a), a.length);
    iov.set(1, pointerValue(b), b.length);
    assert.equal(preadv(fd, iov, 2, 1000), total);
    assert.deepEqual(a, whole.subarray(0, 2000));
    assert.deepEqual(b, whole.subarray(2000));
    assert.deepEqual(target.subarray(0, 8), new Uint8Array(8), "bytes before the iovec untouched");

    assert.throws(() => preadv(fd, iov, 5, 0), { code: "EINVAL" });
  } finally {
    closeFd(fd);
  }
});

Deno.test("fallocate PUNCH_HOLE|KEEP_SIZE zeroes a range of a memfd", () => {
  const fd = memfdCreate("punch-test");
  try {
    const data = filled(4 * 4096, 9);
    assert.equal(pwrite(fd, data, 0), data.length);
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192);
    assert.equal(fstat(fd).size, data.length, "size kept");
    const back = new Uint8Array(data.length);
    assert.equal(pread(fd, back, 0), data.length);
    assert.deepEqual(back.subarray(0, 4096), data.subarray(0, 4096));
    assert.deepEqual(back.subarray(4096, 12288), new Uint8Array(8192));
    assert.deepEqual(back.subarray(12288), data.subarray(12288));
    assert.throws(() => fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), { code: "EOPNOTSUPP" });
  } finally {
    closeFd(fd);
  }
});

Deno.test("closeFd throws EBADF on a closed fd, closeQuietly does not", () => {
  const fd = memfdCreate("close-test");
  const copy = dupFd(fd);
  assert.notEqual(copy, fd);
  assert.equal(fstat(copy).ino, fstat(fd).ino);
  closeFd(copy);
  closeFd(fd);
  // Test modules run in parallel in one process: a number just closed may be reused (and
  // closing it again would close another module's fd). This one is never open.
  const closed = 0x7fff_ffff;
  assert.throws(() => closeFd(closed), { code: "EBADF", syscall: "close" });
  closeQuietly(closed);
  closeQuietly(-1);
  assert.throws(() => fstat(closed), { code: "EBADF" });
});

Deno.test("ioctlBlkGetSize64 on a non-block file gives ENOTTY", () => {
  const fd = memfdCreate("ioctl-test");
  try {
    assert.throws(() => ioctlBlkGetSize64(fd), { code: "ENOTTY" });
  } finally {
    closeFd(fd);
  }
});

Deno.test("openFile refuses paths with NUL bytes", () => {
  assert.throws(() => openFile("/tmp/a\0b", O_RDWR), { code: "EINVAL" });
});

Deno.test("lseek SEEK_DATA/SEEK_HOLE finds the data of a sparse memfd", () => {
  const fd = memfdCreate("lseek-test");
  try {
    ftruncate(fd, 1 << 20);
    pwrite(fd, new Uint8Array([1]), 512 * 1024);
    const data = lseek(fd, 0, SEEK_DATA);
    assert.ok(data <= 512 * 1024 && data >= 0);
    assert.ok(lseek(fd, data, SEEK_HOLE) > 512 * 1024);
    assert.throws(
      () => lseek(fd, 1 << 20, SEEK_DATA),
      (e: unknown) => e instanceof SyscallError && e.code === "ENXIO",
    );
  } finally {
    closeQuietly(fd);
  }
});

Deno.test("setPipeSize grows a pipe", () => {
  const [r, w] = pipe2();
  try {
    assert.ok(setPipeSize(w, 1 << 20) >= 1 << 20);
  } finally {
    closeQuietly(r);
    closeQuietly(w);
  }
});

Deno.test("fdTarget names what an fd is; isEventfd accepts eventfds only", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-fd-target-" });
  const file = `${dir}/plain`;
  await Deno.writeFile(file, new Uint8Array(8));
  const efd = eventfd(0);
  const nonBlocking = eventfd(0, O_CLOEXEC | O_NONBLOCK);
  const [r, w] = pipe2();
  const [a, b] = socketPair();
  const epfd = epollCreate();
  const others = [
    openFile("/dev/null", O_RDWR | O_CLOEXEC),
    openFile(file, O_RDWR | O_CLOEXEC),
    openFile(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC),
    memfdCreate("not-an-eventfd"),
  ];
  try {
    assert.equal(fdTarget(efd), EVENTFD_TARGET);
    assert.equal(fdTarget(efd), "anon_inode:[eventfd]");
    const copy = dupFd(efd);
    assert.ok(isEventfd(copy), "a dup of an eventfd is one");
    closeFd(copy);
    assert.ok(isEventfd(nonBlocking));
    assert.match(fdTarget(r), /^pipe:\[\d+\]$/);
    assert.match(fdTarget(a), /^socket:\[\d+\]$/);
    assert.equal(fdTarget(others[0]), "/dev/null");
    assert.equal(fdTarget(others[1]), await Deno.realPath(file));
    assert.equal(fdTarget(others[2]), await Deno.realPath(dir));
    assert.equal(fdTarget(epfd), "anon_inode:[eventpoll]");
    for (const fd of [r, w, a, b, epfd, ...others]) {
      assert.equal(isEventfd(fd), false, `${fdTarget(fd)} is no eventfd`);
    }
    assert.throws(() => fdTarget(-1), { code: "ENOENT", syscall: "readlinkat" });
    const closed = eventfd(0);
    closeFd(closed);
    assert.equal(isEventfd(closed), false, "a closed fd is no eventfd");
    assert.equal(isEventfd(-1), false);
  } finally {
    [efd, nonBlocking, r, w, a, b, epfd, ...others].forEach(closeQuietly);
    await Deno.remove(dir, { recursive: true });
  }
});
