import assert from "node:assert/strict";
import { FuseProtocolError } from "./fuse_errors.ts";
import { encodeGroupsExtension, splitExtensions } from "./fuse_extensions.ts";

const args = new Uint8Array([1, 2, 3, 4, 0]);

function withExtensions(...records: Uint8Array[]): [body: Uint8Array, extlen: number] {
  const total = records.reduce((n, r) => n + r.length, 0);
  const body = new Uint8Array(args.length + total);
  body.set(args);
  let at = args.length;
  for (const r of records) {
    body.set(r, at);
    at += r.length;
  }
  return [body, total / 8];
}

Deno.test("no extensions: the body is the input", () => {
  const { args: got, extensions } = splitExtensions(args, 0);
  assert.deepEqual([...got], [...args]);
  assert.deepEqual(extensions, {});
});

Deno.test("a groups extension is cut off and decoded; unknown types are skipped", () => {
  const groups = encodeGroupsExtension([100]);
  assert.equal(groups.length, 16);
  const secctx = new Uint8Array(16);
  new DataView(secctx.buffer).setUint32(0, 16, true); // type 0: a security context, ignored
  const [body, extlen] = withExtensions(secctx, groups);
  const split = splitExtensions(body, extlen);
  assert.deepEqual([...split.args], [...args]);
  assert.deepEqual(split.extensions, { groups: [100] });
  assert.deepEqual(
    splitExtensions(
      ...withExtensions(encodeGroupsExtension([1, 2, 3])),
    ).extensions,
    {
      groups: [1, 2, 3],
    },
  );
});

Deno.test("malformed extensions are protocol errors", () => {
  const bad = (body: Uint8Array, extlen: number) =>
    assert.throws(() => splitExtensions(body, extlen), FuseProtocolError);
  bad(args, 1); // longer than the body
  const zero = new Uint8Array(8); // size 0
  bad(...withExtensions(zero));
  const odd = new Uint8Array(16);
  new DataView(odd.buffer).setUint32(0, 12, true); // not a multiple of 8
  bad(...withExtensions(odd));
  const over = new Uint8Array(16);
  new DataView(over.buffer).setUint32(0, 24, true); // past the area
  bad(...withExtensions(over));
  const many = encodeGroupsExtension([5]);
  new DataView(many.buffer).setUint32(8, 3, true); // 3 groups in room for 1
  bad(...withExtensions(many));
  const empty = new Uint8Array(8);
  new DataView(empty.buffer).setUint32(0, 8, true);
  new DataView(empty.buffer).setUint32(4, 32, true); // groups without a count
  bad(...withExtensions(empty));
});
