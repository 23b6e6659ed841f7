import assert from "node:assert/strict";
import { closeQuietly, pipe2, pread, pwrite, readFd, writeAll } from "./fd.ts";
import { EINVAL, SyscallError } from "./errno.ts";
import { ftruncate, memfdCreate } from "./memory.ts";
import { pipeBytesQueued, splice } from "./splice.ts";

Deno.test("splice: from a memfd at an offset into a pipe, and from the pipe into a memfd at an offset", () => {
  const source = memfdCreate("splice-source");
  const target = memfdCreate("splice-target");
  const [r, w] = pipe2();
  try {
    const data = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 7 + 3) & 0xff);
    assert.equal(pwrite(source, data, 0), data.length);
    // From offset 1000: 5000 bytes, without moving the memfd's own offset.
    let moved = 0;
    while (moved < 5000) moved += splice(source, 1000 + moved, w, undefined, 5000 - moved);
    const head = new Uint8Array(100);
    assert.equal(readFd(r, head), 100);
    assert.deepEqual(head, data.subarray(1000, 1100));
    ftruncate(target, 8192);
    let written = 0;
    while (written < 4900) written += splice(r, undefined, target, 3000 + written, 4900 - written);
    const back = new Uint8Array(4900);
    assert.equal(pread(target, back, 3000), 4900);
    assert.deepEqual(back, data.subarray(1100, 6000));
    // End of input: the write end closed and the pipe empty.
    closeQuietly(w);
    assert.equal(splice(r, undefined, target, 0, 100), 0);
  } finally {
    closeQuietly(source);
    closeQuietly(target);
    closeQuietly(r);
    closeQuietly(w);
  }
});

Deno.test("splice: two files (no pipe) is EINVAL, for the caller's read-and-write fallback", () => {
  const a = memfdCreate("splice-a");
  const b = memfdCreate("splice-b");
  try {
    writeAll(a, new Uint8Array(16).fill(1));
    assert.throws(
      () => splice(a, 0, b, 0, 16),
      (e) => e instanceof SyscallError && e.errno === EINVAL,
    );
  } finally {
    closeQuietly(a);
    closeQuietly(b);
  }
});

Deno.test("pipeBytesQueued: what is in a pipe, seen from either end", () => {
  const [r, w] = pipe2();
  try {
    assert.equal(pipeBytesQueued(w), 0);
    writeAll(w, new Uint8Array(1000));
    assert.equal(pipeBytesQueued(w), 1000);
    assert.equal(pipeBytesQueued(r), 1000);
    readFd(r, new Uint8Array(600));
    assert.equal(pipeBytesQueued(w), 400);
  } finally {
    closeQuietly(r);
    closeQuietly(w);
  }
});
