import assert from "node:assert/strict";
import { GuestBufferPool } from "./buffer_pool.ts";

Deno.test("GuestBufferPool hands out aligned, disjoint buffers inside its range", () => {
  const pool = new GuestBufferPool(0x10000, 4096);
  const a = pool.alloc(100);
  const b = pool.alloc(1, 512);
  const c = pool.alloc(17);
  for (const gpa of [a, b, c]) {
    assert.ok(gpa >= 0x10000 && gpa < 0x11000, `0x${gpa.toString(16)} inside`);
    assert.equal(gpa % 16, 0);
  }
  assert.equal(b % 512, 0);
  const ranges = [[a, 112], [b, 16], [c, 32]].sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < ranges.length; i++) {
    assert.ok(ranges[i - 1][0] + ranges[i - 1][1] <= ranges[i][0], "no overlap");
  }
  assert.equal(pool.inUse, 3);
});

Deno.test("GuestBufferPool reuses freed space and merges neighbours", () => {
  const pool = new GuestBufferPool(0, 1024);
  const parts = [pool.alloc(256), pool.alloc(256), pool.alloc(256), pool.alloc(256)];
  assert.throws(() => pool.alloc(16), RangeError);
  pool.free(parts[1]);
  pool.free(parts[2]);
  // Only a merged 512-byte hole can hold this.
  assert.equal(pool.alloc(512), parts[1]);
  pool.free(parts[1]);
  pool.free(parts[0]);
  pool.free(parts[3]);
  assert.equal(pool.inUse, 0);
  assert.equal(pool.freeBytes(), 1024);
  assert.equal(pool.alloc(1024), 0, "everything merged back into one range");
});

Deno.test("GuestBufferPool refuses bad arguments and double frees", () => {
  assert.throws(() => new GuestBufferPool(8, 1024), RangeError);
  const pool = new GuestBufferPool(0, 1024);
  assert.throws(() => pool.alloc(0), RangeError);
  assert.throws(() => pool.alloc(2048), RangeError);
  const a = pool.alloc(64);
  pool.free(a);
  assert.throws(() => pool.free(a), RangeError);
  assert.throws(() => pool.free(12345), RangeError);
});

Deno.test("GuestBufferPool survives a long random alloc/free workload", () => {
  const pool = new GuestBufferPool(0, 64 * 1024);
  const live = new Map<number, number>();
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 5000; i++) {
    if (live.size > 0 && (random() < 0.5 || live.size > 40)) {
      const keys = [...live.keys()];
      const gpa = keys[Math.floor(random() * keys.length)];
      live.delete(gpa);
      pool.free(gpa);
    } else {
      const len = 1 + Math.floor(random() * 1500);
      const gpa = pool.alloc(len);
      for (const [other, otherLen] of live) {
        assert.ok(gpa + len <= other || other + otherLen <= gpa, "overlap");
      }
      live.set(gpa, len);
    }
  }
  for (const gpa of live.keys()) pool.free(gpa);
  assert.equal(pool.freeBytes(), 64 * 1024);
});
