import assert from "node:assert/strict";
import { chooseEngine } from "./engine_choice.ts";
import { UsageError } from "./usage_error.ts";

Deno.test("chooseEngine: io_uring where it works, sync with the reason where not, exit 2 when asked", () => {
  const works = () => undefined;
  const broken = () => "io_uring_setup: EPERM (kernel.io_uring_disabled=2)";
  assert.deepEqual(chooseEngine(undefined, works), { kind: "io_uring" });
  assert.deepEqual(chooseEngine("io_uring", works), { kind: "io_uring" });
  assert.deepEqual(chooseEngine(undefined, broken), {
    kind: "sync",
    fallbackReason: "io_uring_setup: EPERM (kernel.io_uring_disabled=2)",
  });
  let probed = false;
  assert.deepEqual(chooseEngine("sync", () => (probed = true, undefined)), { kind: "sync" });
  assert.equal(probed, false, "--aio sync needs no probe");
  assert.throws(() => chooseEngine("io_uring", broken), (e) => {
    assert.ok(e instanceof UsageError);
    assert.equal(
      e.message,
      "--aio io_uring: io_uring is not usable here: io_uring_setup: EPERM (kernel.io_uring_disabled=2)",
    );
    return true;
  });
});

Deno.test("chooseEngine: an image in memory defaults to sync; an explicit --aio wins", () => {
  const works = () => undefined;
  assert.deepEqual(chooseEngine(undefined, works, true), { kind: "sync", inMemory: true });
  assert.deepEqual(chooseEngine("io_uring", works, true), { kind: "io_uring" });
  assert.deepEqual(chooseEngine(undefined, works, false), { kind: "io_uring" });
});
