import assert from "node:assert/strict";
import { ProtocolError } from "./errors.ts";
import {
  decodeHeader,
  encodeMessage,
  encodeReply,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  flagsVersion,
  HEADER_SIZE,
  isReply,
  MAX_PAYLOAD_SIZE,
  needsReply,
  replyFlags,
  VHOST_USER_VERSION,
} from "./header.ts";

Deno.test("encodeMessage lays out a little-endian header followed by the payload", () => {
  const message = encodeMessage(0x0102_0304, 0x9, new Uint8Array([0xaa, 0xbb, 0xcc]));
  assert.deepEqual(
    [...message],
    [0x04, 0x03, 0x02, 0x01, 0x09, 0, 0, 0, 3, 0, 0, 0, 0xaa, 0xbb, 0xcc],
  );
});

Deno.test("encodeMessage without a payload is a bare header with size 0", () => {
  const message = encodeMessage(1, VHOST_USER_VERSION);
  assert.equal(message.byteLength, HEADER_SIZE);
  assert.deepEqual(decodeHeader(message), { request: 1, flags: 1, size: 0 });
});

Deno.test("decodeHeader round-trips and ignores bytes after the header", () => {
  const message = encodeMessage(42, 0xd, new Uint8Array(8).fill(7));
  assert.deepEqual(decodeHeader(message), { request: 42, flags: 0xd, size: 8 });
});

Deno.test("decodeHeader reads from a view that does not start its buffer", () => {
  const backing = new Uint8Array(40);
  backing.set(encodeMessage(11, 1, new Uint8Array(8)), 5);
  const header = decodeHeader(backing.subarray(5));
  assert.deepEqual(header, { request: 11, flags: 1, size: 8 });
});

Deno.test("decodeHeader refuses fewer than 12 bytes", () => {
  assert.throws(() => decodeHeader(new Uint8Array(11)), ProtocolError);
  assert.throws(() => decodeHeader(new Uint8Array(0)), /0 bytes, expected 12/);
});

Deno.test("encodeMessage refuses out-of-range fields and oversized payloads", () => {
  assert.throws(() => encodeMessage(-1, 1), RangeError);
  assert.throws(() => encodeMessage(2 ** 32, 1), RangeError);
  assert.throws(() => encodeMessage(1, 1.5), RangeError);
  assert.throws(() => encodeMessage(1, 1, new Uint8Array(MAX_PAYLOAD_SIZE + 1)), RangeError);
  assert.equal(encodeMessage(1, 1, new Uint8Array(MAX_PAYLOAD_SIZE)).byteLength, 4108);
});

Deno.test("reply flags are exactly 0x5 and encodeReply uses them", () => {
  assert.equal(replyFlags(), 0x5);
  const reply = decodeHeader(encodeReply(15, new Uint8Array(8)));
  assert.deepEqual(reply, { request: 15, flags: 0x5, size: 8 });
});

Deno.test("flag helpers read the version, REPLY and NEED_REPLY bits", () => {
  assert.equal(flagsVersion(0xd), 1);
  assert.equal(flagsVersion(0x2), 2);
  assert.equal(isReply(FLAG_REPLY | 1), true);
  assert.equal(isReply(FLAG_NEED_REPLY | 1), false);
  assert.equal(needsReply(FLAG_NEED_REPLY | 1), true);
  assert.equal(needsReply(1), false);
});
