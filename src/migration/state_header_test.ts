import assert from "node:assert/strict";
import { StateFormatError } from "./errors.ts";
import { HEADER_LENGTH, HeaderOffset } from "./state_format.ts";
import { checkHeaderPrefix, checkKind, decodeHeader, encodeHeader } from "./state_header.ts";

const print = new Uint8Array(32).map((_, i) => i * 7);

Deno.test("header encodes the documented layout and decodes back", () => {
  const bytes = encodeHeader("fs", print, 2 ** 40 + 5);
  assert.equal(bytes.length, HEADER_LENGTH);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 8)), "VHOSTDST");
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint16(8, true), 1);
  assert.equal(view.getUint16(10, true), 80);
  assert.deepEqual([...bytes.subarray(16, 20)], [0x66, 0x73, 0, 0]);
  assert.equal(view.getBigUint64(64, true), 2n ** 40n + 5n);
  assert.equal(checkHeaderPrefix(bytes.subarray(0, 12)), 80);
  assert.deepEqual(decodeHeader(bytes), {
    formatVersion: 1,
    kind: "fs",
    fingerprint: print,
    createdAt: 2 ** 40 + 5,
  });
  assert.deepEqual(decodeHeader(encodeHeader("x".repeat(16), print, 0)).kind, "x".repeat(16));
});

Deno.test("writing refuses bad kinds, fingerprints and times", () => {
  for (const kind of ["", "a".repeat(17), "has space", "nul\0", "é"]) {
    assert.throws(() => checkKind(kind), RangeError, JSON.stringify(kind));
  }
  assert.throws(() => encodeHeader("blk", new Uint8Array(31), 0), /32 bytes/);
  assert.throws(() => encodeHeader("blk", print, -1), /createdAt/);
});

Deno.test("decoding refuses a malformed kind and an impossible time", () => {
  const refuse = (edit: (b: Uint8Array, v: DataView) => void, message: RegExp) => {
    const bytes = encodeHeader("blk", print, 1);
    edit(bytes, new DataView(bytes.buffer));
    assert.throws(
      () => decodeHeader(bytes),
      (e) => e instanceof StateFormatError && message.test(e.message),
    );
  };
  refuse((b) => (b[HeaderOffset.KIND + 5] = 0x41), /not NUL-padded ASCII/);
  refuse((b) => (b[HeaderOffset.KIND + 1] = 0x09), /not NUL-padded ASCII/);
  refuse((b) => b.fill(0, HeaderOffset.KIND, HeaderOffset.KIND + 16), /kind is empty/);
  refuse((_, v) => v.setUint32(HeaderOffset.CREATED_AT + 4, 0x0020_0000, true), /out of range/);
});
