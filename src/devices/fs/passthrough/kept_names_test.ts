import assert from "node:assert/strict";
import { KeptNames } from "./kept_names.ts";

const encoder = new TextEncoder();

Deno.test("KeptNames copies: a later change of the source or another copy leaves a kept name alone", () => {
  const names = new KeptNames();
  const source = encoder.encode("first-name");
  const first = names.keep(source);
  source.fill(0x78);
  const second = names.keep(encoder.encode("second"));
  assert.equal(new TextDecoder().decode(first), "first-name");
  assert.equal(new TextDecoder().decode(second), "second");
  assert.notEqual(first.buffer, source.buffer);
  assert.equal(first.buffer, second.buffer, "short names share a slab");
});

Deno.test("KeptNames starts a new slab when one is full, and gives a long name its own array", () => {
  const names = new KeptNames();
  const kept = Array.from({ length: 1000 }, (_, i) => names.keep(encoder.encode(`name-${i}`)));
  kept.forEach((name, i) => assert.equal(new TextDecoder().decode(name), `name-${i}`));
  assert.ok(new Set(kept.map((name) => name.buffer)).size > 1, "more than one slab");
  const long = names.keep(new Uint8Array(300).fill(0x61));
  assert.equal(long.byteLength, 300);
  assert.equal(long.byteOffset, 0);
  assert.equal(long.buffer.byteLength, 300);
});
