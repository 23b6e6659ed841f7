import assert from "node:assert/strict";
import { DeviceHarness } from "../../../tests/support/device_harness.ts";
import { RngDevice } from "./rng_device.ts";
import { createRngRequestHandler, MAX_REQUEST_BYTES } from "./rng_handler.ts";

function harness(rateLimit?: { maxBytes: number; periodMs: number }) {
  const setup = new RngDevice(rateLimit).workerSetup();
  return new DeviceHarness(createRngRequestHandler, setup, { queues: 1 });
}

Deno.test("rng: every writable byte of a request is random, across buffers", () => {
  const h = harness();
  const a = h.addChain(0, { writable: [100, 28] });
  const b = h.addChain(0, { writable: [128] });
  h.kick(0);
  const used = h.takeUsed(0);
  assert.deepEqual(used.map((u) => [u.head, u.len]), [[a, 128], [b, 128]]);
  assert.notDeepEqual(used[0].data, used[1].data);
  // 128 random bytes: all zero (untouched memory) would be a miss.
  assert.ok(used[0].data.subarray(100).some((x) => x !== 0));
  assert.ok(new Set(used[1].data).size > 40);
  assert.equal(h.interrupts(0), 1);
});

Deno.test("rng: readable-only and oversized requests; a malformed chain gets nothing", () => {
  const h = harness();
  const readOnly = h.addChain(0, { readable: [new Uint8Array(16)] });
  const huge = h.addChain(0, { writable: [MAX_REQUEST_BYTES + 4096] });
  h.kick(0);
  // A chain whose descriptor points outside guest memory.
  const driver = h.driver(0);
  driver.writeRawDescriptor(40, 0xffff_0000_0000, 64, 2, 0);
  driver.publishRaw(40);
  h.kick(0);
  const used = h.takeUsed(0);
  assert.deepEqual(used.map((u) => [u.head, u.len]), [
    [readOnly, 0],
    [huge, MAX_REQUEST_BYTES],
    [40, 0],
  ]);
  assert.equal(h.broken(0), undefined);
});

Deno.test("rng --max-bytes: requests past the budget wait for the period, in order", () => {
  const h = harness({ maxBytes: 100, periodMs: 1000 });
  const heads = [0, 1, 2, 3].map(() => h.addChain(0, { writable: [40] }));
  h.kick(0);
  // 40 + 40 fit the budget of 100; the third would need 120.
  assert.deepEqual(h.takeUsed(0).map((u) => [u.head, u.len]), [[heads[0], 40], [heads[1], 40]]);
  assert.equal(h.inflightCount(0), 2);
  h.advance(999);
  assert.deepEqual(h.takeUsed(0), []);
  h.advance(1);
  assert.deepEqual(h.takeUsed(0).map((u) => [u.head, u.len]), [[heads[2], 40], [heads[3], 40]]);
  assert.equal(h.inflightCount(0), 0);
  // A request larger than the budget gets one period's worth.
  const big = h.addChain(0, { writable: [500] });
  h.kick(0);
  assert.deepEqual(h.takeUsed(0), []);
  h.advance(1000);
  assert.deepEqual(h.takeUsed(0).map((u) => [u.head, u.len]), [[big, 100]]);
});

Deno.test("rng --max-bytes: a stopping queue gets its waiting requests back empty", () => {
  const h = harness({ maxBytes: 10, periodMs: 60_000 });
  const first = h.addChain(0, { writable: [10] });
  const waiting = h.addChain(0, { writable: [10] });
  h.kick(0);
  assert.deepEqual(h.takeUsed(0).map((u) => u.head), [first]);
  assert.equal(h.pause(0), 0);
  assert.deepEqual(h.takeUsed(0).map((u) => [u.head, u.len]), [[waiting, 0]]);
});

Deno.test("rng: the budget is reported and restored for state save and load", () => {
  const h = harness({ maxBytes: 100, periodMs: 1000 });
  h.addChain(0, { writable: [30] });
  h.kick(0);
  assert.deepEqual(h.handler.command!({ type: "budget" }), { remaining: 70 });
  h.handler.command!({ type: "restore-budget", remaining: 5 });
  h.addChain(0, { writable: [6] });
  h.kick(0);
  h.takeUsed(0);
  assert.equal(h.inflightCount(0), 1);
  h.advance(1000);
  assert.equal(h.takeUsed(0).length, 1);
  assert.throws(() => h.handler.command!({ type: "nonsense" }), /unknown command/);
  assert.deepEqual(harness().handler.command!({ type: "budget" }), { remaining: null });
});
