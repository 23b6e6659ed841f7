import assert from "node:assert/strict";
import { ENOTSUP, EPERM } from "../../../../ffi/mod.ts";
import { parseXattrMapping, XattrMappingError } from "./xattr_mapping.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The host name (as text) or errno for a guest name. */
function host(mapping: ReturnType<typeof parseXattrMapping>, name: string): string | number {
  const out = mapping.toHost(encoder.encode(name));
  return "errno" in out ? out.errno : decoder.decode(out.name);
}

function guest(mapping: ReturnType<typeof parseXattrMapping>, name: string): string | null {
  const out = mapping.toGuest(encoder.encode(name));
  return out === null ? null : decoder.decode(out);
}

Deno.test("prefix all + bad all: every guest name is prefixed, unprefixed host names hidden", () => {
  const m = parseXattrMapping(":prefix:all::user.virtiofs.::bad:all:::");
  assert.equal(host(m, "user.a"), "user.virtiofs.user.a");
  assert.equal(host(m, "trusted.b"), "user.virtiofs.trusted.b");
  assert.equal(guest(m, "user.virtiofs.trusted.b"), "trusted.b");
  assert.equal(guest(m, "user.plain"), null);
  assert.equal(guest(m, "user.virtiofs."), null, "an empty stripped name is hidden");
});

Deno.test("map with a key: prefix both ways, guard the target namespace, pass the rest", () => {
  const m = parseXattrMapping("/map/trusted./user.virtiofs./");
  assert.equal(m.rules.length, 3);
  assert.equal(host(m, "trusted.x"), "user.virtiofs.trusted.x");
  assert.equal(host(m, "user.virtiofs.x"), EPERM, "the target namespace is not reachable directly");
  assert.equal(host(m, "user.other"), "user.other");
  assert.equal(guest(m, "user.virtiofs.trusted.x"), "trusted.x");
  assert.equal(guest(m, "trusted.host-only"), null);
  assert.equal(guest(m, "user.other"), "user.other");
});

Deno.test("map with an empty key equals prefix all + bad all", () => {
  const m = parseXattrMapping(" :map::user.virtiofs.: ");
  assert.equal(host(m, "security.selinux"), "user.virtiofs.security.selinux");
  assert.equal(guest(m, "security.selinux"), null);
});

Deno.test("ok, bad, unsupported, scopes; first match wins; no match is refused or hidden", () => {
  const m = parseXattrMapping(`
    :ok:client:user.::
    :unsupported:client:trusted.::
    /bad/server//security./
    ;ok;server;;user.;
  `);
  assert.equal(host(m, "user.a"), "user.a");
  assert.equal(host(m, "trusted.a"), ENOTSUP);
  assert.equal(host(m, "security.selinux"), EPERM, "no client rule matches");
  assert.equal(guest(m, "security.selinux"), null);
  assert.equal(guest(m, "user.a"), "user.a");
  assert.equal(guest(m, "trusted.a"), null, "no server rule matches");
});

Deno.test("security.capability always passes unchanged", () => {
  const m = parseXattrMapping(":map::user.virtiofs.:");
  assert.equal(host(m, "security.capability"), "security.capability");
  assert.equal(guest(m, "security.capability"), "security.capability");
});

Deno.test("malformed mappings name the rule and the problem", () => {
  const cases: [string, RegExp][] = [
    ["", /no rules/],
    ["   ", /no rules/],
    [":prefix:all:trusted.:user.vm.", /rule 1: incomplete/],
    [":ok:all:::  :frob:all:::", /rule 2: unknown type "frob"/],
    [":ok:everywhere:::", /rule 1: unknown scope "everywhere"/],
    [":ok:constructor:::", /unknown scope/],
    [":map::user.x.: :ok:all:::", /map rule must be the last/],
    [":map:a:", /incomplete/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseXattrMapping(text), (e: unknown) => {
      assert.ok(e instanceof XattrMappingError, `${JSON.stringify(text)}: ${e}`);
      assert.match(e.message, message, JSON.stringify(text));
      return true;
    });
  }
});
