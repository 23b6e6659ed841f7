import assert from "node:assert/strict";
import { StateFormatError } from "./errors.ts";
import { fingerprint } from "./fingerprint.ts";
import { checkDeviceMatch, parseMetadata, type StateMetadata } from "./metadata.ts";
import type { StateHeader } from "./state_header.ts";

const encode = (text: string) => new TextEncoder().encode(text);
const here = { size: 134217728, serial: "disk" };
const there = { size: 268435456, serial: "disk" };

function header(kind: string, identity: Record<string, unknown>): StateHeader {
  return { formatVersion: 1, kind, fingerprint: fingerprint(identity), createdAt: 0 };
}

function meta(kind: string, identity: Record<string, unknown>): StateMetadata {
  return { vhostd: "0.1.0", kind, identity, state: {} };
}

function refusal(action: () => void): string {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof StateFormatError, String(error));
    return error.message;
  }
  assert.fail("accepted");
}

Deno.test("parseMetadata accepts the documented shape and extra fields", () => {
  const parsed = parseMetadata(encode(JSON.stringify({
    vhostd: "0.1.0",
    kind: "blk",
    identity: { size: 1 },
    state: { a: [1] },
    addedLater: true,
  })));
  assert.deepEqual(parsed, {
    vhostd: "0.1.0",
    kind: "blk",
    identity: { size: 1 },
    state: { a: [1] },
  });
});

Deno.test("parseMetadata refuses bad UTF-8, bad JSON and missing fields", () => {
  assert.match(
    refusal(() => parseMetadata(new Uint8Array([0x7b, 0xff, 0x7d]))),
    /not valid UTF-8 JSON/,
  );
  assert.match(refusal(() => parseMetadata(encode("{"))), /not valid UTF-8 JSON/);
  assert.equal(refusal(() => parseMetadata(encode("[]"))), "METADATA is not a JSON object");
  const base = { vhostd: "v", kind: "blk", identity: {}, state: {} };
  for (
    const [field, message] of [
      ["vhostd", /vhostd version/],
      ["kind", /device kind/],
      ["identity", /identity object/],
      ["state", /state object/],
    ] as const
  ) {
    const broken = { ...base, [field]: field === "identity" ? [1] : 5 };
    assert.match(refusal(() => parseMetadata(encode(JSON.stringify(broken)))), message);
  }
});

Deno.test("checkDeviceMatch: kind first, then the configuration, explained by the metadata", () => {
  const expected = { kind: "blk", identity: here };
  checkDeviceMatch(header("blk", here), expected);
  checkDeviceMatch(header("blk", here), expected, meta("blk", here));
  assert.equal(
    refusal(() => checkDeviceMatch(header("fs", here), expected)),
    "device kind is fs, expected blk",
  );
  assert.match(
    refusal(() => checkDeviceMatch(header("blk", there), expected)),
    /configuration fingerprint differs from this device's/,
  );
  assert.equal(
    refusal(() => checkDeviceMatch(header("blk", there), expected, meta("blk", there))),
    "the configuration differs: size is 268435456 in the state, 134217728 here",
  );
});

Deno.test("checkDeviceMatch refuses metadata that contradicts its own header", () => {
  const expected = { kind: "blk", identity: here };
  assert.match(
    refusal(() => checkDeviceMatch(header("blk", here), expected, meta("fs", here))),
    /METADATA says kind fs but the header says blk/,
  );
  assert.match(
    refusal(() => checkDeviceMatch(header("blk", here), expected, meta("blk", there))),
    /METADATA identity does not match the header fingerprint/,
  );
});
