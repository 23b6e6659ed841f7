import assert from "node:assert/strict";
import { maskOf, ProtocolFeature } from "./features.ts";
import { FLAG_NEED_REPLY, VHOST_USER_VERSION } from "./header.ts";
import { allRequestSpecs, replyKind, requestSpec } from "./message_spec.ts";
import { FrontendRequest, requestName } from "./requests.ts";

const R = FrontendRequest;

Deno.test("every request 1..43 has a spec with its own number and name", () => {
  for (let request = 1; request <= 43; request++) {
    const spec = requestSpec(request);
    assert.ok(spec, `no spec for ${request}`);
    assert.equal(spec.request, request);
    assert.equal(spec.name, requestName(request));
  }
  assert.equal(allRequestSpecs().length, 43);
  assert.equal(requestSpec(0), undefined);
  assert.equal(requestSpec(44), undefined);
  assert.equal(requestSpec(99), undefined);
});

Deno.test("payload rules follow vhost-user.rst", () => {
  const exact = (size: number) => ({ kind: "exact", size });
  assert.deepEqual(requestSpec(R.GET_FEATURES)?.payload, { kind: "empty" });
  assert.deepEqual(requestSpec(R.SET_FEATURES)?.payload, exact(8));
  assert.deepEqual(requestSpec(R.SET_MEM_TABLE)?.payload, { kind: "min", size: 8 });
  assert.deepEqual(requestSpec(R.SET_LOG_BASE)?.payload, exact(16));
  assert.deepEqual(requestSpec(R.SET_LOG_FD)?.payload, { kind: "empty" });
  for (const r of [R.SET_VRING_NUM, R.SET_VRING_BASE, R.GET_VRING_BASE, R.SET_VRING_ENABLE]) {
    assert.deepEqual(requestSpec(r)?.payload, exact(8), requestName(r));
  }
  assert.deepEqual(requestSpec(R.SET_VRING_ADDR)?.payload, exact(40));
  assert.deepEqual(requestSpec(R.GET_CONFIG)?.payload, { kind: "min", size: 12 });
  assert.deepEqual(requestSpec(R.ADD_MEM_REG)?.payload, exact(40));
  assert.deepEqual(requestSpec(R.REM_MEM_REG)?.payload, exact(40));
  assert.deepEqual(requestSpec(R.SET_STATUS)?.payload, exact(8));
  assert.deepEqual(requestSpec(R.SET_DEVICE_STATE_FD)?.payload, exact(8));
  assert.deepEqual(requestSpec(R.CHECK_DEVICE_STATE)?.payload, { kind: "empty" });
  assert.deepEqual(requestSpec(R.CREATE_CRYPTO_SESSION)?.payload, { kind: "any" });
});

Deno.test("fd rules follow vhost-user.rst", () => {
  assert.equal(requestSpec(R.SET_MEM_TABLE)?.fds, "per-region");
  for (const r of [R.SET_VRING_KICK, R.SET_VRING_CALL, R.SET_VRING_ERR]) {
    assert.equal(requestSpec(r)?.fds, "optional-by-nofd");
  }
  for (const r of [R.SET_LOG_FD, R.ADD_MEM_REG, R.SET_DEVICE_STATE_FD, R.SET_BACKEND_REQ_FD]) {
    assert.equal(requestSpec(r)?.fds, "one", requestName(r));
  }
  assert.equal(requestSpec(R.SET_LOG_BASE)?.fds, "zero-or-one");
  assert.equal(requestSpec(R.REM_MEM_REG)?.fds, "zero-or-one");
  assert.equal(requestSpec(R.GET_FEATURES)?.fds, "none");
});

Deno.test("feature gating and own replies", () => {
  assert.equal(requestSpec(R.GET_CONFIG)?.protocolFeature, ProtocolFeature.CONFIG);
  assert.equal(requestSpec(R.ADD_MEM_REG)?.protocolFeature, ProtocolFeature.CONFIGURE_MEM_SLOTS);
  assert.equal(requestSpec(R.CHECK_DEVICE_STATE)?.protocolFeature, ProtocolFeature.DEVICE_STATE);
  for (const r of [R.GET_FEATURES, R.GET_PROTOCOL_FEATURES, R.SET_PROTOCOL_FEATURES, R.SET_OWNER]) {
    assert.equal(requestSpec(r)?.protocolFeature, undefined, requestName(r));
  }
  const withReply = allRequestSpecs().filter((s) => s.hasReply).map((s) => s.name);
  for (
    const name of [
      "GET_FEATURES",
      "GET_PROTOCOL_FEATURES",
      "GET_VRING_BASE",
      "SET_LOG_BASE",
      "GET_CONFIG",
      "SET_DEVICE_STATE_FD",
      "CHECK_DEVICE_STATE",
    ]
  ) {
    assert.ok(withReply.includes(name), name);
  }
  assert.equal(requestSpec(R.SET_VRING_NUM)?.hasReply, false);
  assert.equal(requestSpec(R.SET_MEM_TABLE)?.hasReply, false);
});

Deno.test("replyKind: own reply, REPLY_ACK, or nothing", () => {
  const none = 0n;
  const ack = maskOf([ProtocolFeature.REPLY_ACK]);
  const v = VHOST_USER_VERSION;
  const need = v | FLAG_NEED_REPLY;
  assert.equal(replyKind(R.GET_FEATURES, v, none), "own");
  assert.equal(replyKind(R.GET_FEATURES, need, ack), "own");
  assert.equal(replyKind(R.SET_VRING_NUM, v, ack), "none");
  assert.equal(replyKind(R.SET_VRING_NUM, need, ack), "ack");
  // NEED_REPLY without negotiated REPLY_ACK is ignored, as the spec says.
  assert.equal(replyKind(R.SET_VRING_NUM, need, none), "none");
  // SET_LOG_BASE only has its own reply under LOG_SHMFD.
  assert.equal(replyKind(R.SET_LOG_BASE, v, maskOf([ProtocolFeature.LOG_SHMFD])), "own");
  assert.equal(replyKind(R.SET_LOG_BASE, v, none), "none");
  assert.equal(replyKind(R.SET_LOG_BASE, need, ack), "ack");
  assert.equal(replyKind(99, need, ack), "ack");
  assert.equal(replyKind(99, v, ack), "none");
});

Deno.test("specs cannot be mutated by callers", () => {
  const spec = requestSpec(R.SET_VRING_NUM);
  assert.ok(spec);
  assert.throws(() => {
    (spec as { hasReply: boolean }).hasReply = true;
  }, TypeError);
  assert.throws(() => {
    (spec.payload as { kind: string }).kind = "any";
  }, TypeError);
});
