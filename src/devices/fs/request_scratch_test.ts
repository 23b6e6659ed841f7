import assert from "node:assert/strict";
import { RequestScratch } from "./request_scratch.ts";

Deno.test("RequestScratch.zeroed never shows what an earlier request left", () => {
  const scratch = new RequestScratch(64);
  scratch.unzeroed().fill(0xab);
  const view = scratch.zeroed(40);
  assert.equal(view.byteLength, 40);
  assert.deepEqual([...view], new Array(40).fill(0));
  // Beyond the view the old bytes are still there: only what is handed on is cleared.
  assert.equal(scratch.unzeroed()[40], 0xab);
});

Deno.test("RequestScratch hands out one buffer, and a new one past its capacity", () => {
  const scratch = new RequestScratch(32);
  assert.equal(scratch.capacity, 32);
  const first = scratch.unzeroed(16);
  const second = scratch.unzeroed(8);
  assert.equal(first.buffer, second.buffer, "the same backing buffer each time");
  assert.equal(second.byteOffset, 0);
  assert.equal(scratch.unzeroed().byteLength, 32);
  const big = scratch.zeroed(33);
  assert.equal(big.byteLength, 33);
  assert.notEqual(big.buffer, first.buffer);
  assert.notEqual(scratch.unzeroed(100).buffer, first.buffer);
});

Deno.test("RequestScratch.viewOf gives the kept view for its own bytes, a fitting one otherwise", () => {
  const scratch = new RequestScratch(32);
  assert.equal(scratch.viewOf(scratch.unzeroed(16)), scratch.view);
  const other = new Uint8Array(24).subarray(8);
  const view = scratch.viewOf(other);
  assert.notEqual(view, scratch.view);
  assert.equal(view.byteOffset, 8);
  assert.equal(view.byteLength, 16);
  assert.notEqual(scratch.viewOf(scratch.unzeroed().subarray(4)), scratch.view, "not at its start");
});

Deno.test("RequestScratch.unzeroed keeps one view per small length: no new object per reply", () => {
  const scratch = new RequestScratch(4096);
  const entry = scratch.unzeroed(144);
  assert.equal(scratch.unzeroed(16).byteLength, 16);
  assert.equal(scratch.unzeroed(144), entry, "the same view again");
  assert.equal(entry.byteLength, 144);
  const long = scratch.unzeroed(2048);
  assert.equal(long.byteLength, 2048);
  assert.equal(long.buffer, entry.buffer);
});
