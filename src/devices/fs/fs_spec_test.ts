import assert from "node:assert/strict";
import {
  decodeFsConfig,
  encodeFsConfig,
  FS_CONFIG_SIZE,
  FS_TAG_LENGTH,
  FsConfigOffset,
  validateTag,
} from "./fs_spec.ts";

Deno.test("config space: tag NUL-padded, num_request_queues little-endian at 36", () => {
  const bytes = encodeFsConfig("share", 0x0102_0304);
  assert.equal(bytes.length, FS_CONFIG_SIZE);
  assert.deepEqual(bytes.subarray(0, 5), new TextEncoder().encode("share"));
  assert.ok(bytes.subarray(5, FS_TAG_LENGTH).every((b) => b === 0));
  assert.deepEqual(
    bytes.subarray(FsConfigOffset.numRequestQueues, FS_CONFIG_SIZE),
    Uint8Array.of(4, 3, 2, 1),
  );
  assert.deepEqual(decodeFsConfig(bytes), { tag: "share", numRequestQueues: 0x0102_0304 });
});

Deno.test("config space: a 36-byte tag fills the field without NUL; UTF-8 counts bytes", () => {
  const tag = "é".repeat(18);
  const bytes = encodeFsConfig(tag, 1);
  assert.ok(bytes.subarray(0, FS_TAG_LENGTH).every((b) => b !== 0));
  assert.equal(decodeFsConfig(bytes).tag, tag);
  assert.equal(validateTag("é".repeat(19)), "tag must be at most 36 bytes of UTF-8, got 38");
  assert.throws(() => encodeFsConfig("x".repeat(37), 1), RangeError);
});

Deno.test("tags: empty or with NUL are refused", () => {
  assert.equal(validateTag(""), "tag must not be empty");
  assert.equal(validateTag("a\0b"), "tag must not contain NUL");
  assert.equal(validateTag("myfs"), undefined);
  assert.throws(() => decodeFsConfig(new Uint8Array(39)), RangeError);
});
