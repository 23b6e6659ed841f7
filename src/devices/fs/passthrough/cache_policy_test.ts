// Each policy's own timeouts and flags are covered through PassthroughFs
// (passthrough_fs_test.ts); here what only the options decide.
import assert from "node:assert/strict";
import { FuseOpenOutFlag } from "../fuse/fuse_abi.ts";
import { cacheSettings } from "./cache_policy.ts";
import type { CachePolicy } from "./fs_types.ts";

Deno.test("explicit timeouts win over the policy's, each on its own; 0 is allowed", () => {
  assert.deepEqual(cacheSettings({ cache: "always", entryTimeoutSec: 0 }), {
    entryTimeoutSec: 0,
    attrTimeoutSec: 86400,
    fileOpenFlags: FuseOpenOutFlag.KEEP_CACHE,
    dirOpenFlags: FuseOpenOutFlag.KEEP_CACHE | FuseOpenOutFlag.CACHE_DIR,
  });
  const never = cacheSettings({ cache: "never", attrTimeoutSec: 2.5 });
  assert.equal(never.entryTimeoutSec, 0);
  assert.equal(never.attrTimeoutSec, 2.5);
});

Deno.test("no policy is auto", () => {
  assert.deepEqual(cacheSettings({}), cacheSettings({ cache: "auto" }));
});

Deno.test("a timeout that is not a finite number >= 0 or an unknown policy is refused by name", () => {
  for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => cacheSettings({ entryTimeoutSec: bad }), /^Error: entryTimeoutSec must/);
    assert.throws(() => cacheSettings({ attrTimeoutSec: bad }), /^Error: attrTimeoutSec must/);
  }
  assert.throws(
    () => cacheSettings({ cache: "sometimes" as CachePolicy }),
    /cache must be never, metadata, auto or always/,
  );
});
