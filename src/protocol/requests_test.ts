import assert from "node:assert/strict";
import { FrontendRequest, isFrontendRequest, requestName } from "./requests.ts";

Deno.test("FrontendRequest numbers every request 1..43 exactly once", () => {
  const numbers = Object.values(FrontendRequest).sort((a, b) => a - b);
  assert.deepEqual(numbers, Array.from({ length: 43 }, (_, i) => i + 1));
});

Deno.test("FrontendRequest keeps the protocol's numbers", () => {
  assert.equal(FrontendRequest.GET_FEATURES, 1);
  assert.equal(FrontendRequest.SET_MEM_TABLE, 5);
  assert.equal(FrontendRequest.GET_PROTOCOL_FEATURES, 15);
  assert.equal(FrontendRequest.SET_BACKEND_REQ_FD, 21);
  assert.equal(FrontendRequest.GET_CONFIG, 24);
  assert.equal(FrontendRequest.RESET_DEVICE, 34);
  assert.equal(FrontendRequest.ADD_MEM_REG, 37);
  assert.equal(FrontendRequest.SET_STATUS, 39);
  assert.equal(FrontendRequest.SET_DEVICE_STATE_FD, 42);
  assert.equal(FrontendRequest.CHECK_DEVICE_STATE, 43);
});

Deno.test("requestName names known requests and marks unknown ones", () => {
  assert.equal(requestName(1), "GET_FEATURES");
  assert.equal(requestName(43), "CHECK_DEVICE_STATE");
  assert.equal(requestName(99), "UNKNOWN(99)");
  assert.equal(requestName(0), "UNKNOWN(0)");
});

Deno.test("isFrontendRequest accepts only known numbers", () => {
  assert.equal(isFrontendRequest(12), true);
  assert.equal(isFrontendRequest(44), false);
  assert.equal(isFrontendRequest(0), false);
});
