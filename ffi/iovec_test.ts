import assert from "node:assert/strict";
import { IovecArray } from "./iovec.ts";

Deno.test("IovecArray packs 16-byte little-endian {base, len} entries", () => {
  const iov = new IovecArray(3);
  assert.equal(iov.capacity, 3);
  assert.equal(iov.buffer.length, 48);
  const base = 0x7f12_3456_7890; // above 2^32
  iov.set(1, base, 0x1_0000_0010);
  const view = new DataView(iov.buffer.buffer);
  assert.equal(view.getBigUint64(16, true), BigInt(base));
  assert.equal(view.getBigUint64(24, true), 0x1_0000_0010n);
  assert.equal(view.getBigUint64(0, true), 0n);
  assert.equal(iov.address(1), base);
  assert.equal(iov.length(1), 0x1_0000_0010);
  iov.set(0, 4096, 512);
  assert.equal(iov.totalLength(2), 512 + 0x1_0000_0010);
});

Deno.test("IovecArray refuses bad capacities and indexes", () => {
  assert.throws(() => new IovecArray(0), RangeError);
  assert.throws(() => new IovecArray(1.5), RangeError);
  const iov = new IovecArray(2);
  assert.throws(() => iov.set(2, 0, 0), RangeError);
  assert.throws(() => iov.set(-1, 0, 0), RangeError);
  assert.throws(() => iov.set(Number.NaN, 0, 0), RangeError);
});
