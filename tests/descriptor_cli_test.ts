/**
 * `vhostd descriptor KIND` against QEMU's docs/interop/vhost-user.json: the
 * descriptor names a binary, and that binary (here a stand-in for the
 * `vhostd-KIND` link: a script that starts vhostd under that name) answers
 * `--print-capabilities` as the descriptor's type, with every feature the
 * schema defines for it that vhostd supports.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runVhostdCli } from "./support/state_tools.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
/** VHostUserBackendBlockFeature: the schema's block features (vhostd supports both). */
const SCHEMA_BLOCK_FEATURES = ["read-only", "blk-file"];

/**
 * Writes `dir/vhostd-KIND`: what a `vhostd-KIND` link to the compiled binary
 * is, for `deno run` — vhostd started with that argv[0].
 */
async function multiCallStandIn(dir: string, kind: string): Promise<string> {
  const path = `${dir}/vhostd-${kind}`;
  await Deno.writeTextFile(
    path,
    `#!/bin/bash\nexec -a "$0" ${Deno.execPath()} run -A ${MAIN} "$@"\n`,
    { mode: 0o755 },
  );
  return path;
}

async function run(binary: string, args: string[]): Promise<{ code: number; stdout: string }> {
  const out = await new Deno.Command(binary, { args, stdout: "piped", stderr: "inherit" }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
}

for (const [kind, type] of [["blk", "block"], ["fs", "fs"]]) {
  Deno.test(`vhostd descriptor ${kind}: its binary's --print-capabilities says type ${type}`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "vhostd-descriptor-" });
    try {
      const binary = await multiCallStandIn(dir, kind);
      const printed = await runVhostdCli(["descriptor", kind, "--binary", binary]);
      assert.equal(printed.code, 0, printed.stderr);
      const descriptor = JSON.parse(printed.stdout);
      assert.deepEqual(Object.keys(descriptor).sort(), ["binary", "description", "tags", "type"]);
      assert.equal(descriptor.type, type);
      assert.equal(descriptor.binary, binary);
      assert.equal(typeof descriptor.description, "string");

      const caps = await run(descriptor.binary, ["--print-capabilities"]);
      assert.equal(caps.code, 0);
      const capabilities = JSON.parse(caps.stdout);
      assert.equal(capabilities.type, descriptor.type);
      assert.ok(Array.isArray(capabilities.features));
      if (type === "block") assert.deepEqual(capabilities.features, SCHEMA_BLOCK_FEATURES);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("vhostd descriptor: unknown kinds, no kind, a relative --binary exit 2", async () => {
  for (
    const [args, message] of [
      [["descriptor", "nosuch"], /unknown device kind "nosuch" \(descriptors: blk, fs/],
      [["descriptor"], /needs a device kind/],
      [["descriptor", "blk", "fs"], /one kind/],
      [["descriptor", "blk", "--binary", "vhostd-blk"], /absolute path/],
      [["descriptor", "blk", "--bogus"], /bogus/],
    ] as const
  ) {
    const r = await runVhostdCli([...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stdout, "");
  }
});

Deno.test("vhostd descriptor under deno run names /usr/local/bin/vhostd-KIND and says why", async () => {
  const r = await runVhostdCli(["descriptor", "blk"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).binary, "/usr/local/bin/vhostd-blk");
  assert.match(r.stderr, /not a compiled vhostd/);
});
