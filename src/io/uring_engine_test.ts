import assert from "node:assert/strict";
import {
  closeFd,
  EBADF,
  ECANCELED,
  EINVAL,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  fstat,
  IovecArray,
  O_CREAT,
  O_DIRECT,
  O_RDWR,
  openFile,
  pipe2,
  pointerValue,
  pollFd,
  POLLIN,
  pread,
  pwrite,
  readFd,
  setPipeSize,
  writeAll,
} from "../../ffi/mod.ts";
import type { FileIoEngine } from "./file_io_engine.ts";
import { UringFileIoEngine } from "./uring_engine.ts";

function bytes(length: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(length));
}

function pattern(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = bytes(length);
  for (let i = 0; i < length; i++) out[i] = (i * 29 + seed) & 0xff;
  return out;
}

/** Waits on the completion fd and reaps until nothing is in flight. */
function drain(engine: FileIoEngine): void {
  while (engine.inflight > 0) {
    const ready = pollFd(engine.completionFd!, POLLIN, 5000);
    assert.ok((ready & POLLIN) !== 0, "completion fd did not become readable");
    engine.reap();
  }
}

function withEngine(
  entries: number,
  fn: (engine: UringFileIoEngine, fd: number, dir: string) => void,
): void {
  const dir = Deno.makeTempDirSync({ prefix: "vhostd-uring-engine-" });
  const fd = openFile(`${dir}/file`, O_RDWR | O_CREAT, 0o600);
  const engine = new UringFileIoEngine({ entries });
  try {
    fn(engine, fd, dir);
  } finally {
    engine.close();
    closeFd(fd);
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("uring engine: writev/readv round trip; completions only in reap", () => {
  withEngine(8, (engine, fd) => {
    assert.equal(engine.kind, "io_uring");
    assert.equal(engine.entries, 8);
    assert.ok(engine.completionFd >= 0);
    const a = pattern(1000, 1);
    const b = pattern(7192, 2);
    const iov = new IovecArray(2);
    iov.set(0, pointerValue(a), a.length);
    iov.set(1, pointerValue(b), b.length);
    const results: number[] = [];
    engine.writev(fd, iov, 2, 4096, true, (r) => results.push(r));
    assert.equal(engine.inflight, 1);
    engine.submit();
    assert.equal(results.length, 0, "no completion before reap");
    drain(engine);
    assert.deepEqual(results, [8192]);
    assert.equal(engine.inflight, 0);

    const back = bytes(8192);
    const rio = new IovecArray(3);
    rio.set(0, pointerValue(back), 100);
    rio.set(1, pointerValue(back) + 100, 0);
    rio.set(2, pointerValue(back) + 100, 8092);
    engine.readv(fd, rio, 3, 4096, (r) => results.push(r));
    engine.fsync(fd, true, (r) => results.push(r));
    engine.fsync(fd, false, (r) => results.push(r));
    engine.submit();
    drain(engine);
    assert.deepEqual(results.slice(1).sort((x, y) => x - y), [0, 0, 8192]);
    assert.deepEqual(back.subarray(0, 1000), a);
    assert.deepEqual(back.subarray(1000), b);
  });
});

Deno.test("uring engine: a read crossing end of file returns the bytes before it", () => {
  withEngine(4, (engine, fd) => {
    pwrite(fd, pattern(10000, 3), 0);
    const buf = bytes(8192);
    const iov = new IovecArray(2);
    iov.set(0, pointerValue(buf), 4096);
    iov.set(1, pointerValue(buf) + 4096, 4096);
    const results: number[] = [];
    engine.readv(fd, iov, 2, 4096, (r) => results.push(r));
    const eof = new IovecArray(1);
    eof.set(0, pointerValue(buf), 10);
    engine.readv(fd, eof, 1, 10000, (r) => results.push(r));
    engine.submit();
    drain(engine);
    assert.deepEqual(results.sort((x, y) => x - y), [0, 10000 - 4096]);
    assert.deepEqual(buf.subarray(0, 10000 - 4096), pattern(10000, 3).subarray(4096));
  });
});

Deno.test("uring engine: short reads and writes are resumed (pipe delivers in parts)", () => {
  withEngine(4, (engine) => {
    const [readEnd, writeEnd] = pipe2();
    try {
      // Read 300 bytes that arrive as 100 + 200.
      const buf = bytes(300);
      const iov = new IovecArray(2);
      iov.set(0, pointerValue(buf), 150);
      iov.set(1, pointerValue(buf) + 150, 150);
      const results: number[] = [];
      engine.readv(readEnd, iov, 2, 0, (r) => results.push(r));
      engine.submit();
      const data = pattern(300, 4);
      writeAll(writeEnd, data.subarray(0, 100));
      engine.reap();
      for (let i = 0; i < 5 && engine.inflight > 0; i++) {
        pollFd(engine.completionFd, POLLIN, 10);
        engine.reap();
      }
      assert.equal(results.length, 0, "waits for the rest");
      writeAll(writeEnd, data.subarray(100));
      drain(engine);
      assert.deepEqual(results, [300]);
      assert.deepEqual(buf, data);

      // Write 16 KiB into a pipe that holds 4 KiB, drained by hand.
      setPipeSize(writeEnd, 4096);
      const big = pattern(16384, 5);
      const wio = new IovecArray(1);
      wio.set(0, pointerValue(big), big.length);
      engine.writev(writeEnd, wio, 1, 0, false, (r) => results.push(r));
      engine.submit();
      const got = bytes(16384);
      let have = 0;
      while (have < got.length) {
        assert.ok(pollFd(readEnd, POLLIN, 5000) & POLLIN);
        have += readFd(readEnd, got.subarray(have));
        engine.reap();
      }
      drain(engine);
      assert.deepEqual(results, [300, 16384]);
      assert.deepEqual(got, big);
    } finally {
      closeFd(readEnd);
      closeFd(writeEnd);
    }
  });
});

Deno.test("uring engine: errors are negative errno values, reported from reap", () => {
  withEngine(4, (engine, fd, dir) => {
    const buf = bytes(4096 * 2);
    const iov = new IovecArray(1);
    iov.set(0, pointerValue(buf), 4096);
    const results: [string, number][] = [];
    engine.readv(999_999, iov, 1, 0, (r) => results.push(["readv", r]));
    engine.writev(999_999, iov, 1, 0, false, (r) => results.push(["writev", r]));
    engine.fsync(999_999, false, (r) => results.push(["fsync", r]));
    engine.fallocate(999_999, 0, 0, 1, (r) => results.push(["fallocate", r]));
    engine.readv(fd, iov, 2, 0, (r) => results.push(["count", r]));
    engine.readv(fd, iov, 1, -5, (r) => results.push(["offset", r]));
    assert.equal(results.length, 0, "refused arguments are reported from reap too");
    assert.equal(engine.inflight, 6);
    engine.submit();
    drain(engine);
    assert.deepEqual(
      new Map(results),
      new Map([
        ["readv", -EBADF],
        ["writev", -EBADF],
        ["fsync", -EBADF],
        ["fallocate", -EBADF],
        ["count", -EINVAL],
        ["offset", -EINVAL],
      ]),
    );

    // O_DIRECT with a misaligned buffer: EINVAL where the filesystem checks
    // alignment (ext4, xfs). An aligned read first proves O_DIRECT works here.
    // Data on disk, not a hole: reading a hole never checks alignment.
    Deno.writeFileSync(`${dir}/direct`, pattern(8192, 9));
    let direct: number;
    try {
      direct = openFile(`${dir}/direct`, O_RDWR | O_DIRECT, 0o600);
    } catch {
      return; // no O_DIRECT on this filesystem
    }
    try {
      const area = bytes(4096 * 3);
      const aligned = Math.ceil(pointerValue(area) / 4096) * 4096;
      const dio = new IovecArray(1);
      let result = 0;
      dio.set(0, aligned, 4096);
      engine.readv(direct, dio, 1, 0, (r) => result = r);
      engine.submit();
      drain(engine);
      assert.equal(result, 4096);
      dio.set(0, aligned + 1, 4096);
      engine.readv(direct, dio, 1, 0, (r) => result = r);
      engine.submit();
      drain(engine);
      assert.equal(result, -EINVAL);
    } finally {
      closeFd(direct);
    }
  });
});

Deno.test("uring engine: fallocate punches a hole", () => {
  withEngine(4, (engine, fd) => {
    pwrite(fd, pattern(65536, 6), 0);
    let result = 1;
    engine.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192, 16384, (r) => {
      result = r;
    });
    engine.submit();
    drain(engine);
    assert.equal(result, 0);
    assert.equal(fstat(fd).size, 65536);
    const buf = bytes(16384);
    pread(fd, buf, 8192);
    assert.ok(buf.every((x) => x === 0));
  });
});

Deno.test("uring engine: 1000 operations through a 4-entry ring wait in the queue", () => {
  withEngine(4, (engine, fd) => {
    const data = pattern(1000 * 16, 7);
    pwrite(fd, data, 0);
    const buf = bytes(data.length);
    const results = new Int32Array(1000).fill(-1);
    const iovs = Array.from({ length: 1000 }, (_, i) => {
      const iov = new IovecArray(1);
      iov.set(0, pointerValue(buf) + i * 16, 16);
      return iov;
    });
    for (let i = 0; i < 1000; i++) engine.readv(fd, iovs[i], 1, i * 16, (r) => results[i] = r);
    assert.equal(engine.inflight, 1000);
    engine.submit();
    drain(engine);
    assert.ok(results.every((r) => r === 16));
    assert.deepEqual(buf, data);
  });
});

Deno.test("uring engine: completions may submit new operations re-entrantly", () => {
  withEngine(2, (engine, fd) => {
    const data = pattern(64 * 200, 8);
    pwrite(fd, data, 0);
    const buf = bytes(data.length);
    const iov = new IovecArray(1);
    let next = 0;
    let finished = 0;
    const step = (r: number) => {
      assert.equal(r, 64);
      finished++;
      if (next < 200) start();
    };
    const start = () => {
      iov.set(0, pointerValue(buf) + next * 64, 64);
      engine.readv(fd, iov, 1, next * 64, step);
      next++;
      engine.submit();
    };
    start();
    drain(engine);
    assert.equal(finished, 200);
    assert.deepEqual(buf, data);
  });
});

Deno.test("uring engine: a throwing completion does not stop the others", () => {
  withEngine(4, (engine) => {
    const ran: number[] = [];
    for (let i = 0; i < 3; i++) {
      engine.fsync(999_999, false, (r) => {
        ran.push(r);
        if (i === 1) throw new Error("boom");
      });
    }
    engine.submit();
    pollFd(engine.completionFd, POLLIN, 5000);
    let thrown: unknown;
    for (let i = 0; i < 100 && ran.length < 3; i++) {
      try {
        engine.reap();
      } catch (error) {
        thrown = error;
      }
      if (ran.length < 3) pollFd(engine.completionFd, POLLIN, 100);
    }
    assert.deepEqual(ran, [-EBADF, -EBADF, -EBADF]);
    assert.ok(thrown instanceof Error && thrown.message === "boom");
    assert.equal(engine.inflight, 0);
  });
});

Deno.test("uring engine: close waits for the kernel and cancels what is still queued", () => {
  const [readEnd, writeEnd] = pipe2();
  const engine = new UringFileIoEngine({ entries: 1 });
  const results: number[] = [];
  try {
    const buf = bytes(10);
    const iov = new IovecArray(1);
    iov.set(0, pointerValue(buf), 10);
    engine.readv(readEnd, iov, 1, 0, (r) => results.push(r));
    engine.readv(readEnd, iov, 1, 0, (r) => results.push(r));
    engine.submit();
    // The first read waits on the pipe; closing its write end ends it (EOF).
    closeFd(writeEnd);
    engine.close();
    assert.deepEqual(results.sort((x, y) => x - y), [-ECANCELED, 0]);
    assert.throws(() => engine.submit(), /after close/);
  } finally {
    closeFd(readEnd);
  }
});
