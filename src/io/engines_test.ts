import assert from "node:assert/strict";
import {
  closeFd,
  EBADF,
  EINVAL,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  IovecArray,
  O_CREAT,
  O_DIRECT,
  O_RDWR,
  openFile,
  pointerValue,
  pollFd,
  POLLIN,
  pwrite,
} from "../../ffi/mod.ts";
import type { FileIoEngine } from "./file_io_engine.ts";
import { SyncFileIoEngine } from "./sync_engine.ts";
import { UringFileIoEngine } from "./uring_engine.ts";

const FILE_SIZE = 256 * 1024;
const BAD_FD = 999_999;

/** Small deterministic PRNG (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}

function bytes(length: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(length));
}

type Op =
  | { kind: "read"; fd: "file" | "bad"; offset: number; lengths: number[]; overCount: boolean }
  | { kind: "write"; fd: "file" | "bad"; offset: number; data: Uint8Array; dsync: boolean }
  | { kind: "fsync"; fd: "file" | "bad"; dataOnly: boolean }
  | { kind: "fallocate"; fd: "file" | "bad"; mode: number; offset: number; length: number };

function randomOp(next: () => number): Op {
  const pick = (n: number) => Math.floor(next() * n);
  const fd = pick(40) === 0 ? "bad" : "file";
  const choice = pick(20);
  if (choice < 9) {
    const lengths = Array.from({ length: 1 + pick(4) }, () => pick(5) === 0 ? 0 : 1 + pick(6000));
    // Some reads start near or past the end of the file.
    return { kind: "read", fd, offset: pick(FILE_SIZE + 8192), lengths, overCount: pick(50) === 0 };
  }
  if (choice < 16) {
    const data = bytes(1 + pick(12000));
    for (let i = 0; i < data.length; i++) data[i] = pick(256);
    return {
      kind: "write",
      fd,
      offset: pick(FILE_SIZE - data.length),
      data,
      dsync: pick(4) === 0,
    };
  }
  if (choice < 17) return { kind: "fsync", fd, dataOnly: pick(2) === 0 };
  const modes = [
    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_KEEP_SIZE,
  ];
  const length = 1 + pick(40000);
  return {
    kind: "fallocate",
    fd,
    mode: modes[pick(modes.length)],
    offset: pick(FILE_SIZE - length),
    length,
  };
}

function range(op: Op): [number, number] | undefined {
  switch (op.kind) {
    case "read":
      return [op.offset, op.offset + op.lengths.reduce((a, b) => a + b, 0)];
    case "write":
      return [op.offset, op.offset + op.data.length];
    case "fallocate":
      return [op.offset, op.offset + op.length];
    case "fsync":
      return undefined;
  }
}

/** True when running `a` and `b` concurrently could give another result than in order. */
function conflicts(a: Op, b: Op): boolean {
  if (a.kind === "read" && b.kind === "read") return false;
  const ra = range(a);
  const rb = range(b);
  if (ra === undefined || rb === undefined) return false;
  return ra[0] < rb[1] && rb[0] < ra[1];
}

interface Outcome {
  result: number | undefined;
  data?: Uint8Array;
}

/** Starts `op` on `engine`; the outcome fills in when its completion runs. */
function start(engine: FileIoEngine, fd: number, op: Op): Outcome {
  const outcome: Outcome = { result: undefined };
  const target = op.fd === "bad" ? BAD_FD : fd;
  const done = (r: number) => {
    assert.equal(outcome.result, undefined, "completion ran twice");
    outcome.result = r;
  };
  switch (op.kind) {
    case "read": {
      const total = op.lengths.reduce((a, b) => a + b, 0);
      const buf = bytes(Math.max(total, 1));
      const iov = new IovecArray(op.lengths.length);
      let at = pointerValue(buf);
      op.lengths.forEach((length, i) => {
        iov.set(i, at, length);
        at += length;
      });
      outcome.data = buf;
      engine.readv(target, iov, op.lengths.length + (op.overCount ? 1 : 0), op.offset, done);
      break;
    }
    case "write": {
      // Split in up to three iovecs to exercise multi-entry transfers.
      const iov = new IovecArray(3);
      const third = Math.floor(op.data.length / 3);
      const base = pointerValue(op.data);
      iov.set(0, base, third);
      iov.set(1, base + third, third);
      iov.set(2, base + 2 * third, op.data.length - 2 * third);
      engine.writev(target, iov, 3, op.offset, op.dsync, done);
      break;
    }
    case "fsync":
      engine.fsync(target, op.dataOnly, done);
      break;
    case "fallocate":
      engine.fallocate(target, op.mode, op.offset, op.length, done);
      break;
  }
  return outcome;
}

function drain(engine: FileIoEngine): void {
  engine.submit();
  while (engine.inflight > 0) {
    assert.ok(pollFd(engine.completionFd!, POLLIN, 5000) & POLLIN, "no completion");
    engine.reap();
  }
}

for (const seed of [1, 2, 3]) {
  Deno.test(`both engines give identical results for a random mix of ops (seed ${seed})`, () => {
    const dir = Deno.makeTempDirSync({ prefix: "vhostd-engines-" });
    const next = random(seed);
    const initial = bytes(FILE_SIZE);
    for (let i = 0; i < FILE_SIZE; i++) initial[i] = (i * 7 + (i >> 12)) & 0xff;
    const syncFd = openFile(`${dir}/sync`, O_RDWR | O_CREAT, 0o600);
    const uringFd = openFile(`${dir}/uring`, O_RDWR | O_CREAT, 0o600);
    const sync = new SyncFileIoEngine();
    const uring = new UringFileIoEngine({ entries: 16 });
    try {
      pwrite(syncFd, initial, 0);
      pwrite(uringFd, initial, 0);
      let compared = 0;
      while (compared < 600) {
        // A batch of operations that do not depend on each other's order,
        // up to 48 of them: more than the 16-entry ring takes at once.
        const limit = 1 + Math.floor(next() * 48);
        const batch: Op[] = [];
        while (batch.length < limit) {
          const op = randomOp(next);
          if (batch.some((other) => conflicts(op, other))) break;
          batch.push(op);
        }
        if (batch.length === 0) continue;
        const uringOutcomes = batch.map((op) => start(uring, uringFd, op));
        drain(uring);
        for (let i = 0; i < batch.length; i++) {
          const op = batch[i];
          const expected = start(sync, syncFd, op);
          assert.notEqual(expected.result, undefined, "sync completion ran inside the call");
          const got = uringOutcomes[i];
          const what = `seed ${seed}, op ${compared}: ${
            JSON.stringify({ ...op, data: undefined })
          }`;
          assert.equal(got.result, expected.result, what);
          if (op.kind === "read" && expected.result! > 0) {
            assert.deepEqual(
              got.data!.subarray(0, expected.result),
              expected.data!.subarray(0, expected.result),
              what,
            );
          }
          compared++;
        }
      }
      assert.equal(uring.inflight, 0);
      assert.deepEqual(Deno.readFileSync(`${dir}/uring`), Deno.readFileSync(`${dir}/sync`));
    } finally {
      uring.close();
      sync.close();
      closeFd(syncFd);
      closeFd(uringFd);
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

Deno.test("both engines: bad fd, too many iovecs and O_DIRECT misalignment give the same errno", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhostd-engines-" });
  Deno.writeFileSync(`${dir}/direct`, new Uint8Array(8192).fill(1));
  const area = bytes(4096 * 3);
  const aligned = Math.ceil(pointerValue(area) / 4096) * 4096;
  const engines: FileIoEngine[] = [new SyncFileIoEngine(), new UringFileIoEngine({ entries: 4 })];
  let direct = -1;
  try {
    try {
      direct = openFile(`${dir}/direct`, O_RDWR | O_DIRECT, 0o600);
    } catch {
      // The filesystem has no O_DIRECT: the misaligned case is skipped below.
    }
    for (const engine of engines) {
      const run = (startOp: (done: (r: number) => void) => void): number => {
        let result: number | undefined;
        startOp((r) => result = r);
        drain(engine);
        return result!;
      };
      const iov = new IovecArray(1);
      iov.set(0, aligned, 4096);
      assert.equal(run((done) => engine.readv(BAD_FD, iov, 1, 0, done)), -EBADF, engine.kind);
      assert.equal(run((done) => engine.readv(3, iov, 2, 0, done)), -EINVAL, engine.kind);
      if (direct >= 0) {
        assert.equal(run((done) => engine.readv(direct, iov, 1, 0, done)), 4096, engine.kind);
        iov.set(0, aligned + 512 + 1, 4096);
        assert.equal(run((done) => engine.readv(direct, iov, 1, 0, done)), -EINVAL, engine.kind);
        iov.set(0, aligned, 4096);
        assert.equal(
          run((done) => engine.writev(direct, iov, 1, 1, false, done)),
          -EINVAL,
          `${engine.kind}: misaligned file offset`,
        );
      }
    }
  } finally {
    for (const engine of engines) engine.close();
    if (direct >= 0) closeFd(direct);
    Deno.removeSync(dir, { recursive: true });
  }
});
