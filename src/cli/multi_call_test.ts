import assert from "node:assert/strict";
import { multiCallArgs, multiCallName } from "./multi_call.ts";

Deno.test("started as vhostd-KIND, vhostd runs `vhostd KIND`; other names change nothing", () => {
  assert.equal(multiCallName("blk"), "vhostd-blk");
  assert.deepEqual(multiCallArgs("/usr/libexec/vhostd-blk", ["--fd=3"]), ["blk", "--fd=3"]);
  assert.deepEqual(multiCallArgs("vhostd-fs", ["--print-capabilities"]), [
    "fs",
    "--print-capabilities",
  ]);
  assert.deepEqual(multiCallArgs("/usr/local/bin/vhostd", ["blk"]), ["blk"]);
  assert.deepEqual(multiCallArgs("/usr/bin/deno", ["fs"]), ["fs"]);
  assert.deepEqual(multiCallArgs("/x/vhostd-nosuchkind", ["a"]), ["a"]);
});
