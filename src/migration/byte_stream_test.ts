import assert from "node:assert/strict";
import {
  closeFd,
  eventfd,
  eventfdWrite,
  ftruncate,
  memfdCreate,
  pipe2,
  setNonBlocking,
} from "../../ffi/mod.ts";
import {
  CountingSink,
  FdSink,
  FdSource,
  MemorySink,
  MemorySource,
  TransferCancelled,
} from "./byte_stream.ts";
import { StateStreamError } from "./errors.ts";

Deno.test("MemorySink keeps every byte across growth", () => {
  const sink = new MemorySink();
  const expected: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const piece = new Uint8Array(i % 97).fill(i & 0xff);
    sink.write(piece);
    expected.push(...piece);
  }
  assert.equal(sink.length, expected.length);
  assert.deepEqual(sink.bytes(), new Uint8Array(expected));
});

Deno.test("MemorySource honours maxRead and ends with 0", () => {
  const source = new MemorySource(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 4);
  const into = new Uint8Array(8);
  assert.equal(source.read(into), 4);
  assert.deepEqual(into.subarray(0, 4), new Uint8Array([1, 2, 3, 4]));
  assert.equal(source.read(into.subarray(0, 3)), 3);
  assert.equal(source.read(into), 3);
  assert.deepEqual(into.subarray(0, 3), new Uint8Array([8, 9, 10]));
  assert.equal(source.read(into), 0);
  assert.equal(source.position, 10);
  assert.throws(() => new MemorySource(new Uint8Array(1), 0), RangeError);
});

Deno.test("CountingSink forwards, counts and reports progress", () => {
  const inner = new MemorySink();
  const seen: number[] = [];
  const sink = new CountingSink(inner, (n) => seen.push(n));
  sink.write(new Uint8Array(3));
  sink.write(new Uint8Array([9]));
  assert.equal(sink.bytes, 4);
  assert.deepEqual(seen, [3, 4]);
  assert.deepEqual(inner.bytes(), new Uint8Array([0, 0, 0, 9]));
  const discarding = new CountingSink();
  discarding.write(new Uint8Array(10));
  assert.equal(discarding.bytes, 10);
});

Deno.test("FdSink and FdSource move bytes through a pipe and see its end", () => {
  const [readEnd, writeEnd] = pipe2();
  try {
    const data = new Uint8Array(5000).map((_, i) => i * 31);
    new FdSink(writeEnd).write(data);
    closeFd(writeEnd);
    const source = new FdSource(readEnd);
    const got = new Uint8Array(6000);
    let length = 0;
    for (let n = source.read(got); n > 0; n = source.read(got.subarray(length))) length += n;
    assert.deepEqual(got.subarray(0, length), data);
    assert.equal(source.read(got), 0);
  } finally {
    closeFd(readEnd);
  }
});

Deno.test("FdSink reports a closed peer as 'peer closed the stream'", () => {
  const [readEnd, writeEnd] = pipe2();
  closeFd(readEnd);
  try {
    assert.throws(
      () => new FdSink(writeEnd).write(new Uint8Array(10)),
      (e) => e instanceof StateStreamError && e.message === "peer closed the stream",
    );
  } finally {
    closeFd(writeEnd);
  }
});

Deno.test("a bad fd gives StateStreamError with the errno", () => {
  assert.throws(
    () => new FdSource(-1).read(new Uint8Array(4)),
    (e) => e instanceof StateStreamError && /EBADF/.test(e.message),
  );
  assert.throws(
    () => new FdSink(-1).write(new Uint8Array(4)),
    (e) => e instanceof StateStreamError && /EBADF/.test(e.message),
  );
});

Deno.test("a wait for a silent pipe ends when the cancel fd fires, or after stallMs", () => {
  const [r, w] = pipe2();
  const cancel = eventfd(0);
  try {
    setNonBlocking(r, true);
    setNonBlocking(w, true);
    // Empty pipe, writer held open: the read waits, and the cancel fd ends the wait.
    eventfdWrite(cancel, 1);
    assert.throws(
      () => new FdSource(r, { cancelFd: cancel }).read(new Uint8Array(16)),
      (e) => e instanceof TransferCancelled,
    );
    // Full pipe, reader held open: the write waits, and is cancelled too.
    const sink = new FdSink(w, { cancelFd: cancel });
    assert.throws(() => sink.write(new Uint8Array(4 << 20)), (e) => e instanceof TransferCancelled);
    // Without a cancel, the no-progress bound ends the wait.
    const started = performance.now();
    assert.throws(
      () => new FdSink(w, { stallMs: 100 }).write(new Uint8Array(16)),
      (e) => e instanceof StateStreamError && /no progress on state fd/.test(e.message),
    );
    assert.ok(performance.now() - started >= 90);
  } finally {
    closeFd(r);
    closeFd(w);
    closeFd(cancel);
  }
});

Deno.test("a source that never has to wait still sees the cancel fd", () => {
  const fd = memfdCreate("cancel-test");
  const cancel = eventfd(0);
  try {
    ftruncate(fd, 1 << 20);
    eventfdWrite(cancel, 1);
    const source = new FdSource(fd, { cancelFd: cancel });
    let reads = 0;
    assert.throws(() => {
      for (;;) {
        source.read(new Uint8Array(1));
        reads++;
      }
    }, (e) => e instanceof TransferCancelled);
    assert.ok(reads < 1000, `${reads} reads before the cancel was seen`);
  } finally {
    closeFd(fd);
    closeFd(cancel);
  }
});

Deno.test("FdSink.spliceFrom moves file bytes into a pipe; false where splice cannot; a closed peer", () => {
  const file = memfdCreate("splice-from");
  const [readEnd, writeEnd] = pipe2();
  let readOpen = true;
  try {
    const data = new Uint8Array(100_000).map((_, i) => (i * 13) & 0xff);
    new FdSink(file).write(data);
    assert.equal(new FdSink(writeEnd).spliceFrom(file, 1000, 30_000), true);
    const got = new Uint8Array(30_000);
    const source = new FdSource(readEnd);
    for (let length = 0; length < got.length;) length += source.read(got.subarray(length));
    assert.deepEqual(got, data.subarray(1000, 31_000));

    // File to file: no pipe, so splice cannot; nothing was moved.
    const other = memfdCreate("splice-to");
    try {
      assert.equal(new FdSink(other).spliceFrom(file, 0, 100), false);
    } finally {
      closeFd(other);
    }
    // More than the 64 KiB pipe holds, on a non-blocking fd: it waits (here until the stall limit).
    setNonBlocking(writeEnd, true);
    assert.throws(
      () => new FdSink(writeEnd, { stallMs: 20 }).spliceFrom(file, 0, 100_000),
      (e) => e instanceof StateStreamError && /no progress/.test(e.message),
    );
    closeFd(readEnd);
    readOpen = false;
    assert.throws(
      () => new FdSink(writeEnd).spliceFrom(file, 0, 10),
      (e) => e instanceof StateStreamError && e.message === "peer closed the stream",
    );
  } finally {
    closeFd(file);
    closeFd(writeEnd);
    if (readOpen) closeFd(readEnd);
  }
});
