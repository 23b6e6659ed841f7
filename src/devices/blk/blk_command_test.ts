import assert from "node:assert/strict";
import { blkCapabilities, parseBlkArgs } from "./blk_command.ts";
import { UsageError } from "../../cli/usage_error.ts";
import { MAX_BLK_QUEUES } from "./blk_device.ts";

Deno.test("blk --aio and --cache: parsed, checked, defaults", () => {
  const defaults = parseBlkArgs([]);
  assert.equal(defaults.aio, undefined, "no --aio: the main thread probes io_uring");
  assert.equal(defaults.cache, "writeback");
  const given = parseBlkArgs(["--file", "x.img", "--aio", "sync", "--cache", "none"]);
  assert.equal(given.aio, "sync");
  assert.equal(given.cache, "none");
  assert.deepEqual(given.backing, { kind: "file", path: "x.img", readOnly: false, cache: "none" });
  assert.equal(parseBlkArgs(["--aio", "io_uring"]).aio, "io_uring");
  assert.throws(() => parseBlkArgs(["--aio", "threads"]), (e) => {
    assert.ok(e instanceof UsageError);
    assert.equal(e.message, '--aio must be io_uring or sync, got "threads"');
    return true;
  });
  assert.throws(() => parseBlkArgs(["--cache", "directsync"]), /--cache must be writeback or none/);
});

Deno.test("--print-capabilities names the engine", () => {
  assert.deepEqual(blkCapabilities("sync"), {
    type: "block",
    features: ["read-only", "blk-file"],
    aio: "sync",
  });
});

async function vhostd(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL("../../../main.ts", import.meta.url).pathname, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("vhostd blk: --aio io_uring where io_uring is disabled exits 2 with one line", async () => {
  const env = { VHOSTD_DISABLE_IO_URING: "1" };
  const refused = await vhostd(["blk", "--aio", "io_uring", "--print-capabilities"], env);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^vhostd: --aio io_uring: io_uring is not usable here: .+\n$/);
  const fallback = await vhostd(["blk", "--print-capabilities"], env);
  assert.equal(fallback.code, 0);
  assert.equal(JSON.parse(fallback.stdout).aio, "sync");
});

Deno.test("vhostd blk: --cache none on a file system that refuses O_DIRECT exits 2", async () => {
  const path = "/sys/kernel/mm/transparent_hugepage/enabled";
  try {
    Deno.statSync(path);
  } catch {
    console.log(`${path} missing: test skipped`);
    return;
  }
  const run = await vhostd(["blk", "--file", path, "--read-only", "--cache", "none"]);
  assert.equal(run.code, 2);
  assert.match(
    run.stderr,
    /^vhostd: cannot use --cache none on .*: its file system \(sysfs\) refuses O_DIRECT/,
  );
  assert.equal(run.stderr.trim().split("\n").length, 1);
});

Deno.test("blk --num-queues: offers 64 by default, up to MAX_BLK_QUEUES when asked", () => {
  assert.equal(parseBlkArgs([]).numQueues, 64);
  assert.equal(parseBlkArgs(["--num-queues", "1"]).numQueues, 1);
  assert.equal(parseBlkArgs(["--num-queues", `${MAX_BLK_QUEUES}`]).numQueues, MAX_BLK_QUEUES);
  for (const bad of ["0", `${MAX_BLK_QUEUES + 1}`, "4x"]) {
    assert.throws(
      () => parseBlkArgs(["--num-queues", bad]),
      (e) => e instanceof UsageError && e.message.startsWith("--num-queues must be"),
    );
  }
});

Deno.test("blk --blk-file (QEMU's back-end convention) is --file", () => {
  assert.deepEqual(parseBlkArgs(["--blk-file", "d.img", "--read-only"]).backing, {
    kind: "file",
    path: "d.img",
    readOnly: true,
    cache: "writeback",
  });
  assert.throws(() => parseBlkArgs(["--blk-file", "a", "--file", "b"]), /one option/);
  assert.throws(() => parseBlkArgs(["--blk-file", "a", "--ram", "1M"]), /cannot be used together/);
});
