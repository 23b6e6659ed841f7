import assert from "node:assert/strict";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  IORING_FEAT_NODROP,
  IORING_FSYNC_DATASYNC,
  IORING_OP_FALLOCATE,
  IORING_OP_FSYNC,
  IORING_OP_READV,
  IORING_OP_WRITEV,
  O_CREAT,
  O_RDWR,
  POLLIN,
  RWF_DSYNC,
} from "./constants.ts";
import { EBADF, EINVAL, SyscallError } from "./errno.ts";
import { eventfd, eventfdRead, pollFd } from "./events.ts";
import { closeFd, fstat, openFile, pread, pwrite } from "./fd.ts";
import { IoUring } from "./io_uring.ts";
import { IovecArray } from "./iovec.ts";
import { pointerValue } from "./memory.ts";

interface Cqe {
  userData: number;
  res: number;
  flags: number;
}

function bytes(length: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(length));
}

function pattern(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = bytes(length);
  for (let i = 0; i < length; i++) out[i] = (i * 13 + seed) & 0xff;
  return out;
}

function reapAll(ring: IoUring): Cqe[] {
  const out: Cqe[] = [];
  ring.reap((userData, res, flags) => out.push({ userData, res, flags }));
  return out;
}

/** Submits what is prepared, waits for `n` completions and returns them. */
function complete(ring: IoUring, n: number): Cqe[] {
  ring.submit(n);
  const cqes = reapAll(ring);
  assert.equal(cqes.length, n);
  return cqes;
}

function withRing(entries: number, fn: (ring: IoUring, dir: string) => void): void {
  const dir = Deno.makeTempDirSync({ prefix: "vhostd-uring-" });
  const ring = new IoUring(entries);
  try {
    fn(ring, dir);
  } finally {
    ring.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("IovecArray.bufferAddress is the address of its buffer, cached", () => {
  const iov = new IovecArray(2);
  const expected = pointerValue(iov.buffer);
  assert.ok(expected > 0);
  assert.equal(iov.bufferAddress, expected);
  assert.equal(iov.bufferAddress, expected);
});

Deno.test("IoUring: setup maps the rings; a NOP carries 64-bit user data back", () => {
  withRing(8, (ring) => {
    assert.ok(ring.fd >= 0);
    assert.equal(ring.sqEntries, 8);
    assert.equal(ring.cqEntries, 16);
    assert.equal(ring.sqSpace, 8);
    const opcodes = ring.supportedOpcodes();
    for (const op of [IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE]) {
      assert.ok(opcodes.has(op), `opcode ${op}`);
    }
    const big = 2 ** 52 + 12345;
    assert.ok(ring.prepNop(big));
    assert.ok(ring.prepNop(7));
    assert.equal(ring.sqPending, 2);
    const cqes = complete(ring, 2);
    assert.deepEqual(cqes.map((c) => [c.userData, c.res]), [[big, 0], [7, 0]]);
    assert.equal(ring.sqPending, 0);
    assert.equal(ring.cqReady, 0);
  });
});

Deno.test("IoUring: refuses a bad size with EINVAL", () => {
  assert.throws(() => new IoUring(0), (e) => e instanceof SyscallError && e.errno === EINVAL);
});

Deno.test("IoUring: readv/writev round trip, RWF_DSYNC, fsync, fdatasync, EOF", () => {
  withRing(8, (ring, dir) => {
    const fd = openFile(`${dir}/f`, O_RDWR | O_CREAT, 0o600);
    try {
      const a = pattern(3000, 1);
      const b = pattern(5192, 2);
      const iov = new IovecArray(2);
      iov.set(0, pointerValue(a), a.length);
      iov.set(1, pointerValue(b), b.length);
      assert.ok(ring.prepWritev(fd, iov.bufferAddress, 2, 4096, RWF_DSYNC, 1));
      assert.deepEqual(complete(ring, 1).map((c) => [c.userData, c.res]), [[1, 8192]]);
      assert.ok(ring.prepFsync(fd, 0, 2));
      assert.ok(ring.prepFsync(fd, IORING_FSYNC_DATASYNC, 3));
      assert.deepEqual(complete(ring, 2).map((c) => c.res), [0, 0]);

      const back = bytes(8192);
      const rio = new IovecArray(1);
      rio.set(0, pointerValue(back), back.length);
      assert.ok(ring.prepReadv(fd, rio.bufferAddress, 1, 4096, 4));
      assert.deepEqual(complete(ring, 1).map((c) => c.res), [8192]);
      assert.deepEqual(back.subarray(0, 3000), a);
      assert.deepEqual(back.subarray(3000), b);

      // At end of file: 0; crossing it: the bytes before it.
      assert.ok(ring.prepReadv(fd, rio.bufferAddress, 1, 12288, 5));
      assert.ok(ring.prepReadv(fd, rio.bufferAddress, 1, 12288 - 100, 6));
      const cqes = complete(ring, 2).sort((x, y) => x.userData - y.userData);
      assert.deepEqual(cqes.map((c) => c.res), [0, 100]);
    } finally {
      closeFd(fd);
    }
  });
});

Deno.test("IoUring: fallocate allocates and punches a hole", () => {
  withRing(4, (ring, dir) => {
    const fd = openFile(`${dir}/f`, O_RDWR | O_CREAT, 0o600);
    try {
      assert.ok(ring.prepFallocate(fd, 0, 0, 1 << 20, 1));
      assert.deepEqual(complete(ring, 1).map((c) => c.res), [0]);
      assert.equal(fstat(fd).size, 1 << 20);
      pwrite(fd, pattern(1 << 20, 9), 0);
      const before = fstat(fd).blocks;
      const mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
      assert.ok(ring.prepFallocate(fd, mode, 65536, 262144, 2));
      assert.deepEqual(complete(ring, 1).map((c) => c.res), [0]);
      assert.equal(fstat(fd).size, 1 << 20);
      assert.ok(fstat(fd).blocks < before, "punching a hole frees blocks");
      const buf = bytes(262144 + 2);
      pread(fd, buf, 65535);
      assert.equal(buf[0], pattern(65536, 9)[65535]);
      assert.ok(buf.subarray(1, 262145).every((x) => x === 0));
      // Invalid mode bits come back as -EOPNOTSUPP or -EINVAL in the CQE.
      assert.ok(ring.prepFallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096, 3));
      assert.ok(complete(ring, 1)[0].res < 0);
    } finally {
      closeFd(fd);
    }
  });
});

Deno.test("IoUring: a bad fd gives -EBADF in the CQE", () => {
  withRing(4, (ring) => {
    const buf = bytes(64);
    const iov = new IovecArray(1);
    iov.set(0, pointerValue(buf), 64);
    assert.ok(ring.prepReadv(999_999, iov.bufferAddress, 1, 0, 11));
    assert.ok(ring.prepWritev(999_999, iov.bufferAddress, 1, 0, 0, 12));
    assert.ok(ring.prepFsync(999_999, 0, 13));
    assert.ok(ring.prepFallocate(999_999, 0, 0, 1, 14));
    const cqes = complete(ring, 4).sort((x, y) => x.userData - y.userData);
    assert.deepEqual(cqes.map((c) => c.res), [-EBADF, -EBADF, -EBADF, -EBADF]);
  });
});

Deno.test("IoUring: the registered eventfd becomes readable on completion", () => {
  withRing(4, (ring) => {
    const efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      ring.registerEventfd(efd);
      assert.equal(pollFd(efd, POLLIN, 0), 0);
      ring.prepNop(1);
      ring.submit();
      assert.ok((pollFd(efd, POLLIN, 1000) & POLLIN) !== 0);
      assert.ok(eventfdRead(efd) >= 1);
      assert.equal(reapAll(ring).length, 1);
      ring.unregisterEventfd();
      ring.prepNop(2);
      complete(ring, 1);
      assert.equal(eventfdRead(efd), 0);
    } finally {
      closeFd(efd);
    }
  });
});

Deno.test("IoUring: 1000 reads through a 32-entry ring (SQ full, submit, retry)", () => {
  withRing(32, (ring, dir) => {
    const fd = openFile(`${dir}/f`, O_RDWR | O_CREAT, 0o600);
    try {
      const data = pattern(1000 * 64, 5);
      pwrite(fd, data, 0);
      const buf = bytes(1000 * 64);
      const iovs: IovecArray[] = [];
      for (let i = 0; i < 1000; i++) {
        const iov = new IovecArray(1);
        iov.set(0, pointerValue(buf) + i * 64, 64);
        iovs.push(iov);
      }
      const seen = new Uint8Array(1000);
      let reaped = 0;
      const onCqe = (userData: number, res: number) => {
        assert.equal(res, 64);
        seen[userData]++;
        reaped++;
      };
      let next = 0;
      let fullSeen = false;
      while (reaped < 1000) {
        while (next < 1000) {
          if (!ring.prepReadv(fd, iovs[next].bufferAddress, 1, next * 64, next)) {
            fullSeen = true;
            break;
          }
          next++;
        }
        ring.submit(1);
        ring.reap(onCqe);
      }
      assert.ok(fullSeen, "the SQ ring filled up at least once");
      assert.ok(seen.every((n) => n === 1));
      assert.deepEqual(buf, data);
    } finally {
      closeFd(fd);
    }
  });
});

Deno.test("IoUring: completions beyond the CQ ring overflow and are still reaped", () => {
  withRing(8, (ring) => {
    assert.equal(ring.cqEntries, 16);
    if ((ring.features & IORING_FEAT_NODROP) === 0) return; // pre-5.5 kernels drop them
    for (let batch = 0; batch < 5; batch++) {
      for (let i = 0; i < 8; i++) assert.ok(ring.prepNop(batch * 8 + i));
      assert.equal(ring.prepNop(999), false, "the SQ ring is full");
      ring.submit();
    }
    // 40 completions for a 16-entry CQ ring: 24 wait in the kernel.
    assert.equal(ring.cqReady, 16);
    assert.ok(ring.cqOverflowPending);
    const cqes = reapAll(ring);
    assert.equal(cqes.length, 40);
    assert.deepEqual(cqes.map((c) => c.userData).sort((x, y) => x - y), [...Array(40).keys()]);
    assert.equal(ring.cqOverflowPending, false);
    assert.equal(ring.cqDropped, 0);
  });
});

Deno.test("IoUring: a handler may submit and reap re-entrantly", () => {
  withRing(4, (ring) => {
    const order: number[] = [];
    ring.prepNop(1);
    ring.submit(1);
    ring.reap((userData) => {
      order.push(userData);
      if (userData === 1) {
        ring.prepNop(2);
        ring.submit(1);
        ring.reap((inner) => order.push(inner * 10));
      }
    });
    assert.deepEqual(order, [1, 20]);
  });
});
