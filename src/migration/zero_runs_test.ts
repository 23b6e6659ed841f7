import assert from "node:assert/strict";
import { findDataRuns, isAllZero } from "./zero_runs.ts";

Deno.test("isAllZero finds a single non-zero byte anywhere, aligned or not", () => {
  const buffer = new Uint8Array(67);
  assert.ok(isAllZero(buffer));
  assert.ok(isAllZero(buffer.subarray(3, 3)));
  for (let i = 0; i < buffer.length; i++) {
    buffer[i] = 0x80;
    assert.ok(!isAllZero(buffer), `byte ${i}`);
    assert.equal(isAllZero(buffer.subarray(1)), i < 1, `unaligned view, byte ${i}`);
    buffer[i] = 0;
  }
});

Deno.test("findDataRuns merges consecutive data blocks and keeps a short last block", () => {
  const block = 8;
  const bytes = new Uint8Array(8 * block + 3);
  bytes[0] = 1; // block 0
  bytes[2 * block + 7] = 1; // block 2
  bytes[3 * block] = 1; // block 3 -> run 2..4
  bytes[8 * block + 2] = 1; // the short last block
  const runs: number[] = [];
  const count = findDataRuns(bytes, block, runs);
  assert.equal(count, 3);
  assert.deepEqual(runs.slice(0, 6), [0, 8, 16, 32, 64, 67]);
  assert.equal(findDataRuns(new Uint8Array(100), block, runs), 0);
  assert.equal(findDataRuns(new Uint8Array(20).fill(9), block, runs), 1);
  assert.deepEqual(runs.slice(0, 2), [0, 20]);
});

Deno.test("findDataRuns on unaligned views and blocks that are not whole words", () => {
  const backing = new Uint8Array(200);
  for (const offset of [0, 1, 3]) {
    for (const block of [8, 12, 20]) {
      const bytes = backing.subarray(offset, offset + 150);
      for (let i = 0; i < bytes.length; i++) {
        bytes.fill(0);
        bytes[i] = 5;
        const runs: number[] = [];
        assert.equal(
          findDataRuns(bytes, block, runs),
          1,
          `offset ${offset}, block ${block}, byte ${i}`,
        );
        const start = i - (i % block);
        assert.deepEqual(runs.slice(0, 2), [start, Math.min(start + block, bytes.length)]);
      }
    }
  }
});
