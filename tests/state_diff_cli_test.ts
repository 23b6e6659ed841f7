/**
 * `vhostd state diff` as a process, on files saved from a real back-end:
 * exit code 0 for two saves of the same state, 1 with the written range
 * named after a guest write, 2 for bad input; `--json` says the same.
 */

import assert from "node:assert/strict";
import { BlkFixture } from "./support/blk_fixture.ts";
import { randomBytes, runVhostdCli } from "./support/state_tools.ts";
import { withVhostd } from "./support/vhostd_process.ts";

Deno.test("state diff: 0 for the same state, 1 naming what a write changed, 2 for bad input", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-diff-cli-" });
  try {
    await withVhostd({ args: ["--ram", "8M"] }, async (vhostd) => {
      const cli = (...args: string[]) => runVhostdCli(["state", ...args]);
      const save = async (name: string) => {
        const saved = await cli("save", "--socket-path", vhostd.socketPath, "-o", `${dir}/${name}`);
        assert.equal(saved.code, 0, saved.stderr);
      };
      {
        using s = BlkFixture.open(vhostd.socketPath);
        assert.equal(s.driver.write(0, 100, randomBytes(64 * 1024)).status, 0);
      }
      await save("one");
      await save("two");
      {
        using s = BlkFixture.open(vhostd.socketPath);
        // 3 sectors at 1 MiB + 512: every byte differs from the zeros that were there.
        const data = randomBytes(1536).map((b) => b | 1);
        assert.equal(s.driver.write(0, 2049, data).status, 0);
      }
      await save("three");

      const same = await cli("diff", `${dir}/one`, `${dir}/two`);
      assert.equal(same.code, 0, same.stdout + same.stderr);
      assert.match(same.stdout, /^identical device state$/m);

      const text = await cli("diff", `${dir}/two`, `${dir}/three`);
      assert.equal(text.code, 1, text.stdout + text.stderr);
      assert.match(text.stdout, /^RAM disk: 1 range differ/m);
      assert.match(text.stdout, /^ {2}\[0x100200, 0x100800\) {2}1536 bytes$/m);
      assert.match(text.stdout, /^metadata state\.counters\.writes: /m);
      assert.match(text.stdout, /^the device states differ$/m);

      const json = await cli("diff", `${dir}/two`, `${dir}/three`, "--json");
      assert.equal(json.code, 1, json.stderr);
      const doc = JSON.parse(json.stdout);
      assert.equal(doc.schemaVersion, 1);
      assert.equal(doc.identical, false);
      assert.deepEqual(doc.ramDisk.ranges, [{ offset: 0x100200, length: 1536 }]);
      assert.equal(doc.ramDisk.differingBytes, 1536);

      await Deno.writeTextFile(`${dir}/text`, "not a state\n");
      const bad: [string[], RegExp][] = [
        [[`${dir}/one`, `${dir}/missing`], /cannot open .*missing: ENOENT/],
        [[`${dir}/text`, `${dir}/one`], /not a vhostd state file/],
        [[`${dir}/one`], /two files/],
      ];
      for (const [args, why] of bad) {
        const result = await cli("diff", ...args);
        assert.equal(result.code, 2, `${args}: ${result.stderr}`);
        assert.match(result.stderr, why);
        assert.equal(result.stdout, "");
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
