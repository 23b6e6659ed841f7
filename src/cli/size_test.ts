import assert from "node:assert/strict";
import { formatSize, parseSize } from "./size.ts";

Deno.test("parseSize accepts plain bytes and binary units", () => {
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("64K"), 65536);
  assert.equal(parseSize("64M"), 64 * 2 ** 20);
  assert.equal(parseSize("1G"), 2 ** 30);
  assert.equal(parseSize("1GiB"), 2 ** 30);
  assert.equal(parseSize("1.5g"), 1.5 * 2 ** 30);
});

Deno.test("parseSize refuses nonsense and fractions of a byte", () => {
  for (const bad of ["", "M", "-1", "12X", "1.5", "0x100", "1e9"]) {
    assert.equal(parseSize(bad), undefined, bad);
  }
});

Deno.test("formatSize picks the largest exact unit", () => {
  assert.equal(formatSize(64 * 2 ** 20), "64 MiB");
  assert.equal(formatSize(1536 * 1024), "1536 KiB");
  assert.equal(formatSize(1000), "1000 bytes");
});
