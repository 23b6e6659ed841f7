import assert from "node:assert/strict";
import { decodeFsState, decodeFsWorkerCommand, isMigrationOnError } from "./fs_state.ts";

const SESSION = { initialized: true, minor: 37, flags: 0x4000_2001, flags2: 0 };

Deno.test("fs state: a well-formed state decodes to the same values", () => {
  const state = { session: SESSION, fs: { version: 1, inodes: [{ nodeid: "2" }] } };
  assert.deepEqual(decodeFsState(state), state);
  assert.deepEqual(decodeFsState(JSON.parse(JSON.stringify(state))), state);
});

Deno.test("fs state: every malformed part is refused with a one-line reason", () => {
  const bad: [unknown, RegExp][] = [
    [null, /not an object/],
    [[], /not an object/],
    [{ fs: {} }, /session must be an object/],
    [{ session: { ...SESSION, initialized: 1 }, fs: {} }, /initialized/],
    [{ session: { ...SESSION, minor: 1.5 }, fs: {} }, /minor/],
    [{ session: { ...SESSION, flags: 2 ** 32 }, fs: {} }, /flags/],
    [{ session: { ...SESSION, flags2: "0" }, fs: {} }, /flags2/],
    [{ session: SESSION, fs: null }, /fs must be an object/],
    [{ session: SESSION }, /fs must be an object/],
  ];
  for (const [state, reason] of bad) {
    assert.throws(() => decodeFsState(state), (e: Error) => {
      assert.match(e.message, reason);
      assert.match(e.message, /^fs state: /);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("fs worker commands: snapshot and restore only", () => {
  assert.deepEqual(decodeFsWorkerCommand({ op: "snapshot", extra: 1 }), { op: "snapshot" });
  const state = { session: SESSION, fs: {} };
  assert.deepEqual(decodeFsWorkerCommand({ op: "restore", state }), { op: "restore", state });
  assert.throws(() => decodeFsWorkerCommand({ op: "format" }), /unknown fs worker command/);
  assert.throws(() => decodeFsWorkerCommand(42), /unknown fs worker command/);
  assert.ok(isMigrationOnError("abort") && isMigrationOnError("guest-error"));
  assert.ok(!isMigrationOnError("ignore"));
});
