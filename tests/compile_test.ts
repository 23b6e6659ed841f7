/**
 * The single binary: `deno task compile` must produce a `dist/vhostd` that
 * runs on its own. It needs a denort base binary, which cannot be downloaded
 * here; the test runs whenever one is available (DENORT_BIN or Deno's cache)
 * and is reported as skipped, with the reason, otherwise.
 */

import assert from "node:assert/strict";
import { BINARY_PATH, localDenort, WORKER_MODULES } from "../scripts/compile_args.ts";

const root = new URL("..", import.meta.url).pathname;
const denort = localDenort();

Deno.test("compile arguments embed every Worker module that exists", () => {
  for (const module of WORKER_MODULES) {
    assert.ok(Deno.statSync(`${root}/${module}`).isFile, `${module} is missing`);
  }
  // Every module that src/ starts as a Worker must be listed.
  const started: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(`${root}/${dir}`)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) {
        const text = Deno.readTextFileSync(`${root}/${path}`);
        for (const m of text.matchAll(/new Worker\(new URL\("\.\/([a-z_]+\.ts)"/g)) {
          started.push(`${dir}/${m[1]}`);
        }
      }
    }
  };
  walk("src");
  assert.ok(started.length >= 3, `found only ${started.length} Worker modules`);
  for (const module of started) {
    assert.ok(WORKER_MODULES.includes(module), `${module} is not embedded`);
  }
});

if (!denort) {
  console.log(
    "compile test SKIPPED: no denort base binary (DENORT_BIN unset and none in Deno's cache; " +
      "its download host is unreachable here). Set DENORT_BIN to run it.",
  );
}

Deno.test({
  name: denort
    ? "deno task compile builds dist/vhostd and it prints its capabilities"
    : "deno task compile builds dist/vhostd (skipped: no denort available, set DENORT_BIN)",
  ignore: !denort,
  fn: async () => {
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const run = await new Deno.Command(`${root}/${BINARY_PATH}`, {
      args: ["blk", "--print-capabilities"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(run.success, new TextDecoder().decode(run.stderr));
    const caps = JSON.parse(new TextDecoder().decode(run.stdout));
    assert.equal(caps.type, "block");
    // A bad argument is one line and exit code 2, from the binary as from the script.
    const bad = await new Deno.Command(`${root}/${BINARY_PATH}`, {
      args: ["blk", "--no-such-option"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(bad.code, 2);
  },
});
