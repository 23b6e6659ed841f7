import assert from "node:assert/strict";
import { canonicalJson, fingerprint, identityMismatch, toHex } from "./fingerprint.ts";

Deno.test("canonicalJson sorts keys recursively and has no whitespace", () => {
  assert.equal(
    canonicalJson({ b: 1, a: [true, { d: null, c: "x y" }], "": { z: 1, y: [2, 1] } }),
    '{"":{"y":[2,1],"z":1},"a":[true,{"c":"x y","d":null}],"b":1}',
  );
  assert.equal(canonicalJson({ B: 1, a: 2, _: 3 }), '{"B":1,"_":3,"a":2}');
  assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
  assert.equal(canonicalJson('quote " and \n'), JSON.stringify('quote " and \n'));
  assert.equal(canonicalJson(Object.assign(Object.create(null), { y: 1, x: 2 })), '{"x":2,"y":1}');
  assert.equal(canonicalJson([]), "[]");
  assert.equal(canonicalJson({}), "{}");
  assert.equal(canonicalJson(-0.5e-7), "-5e-8");
});

Deno.test("canonicalJson refuses what JSON cannot hold faithfully", () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const cases: [unknown, RegExp][] = [
    [{ size: Number.NaN }, /size is NaN/],
    [{ a: { b: Infinity } }, /a\.b is Infinity/],
    [{ n: 1n }, /n is a bigint/],
    [{ f: () => 1 }, /f is a function/],
    [{ when: new Date(0) }, /when is a Date/],
    [{ m: new Map() }, /m is a Map/],
    [{ bytes: new Uint8Array(2) }, /bytes is a Uint8Array/],
    [{ list: [1, undefined] }, /list\[1\] is a undefined/],
    [cyclic, /self refers to itself/],
    [undefined, /the identity is a undefined/],
  ];
  for (const [value, message] of cases) assert.throws(() => canonicalJson(value), message);
  // A shared (non-cyclic) object is fine.
  const shared = { x: 1 };
  assert.equal(canonicalJson({ a: shared, b: shared }), '{"a":{"x":1},"b":{"x":1}}');
});

Deno.test("fingerprint is the SHA-256 of the canonical JSON, independent of key order", () => {
  // sha256("{}")
  assert.equal(
    toHex(fingerprint({})),
    "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  );
  const a = fingerprint({ size: 1024, serial: "s", nested: { x: 1, y: 2 } });
  const b = fingerprint({ nested: { y: 2, x: 1 }, serial: "s", size: 1024 });
  assert.equal(a.length, 32);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, fingerprint({ size: 1025, serial: "s", nested: { x: 1, y: 2 } }));
});

Deno.test("identityMismatch explains the first differing field in one line", () => {
  assert.equal(
    identityMismatch({ size: 134217728, serial: "a" }, { size: 268435456, serial: "a" }),
    "size is 268435456 in the state, 134217728 here",
  );
  assert.equal(identityMismatch({ a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }), undefined);
  assert.equal(
    identityMismatch({ backing: { path: "/a", ro: false } }, { backing: { path: "/b", ro: true } }),
    'backing.path is "/b" in the state, "/a" here',
  );
  assert.equal(
    identityMismatch({ queues: [{ size: 256 }, { size: 128 }] }, {
      queues: [{ size: 256 }, { size: 64 }],
    }),
    "queues[1].size is 64 in the state, 128 here",
  );
  assert.equal(
    identityMismatch({ queues: [1, 2] }, { queues: [1, 2, 3] }),
    "queues has 3 elements in the state, 2 here",
  );
  assert.equal(
    identityMismatch({ serial: "x", size: 1 }, { size: 1 }),
    'serial is missing in the state, "x" here',
  );
  assert.equal(
    identityMismatch({ size: 1 }, { size: 1, readOnly: true }),
    "readOnly is true in the state, absent here",
  );
  assert.equal(
    identityMismatch({ size: 1 }, { size: "1" }),
    'size is "1" in the state, 1 here',
  );
  const long = "x".repeat(200);
  const message = identityMismatch({ note: "short" }, { note: long })!;
  assert.ok(message.length < 150 && message.includes("..."), message);
});
