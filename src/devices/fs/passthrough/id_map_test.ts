import assert from "node:assert/strict";
import { IdMap } from "./id_map.ts";

Deno.test("IdMap: ids below and above 2^53 are distinct keys, exact and in insertion order", () => {
  const map = new IdMap<string>();
  const big = 1n << 53n;
  map.set(7n, "seven");
  map.set(big + 1n, "big+1");
  map.set(big, "big");
  map.set(big - 1n, "max");
  map.set(0xffff_ffff_ffff_ffffn, "top");
  map.set(1n, "one");
  assert.equal(map.size, 6);
  // 2^53 and 2^53 + 1 are the same double: as keys they must stay apart.
  assert.equal(map.get(big), "big");
  assert.equal(map.get(big + 1n), "big+1");
  assert.equal(map.get(big - 1n), "max");
  assert.equal(map.get(0xffff_ffff_ffff_ffffn), "top");
  assert.equal(map.get(8n), undefined);
  assert.deepEqual([...map.values()], ["seven", "big+1", "big", "max", "top", "one"]);
  map.set(7n, "SEVEN");
  assert.deepEqual([...map.values()][0], "SEVEN", "replacing keeps the place");
  assert.equal(map.delete(big + 1n), true);
  assert.equal(map.delete(big + 1n), false);
  assert.equal(map.has(big + 1n), false);
  assert.equal(map.has(big), true);
  assert.equal(map.size, 5);
  map.clear();
  assert.equal(map.size, 0);
  assert.equal(map.get(1n), undefined);
});
