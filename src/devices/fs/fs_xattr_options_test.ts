import assert from "node:assert/strict";
import { fsXattrArgs } from "./fs_xattr_options.ts";
import { UsageError } from "../../cli/usage_error.ts";

Deno.test("fsXattrArgs: off by default; --posix-acl and --xattr-mapping imply --xattr", () => {
  assert.deepEqual(fsXattrArgs({}), { xattr: false, posixAcl: false });
  assert.deepEqual(fsXattrArgs({ xattr: true }), { xattr: true, posixAcl: false });
  assert.deepEqual(fsXattrArgs({ "posix-acl": true }), { xattr: true, posixAcl: true });
  assert.deepEqual(fsXattrArgs({ "xattr-mapping": ":ok:all:::" }), {
    xattr: true,
    posixAcl: false,
    xattrMapping: ":ok:all:::",
  });
});

Deno.test("fsXattrArgs: a mapping that does not parse is a UsageError naming the option", () => {
  assert.throws(
    () => fsXattrArgs({ "xattr-mapping": ":prefix:all:a" }),
    (e: unknown) =>
      e instanceof UsageError && /^--xattr-mapping: rule 1: incomplete/.test(e.message),
  );
});
