import assert from "node:assert/strict";
import { FuseProtocolError } from "./fuse_errors.ts";
import { defineStruct, readStruct, writeStruct, writeStructToView } from "./fuse_struct.ts";

const INNER = defineStruct("inner", [["a", "u16"], ["b", "u64"]]);
const OUTER = defineStruct("outer", [
  ["tag", "u16"],
  ["inner", INNER],
  ["count", "u32"],
  ["reserved", "u16", 3],
  ["signed", "i64"],
  ["delta", "i32"],
]);

Deno.test("defineStruct aligns each field naturally and pads the tail", () => {
  assert.deepEqual(INNER.offsets, { a: 0, b: 8 });
  assert.equal(INNER.size, 16);
  assert.equal(INNER.align, 8);
  // tag@0, inner aligned to 8 -> 8..24, count@24, reserved u16[3]@28..34, signed aligned to 8 -> 40, delta@48, tail -> 56
  assert.deepEqual(OUTER.offsets, {
    tag: 0,
    inner: 8,
    count: 24,
    reserved: 28,
    signed: 40,
    delta: 48,
  });
  assert.equal(OUTER.size, 56);
  assert.equal(defineStruct("tail", [["x", "u64"], ["y", "u32"]]).size, 16);
  assert.equal(defineStruct("small", [["x", "u16"], ["y", "u16"]]).size, 4);
});

Deno.test("defineStruct refuses a field declared twice", () => {
  assert.throws(() => defineStruct("dup", [["x", "u32"], ["x", "u32"]]), /declared twice/);
});

Deno.test("writeStruct then readStruct round-trips nested and signed values little-endian", () => {
  const value = {
    tag: 0xbeef,
    inner: { a: 7, b: 0xffff_ffff_ffff_fffen },
    count: 0xffff_ffff,
    signed: -2n,
    delta: -5,
  };
  const bytes = writeStruct(OUTER, value);
  assert.equal(bytes.byteLength, 56);
  assert.deepEqual([...bytes.subarray(0, 2)], [0xef, 0xbe]);
  assert.deepEqual([...bytes.subarray(40, 48)], [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(readStruct(OUTER, bytes), value);
});

Deno.test("writeStruct zeroes reserved fields, gaps and tail padding, and nothing outside", () => {
  const target = new Uint8Array(72).fill(0xff);
  writeStruct(OUTER, { tag: 1, inner: { a: 2, b: 3n }, count: 4, signed: 5, delta: 6 }, target, 8);
  assert.deepEqual([...target.subarray(8 + 28, 8 + 34)], [0, 0, 0, 0, 0, 0], "reserved");
  assert.deepEqual([...target.subarray(8 + 2, 8 + 8)], [0, 0, 0, 0, 0, 0], "gap before inner");
  assert.deepEqual([...target.subarray(8 + 52, 8 + 56)], [0, 0, 0, 0], "tail padding");
  assert.equal(target[0], 0xff, "bytes before the struct are untouched");
  assert.equal(target[8 + 56], 0xff, "bytes after the struct are untouched");
});

Deno.test("readStruct reads from views that do not start their buffer and refuses short input", () => {
  const backing = new Uint8Array(40);
  writeStruct(INNER, { a: 9, b: 10n }, backing, 13);
  assert.deepEqual(readStruct(INNER, backing.subarray(13)), { a: 9, b: 10n });
  assert.deepEqual(readStruct(INNER, backing, 13), { a: 9, b: 10n });
  assert.throws(() => readStruct(INNER, backing.subarray(13, 28)), FuseProtocolError);
  assert.throws(() => readStruct(INNER, backing, 25), FuseProtocolError);
  assert.throws(() => readStruct(INNER, backing, -1), FuseProtocolError);
});

Deno.test("writeStruct refuses values that do not fit and targets that are too small", () => {
  const ok = { a: 1, b: 1n };
  assert.throws(() => writeStruct(INNER, { ...ok, a: 0x1_0000 }), RangeError);
  assert.throws(() => writeStruct(INNER, { ...ok, a: -1 }), RangeError);
  assert.throws(() => writeStruct(INNER, { ...ok, a: 1.5 }), RangeError);
  assert.throws(() => writeStruct(INNER, { ...ok, b: -1n }), RangeError);
  assert.throws(() => writeStruct(INNER, { ...ok, b: 1n << 64n }), RangeError);
  assert.throws(() => writeStruct(INNER, { ...ok, b: 2 ** 60 }), RangeError, "unsafe number");
  assert.throws(() => writeStruct(INNER, ok, new Uint8Array(15)), RangeError);
  assert.throws(() => writeStruct(INNER, ok, new Uint8Array(16), 1), RangeError);
  const signed = defineStruct("signed", [["t", "i64"], ["e", "i32"]]);
  assert.throws(() => writeStruct(signed, { t: 1n << 63n, e: 0 }), RangeError);
  assert.throws(() => writeStruct(signed, { t: 0, e: 0x8000_0000 }), RangeError);
  assert.deepEqual(readStruct(signed, writeStruct(signed, { t: -(1n << 63n), e: -0x8000_0000 })), {
    t: -(1n << 63n),
    e: -0x8000_0000,
  });
});

Deno.test("writeStruct writes 64-bit numbers as BigInt would, negative i64 included", () => {
  const wide = defineStruct("wide", [["u", "u64"], ["s", "i64"]]);
  for (
    const [u, s] of [[0, 0], [2 ** 32 + 5, -1], [2 ** 53 - 1, -(2 ** 53 - 1)], [1, -(2 ** 32)]]
  ) {
    const fromNumbers = writeStruct(wide, { u, s });
    const fromBigInts = writeStruct(wide, { u: BigInt(u), s: BigInt(s) });
    assert.deepEqual([...fromNumbers], [...fromBigInts], `u=${u} s=${s}`);
    assert.deepEqual(readStruct(wide, fromNumbers), { u: BigInt(u), s: BigInt(s) });
  }
  assert.throws(() => writeStruct(wide, { u: -1, s: 0 }), /wide\.u: -1 is out of range/);
  assert.throws(() => writeStruct(wide, { u: 0, s: 2 ** 53 }), /wide\.s: .* not a bigint/);
});

Deno.test("writeStructToView zeroes gaps and reserved fields of a reused buffer, nothing outside", () => {
  const buffer = new Uint8Array(72).fill(0xff);
  const view = new DataView(buffer.buffer);
  const value = { tag: 1, inner: { a: 2, b: 3n }, count: 4, signed: -5, delta: 6 };
  writeStructToView(OUTER, value, view, 8);
  assert.deepEqual([...buffer.subarray(8, 64)], [...writeStruct(OUTER, value)]);
  assert.equal(buffer[7], 0xff);
  assert.equal(buffer[64], 0xff);
  assert.deepEqual(readStruct(OUTER, buffer, 8), { ...value, signed: -5n });
  assert.throws(() => writeStructToView(OUTER, value, view, 17), RangeError);
});

Deno.test("readStruct and writeStruct use the view's own place, whichever buffer came before", () => {
  const first = new Uint8Array(64);
  const second = new Uint8Array(64);
  // Views into the middle of two buffers, used alternately (the kept whole-buffer views switch).
  const a = first.subarray(16);
  const b = second.subarray(8, 40);
  writeStruct(INNER, { a: 1, b: 2n }, a, 4);
  writeStruct(INNER, { a: 3, b: 4n }, b, 0);
  writeStruct(INNER, { a: 5, b: 6n }, a, 24);
  assert.deepEqual(readStruct(INNER, first, 20), { a: 1, b: 2n });
  assert.deepEqual(readStruct(INNER, second, 8), { a: 3, b: 4n });
  assert.deepEqual(readStruct(INNER, a, 24), { a: 5, b: 6n });
  assert.deepEqual(readStruct(INNER, b), { a: 3, b: 4n });
  assert.throws(() => readStruct(INNER, b, 17), FuseProtocolError, "bounds are the view's");
  assert.throws(() => writeStruct(INNER, { a: 0, b: 0n }, b, 17), RangeError);
  assert.deepEqual([...second.subarray(0, 8)], new Array(8).fill(0), "nothing before the view");
});
