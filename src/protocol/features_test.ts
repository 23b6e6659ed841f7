import assert from "node:assert/strict";
import { bit, featureNames, hasBit, maskOf, ProtocolFeature, VirtioFeature } from "./features.ts";

Deno.test("protocol feature bits 0..19 are distinct and in order", () => {
  assert.deepEqual(Object.values(ProtocolFeature), Array.from({ length: 20 }, (_, i) => i));
  assert.equal(ProtocolFeature.CONFIG, 9);
  assert.equal(ProtocolFeature.DEVICE_STATE, 19);
});

Deno.test("virtio feature bits owned by the back-end", () => {
  assert.deepEqual(VirtioFeature, {
    LOG_ALL: 26,
    RING_INDIRECT_DESC: 28,
    RING_EVENT_IDX: 29,
    PROTOCOL_FEATURES: 30,
    VERSION_1: 32,
  });
});

Deno.test("bit builds single-bit masks and refuses bits outside 0..63", () => {
  assert.equal(bit(0), 1n);
  assert.equal(bit(32), 0x1_0000_0000n);
  assert.equal(bit(63), 0x8000_0000_0000_0000n);
  assert.throws(() => bit(64), RangeError);
  assert.throws(() => bit(-1), RangeError);
  assert.throws(() => bit(1.5), RangeError);
});

Deno.test("hasBit and maskOf agree", () => {
  const mask = maskOf([ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, VirtioFeature.VERSION_1]);
  assert.equal(mask, 0x1_0000_0009n);
  assert.equal(hasBit(mask, 0), true);
  assert.equal(hasBit(mask, 3), true);
  assert.equal(hasBit(mask, 32), true);
  assert.equal(hasBit(mask, 1), false);
  assert.equal(maskOf([]), 0n);
});

Deno.test("featureNames lists set bits lowest first, unknown ones as 'bit N'", () => {
  const mask = maskOf([VirtioFeature.VERSION_1, VirtioFeature.LOG_ALL, 40, 0]);
  assert.deepEqual(featureNames(mask, VirtioFeature), ["bit 0", "LOG_ALL", "VERSION_1", "bit 40"]);
  assert.deepEqual(featureNames(0n, ProtocolFeature), []);
  assert.deepEqual(
    featureNames(maskOf([ProtocolFeature.CONFIG, ProtocolFeature.DEVICE_STATE]), ProtocolFeature),
    ["CONFIG", "DEVICE_STATE"],
  );
});
