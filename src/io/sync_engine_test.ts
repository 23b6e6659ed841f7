import assert from "node:assert/strict";
import {
  closeFd,
  EBADF,
  EINVAL,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  fstat,
  IovecArray,
  O_CREAT,
  O_RDWR,
  openFile,
  pointerValue,
  pwrite,
} from "../../ffi/mod.ts";
import { advanceIovecs, SyncFileIoEngine } from "./sync_engine.ts";

function bytes(length: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(length));
}

function pattern(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = bytes(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

function withTempFile(fn: (fd: number, path: string) => void): void {
  const dir = Deno.makeTempDirSync({ prefix: "vhostd-sync-" });
  const path = `${dir}/file`;
  const fd = openFile(path, O_RDWR | O_CREAT, 0o600);
  try {
    fn(fd, path);
  } finally {
    closeFd(fd);
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Runs one engine call and returns the result its completion received. */
function result(start: (done: (r: number) => void) => void): number {
  let got: number | undefined;
  start((r) => {
    assert.equal(got, undefined, "completion ran twice");
    got = r;
  });
  assert.notEqual(got, undefined, "sync completion did not run inside the call");
  return got!;
}

Deno.test("advanceIovecs drops transferred bytes in place", () => {
  const iov = new IovecArray(4);
  iov.set(0, 0x1000, 100);
  iov.set(1, 0x2000, 0);
  iov.set(2, 0x3000, 100);
  iov.set(3, 0x4000, 100);
  assert.equal(advanceIovecs(iov, 4, 40), 4);
  assert.deepEqual([iov.address(0), iov.length(0)], [0x1000 + 40, 60]);
  // Through entry 0, the empty entry 1 and into entry 2.
  assert.equal(advanceIovecs(iov, 4, 70), 2);
  assert.deepEqual([iov.address(0), iov.length(0)], [0x3000 + 10, 90]);
  assert.deepEqual([iov.address(1), iov.length(1)], [0x4000, 100]);
  assert.equal(advanceIovecs(iov, 2, 90), 1);
  assert.deepEqual([iov.address(0), iov.length(0)], [0x4000, 100]);
  assert.equal(advanceIovecs(iov, 1, 100), 0);
});

Deno.test("sync engine: writev/readv round trip over several iovecs, dsync and not", () => {
  withTempFile((fd) => {
    const engine = new SyncFileIoEngine();
    assert.equal(engine.kind, "sync");
    assert.equal(engine.completionFd, undefined);
    const a = pattern(1000, 1);
    const b = pattern(5000, 2);
    const iov = new IovecArray(2);
    iov.set(0, pointerValue(a), a.length);
    iov.set(1, pointerValue(b), b.length);
    assert.equal(result((done) => engine.writev(fd, iov, 2, 100, false, done)), 6000);
    iov.set(0, pointerValue(b), 10);
    assert.equal(result((done) => engine.writev(fd, iov, 1, 6100, true, done)), 10);
    assert.equal(engine.inflight, 0);

    const back = bytes(6010);
    iov.set(0, pointerValue(back), 3000);
    iov.set(1, pointerValue(back) + 3000, 3010);
    assert.equal(result((done) => engine.readv(fd, iov, 2, 100, done)), 6010);
    assert.deepEqual(back.subarray(0, 1000), a);
    assert.deepEqual(back.subarray(1000, 6000), b);
    assert.deepEqual(back.subarray(6000), b.subarray(0, 10));
    engine.close();
  });
});

Deno.test("sync engine: a read crossing end of file returns the bytes before it; at EOF 0", () => {
  withTempFile((fd) => {
    const engine = new SyncFileIoEngine();
    pwrite(fd, pattern(4096, 7), 0);
    const buf = bytes(8192);
    const iov = new IovecArray(2);
    iov.set(0, pointerValue(buf), 4000);
    iov.set(1, pointerValue(buf) + 4000, 4192);
    assert.equal(result((done) => engine.readv(fd, iov, 2, 96, done)), 4000);
    assert.deepEqual(buf.subarray(0, 4000), pattern(4096, 7).subarray(96));
    iov.set(0, pointerValue(buf), 512);
    assert.equal(result((done) => engine.readv(fd, iov, 1, 4096, done)), 0);
    assert.equal(result((done) => engine.readv(fd, iov, 1, 1 << 30, done)), 0);
  });
});

Deno.test("sync engine: errors are negative errno values", () => {
  withTempFile((fd) => {
    const engine = new SyncFileIoEngine();
    const buf = bytes(16);
    const iov = new IovecArray(1);
    iov.set(0, pointerValue(buf), 16);
    const badFd = 1_000_000;
    assert.equal(result((done) => engine.readv(badFd, iov, 1, 0, done)), -EBADF);
    assert.equal(result((done) => engine.writev(badFd, iov, 1, 0, true, done)), -EBADF);
    assert.equal(result((done) => engine.fsync(badFd, false, done)), -EBADF);
    assert.equal(result((done) => engine.fallocate(badFd, 0, 0, 1, done)), -EBADF);
    // Refused before reaching the kernel: more entries than the array has.
    assert.equal(result((done) => engine.readv(fd, iov, 2, 0, done)), -EINVAL);
    assert.equal(result((done) => engine.readv(fd, iov, 1, -1, done)), -EINVAL);
  });
});

Deno.test("sync engine: fsync, fdatasync and fallocate (allocate, punch a hole)", () => {
  withTempFile((fd) => {
    const engine = new SyncFileIoEngine();
    assert.equal(result((done) => engine.fallocate(fd, 0, 0, 65536, done)), 0);
    assert.equal(fstat(fd).size, 65536);
    pwrite(fd, pattern(65536, 3), 0);
    assert.equal(result((done) => engine.fsync(fd, false, done)), 0);
    assert.equal(result((done) => engine.fsync(fd, true, done)), 0);
    const mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    assert.equal(result((done) => engine.fallocate(fd, mode, 4096, 8192, done)), 0);
    assert.equal(fstat(fd).size, 65536);
    const buf = bytes(16384);
    const iov = new IovecArray(1);
    iov.set(0, pointerValue(buf), buf.length);
    assert.equal(result((done) => engine.readv(fd, iov, 1, 0, done)), 16384);
    assert.deepEqual(buf.subarray(0, 4096), pattern(65536, 3).subarray(0, 4096));
    assert.ok(buf.subarray(4096, 12288).every((x) => x === 0));
    assert.deepEqual(buf.subarray(12288), pattern(65536, 3).subarray(12288, 16384));
  });
});
