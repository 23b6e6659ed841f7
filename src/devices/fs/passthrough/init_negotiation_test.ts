// The accepted flags and page limits are covered through PassthroughFs
// (passthrough_fs_test.ts, xattr_ops_test.ts); here what depends on
// whether vhostd switches to its callers, which one process cannot vary.
import assert from "node:assert/strict";
import { EPROTO } from "../../../../ffi/mod.ts";
import { FuseInitFlag2 } from "../fuse/fuse_abi.ts";
import type { FuseInitArgs } from "../fuse/fuse_request.ts";
import { FsError } from "./fs_errors.ts";
import { negotiateInit } from "./init_negotiation.ts";

function offer(flags2: number, major = 7): FuseInitArgs {
  return { major, minor: 38, maxReadahead: 131072, flags: 0, flags2 };
}

const NO_XATTR = { initFlags: () => 0 };

Deno.test("CREATE_SUPP_GROUP only when operations run as their caller; no other flags2 bit", () => {
  const all = FuseInitFlag2.SECURITY_CTX | FuseInitFlag2.HAS_INODE_DAX |
    FuseInitFlag2.CREATE_SUPP_GROUP;
  assert.equal(negotiateInit(offer(all), NO_XATTR, true).flags2, FuseInitFlag2.CREATE_SUPP_GROUP);
  assert.equal(negotiateInit(offer(all), NO_XATTR, false).flags2, 0);
  assert.equal(negotiateInit(offer(0), NO_XATTR, true).flags2, 0);
});

Deno.test("an old major version is EPROTO before the xattr flags are asked for", () => {
  let asked = 0;
  const xattr = {
    initFlags: () => {
      asked++;
      throw new FsError(EPROTO, "the xattr check");
    },
  };
  assert.throws(
    () => negotiateInit(offer(0, 6), xattr, true),
    (error: unknown) => error instanceof FsError && /major version 6/.test(error.message),
  );
  assert.equal(asked, 0);
});
