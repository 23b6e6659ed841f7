import assert from "node:assert/strict";
import { getRandom } from "./random.ts";

Deno.test("getRandom fills the whole buffer, differently each time", () => {
  const a = new Uint8Array(4096);
  const b = new Uint8Array(4096);
  assert.equal(getRandom(a), 4096);
  assert.equal(getRandom(b), 4096);
  assert.notDeepEqual(a, b);
  // 4096 random bytes with fewer than 200 distinct values would mean a broken source.
  assert.ok(new Set(a).size > 200);
  assert.equal(getRandom(new Uint8Array(0)), 0);
});

Deno.test("getRandom writes into a subarray only", () => {
  const buf = new Uint8Array(64);
  getRandom(buf.subarray(16, 48));
  assert.ok(buf.subarray(0, 16).every((x) => x === 0));
  assert.ok(buf.subarray(48).every((x) => x === 0));
  assert.ok(buf.subarray(16, 48).some((x) => x !== 0));
});
