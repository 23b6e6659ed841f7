import assert from "node:assert/strict";
import { EINVAL, SyscallError } from "./errno.ts";
import { openFileLimit, setOpenFileLimit } from "./rlimit.ts";

Deno.test("openFileLimit agrees with /proc/self/limits", () => {
  const line = Deno.readTextFileSync("/proc/self/limits").split("\n")
    .find((l) => l.startsWith("Max open files"))!;
  const [soft, hard] = line.slice("Max open files".length).trim().split(/\s+/);
  const limit = openFileLimit();
  assert.equal(limit.soft, BigInt(soft));
  assert.equal(limit.hard, BigInt(hard));
});

Deno.test("setOpenFileLimit changes the soft limit and refuses soft above hard", () => {
  const before = openFileLimit();
  try {
    const lower = before.soft > 256n ? before.soft - 1n : before.soft;
    setOpenFileLimit({ soft: lower, hard: before.hard });
    assert.equal(openFileLimit().soft, lower);
    assert.throws(
      () => setOpenFileLimit({ soft: before.hard + 1n, hard: before.hard }),
      (e) => e instanceof SyscallError && e.errno === EINVAL,
    );
  } finally {
    setOpenFileLimit(before);
  }
  assert.deepEqual(openFileLimit(), before);
});
