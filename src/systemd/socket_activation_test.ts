import assert from "node:assert/strict";
import {
  type ActivationEnvironment,
  LISTEN_VARIABLES,
  SocketActivationError,
  socketActivationRequested,
  takeActivatedSocket,
} from "./socket_activation.ts";

/** An environment of its own, so the test process's real one is never touched. */
function fakeEnvironment(values: Record<string, string>): ActivationEnvironment & {
  values: Map<string, string>;
} {
  const map = new Map(Object.entries(values));
  return {
    values: map,
    get: (name) => map.get(name),
    delete: (name) => void map.delete(name),
  };
}

function refusal(values: Record<string, string>, pid: number): string {
  const env = fakeEnvironment(values);
  let message = "";
  assert.throws(() => takeActivatedSocket(env, pid), (e) => {
    assert.ok(e instanceof SocketActivationError);
    message = e.message;
    return true;
  });
  for (const name of LISTEN_VARIABLES) {
    assert.equal(env.values.has(name), false, `${name} left behind after a refusal`);
  }
  return message;
}

Deno.test("socket activation is requested by LISTEN_FDS alone", () => {
  assert.equal(socketActivationRequested(fakeEnvironment({})), false);
  assert.equal(socketActivationRequested(fakeEnvironment({ LISTEN_FDS: "1" })), true);
});

Deno.test("socket activation refuses another process's sockets, counts other than 1", () => {
  assert.match(
    refusal({ LISTEN_FDS: "1", LISTEN_PID: "41" }, 42),
    /^LISTEN_PID is 41, not this process \(42\)/,
  );
  assert.match(refusal({ LISTEN_FDS: "1", LISTEN_PID: "x" }, 42), /LISTEN_PID is x/);
  assert.match(refusal({ LISTEN_FDS: "1" }, 42), /LISTEN_PID is not/);
  assert.match(refusal({ LISTEN_FDS: "2", LISTEN_PID: "42" }, 42), /^LISTEN_FDS is 2: .*one/);
  assert.match(refusal({ LISTEN_FDS: "0", LISTEN_PID: "42" }, 42), /^LISTEN_FDS is 0/);
});
