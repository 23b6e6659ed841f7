import assert from "node:assert/strict";
import {
  newSpinBudget,
  POLL_MAX_DRIVER_US,
  POLL_MAX_HOST_US,
  pollWindowMs,
  spinnersFor,
  SpinSlot,
} from "./spin_budget.ts";

Deno.test("pollWindowMs: longer for the driver than for the host; --poll-max-us replaces both", () => {
  assert.equal(pollWindowMs(false), POLL_MAX_DRIVER_US / 1000);
  assert.equal(pollWindowMs(true), POLL_MAX_HOST_US / 1000);
  assert.ok(POLL_MAX_DRIVER_US > POLL_MAX_HOST_US);
  assert.equal(pollWindowMs(false, 0), 0);
  assert.equal(pollWindowMs(true, 0), 0);
  assert.equal(pollWindowMs(false, 500), 0.5);
  assert.equal(pollWindowMs(true, 500), 0.5);
});

Deno.test("spinnersFor leaves one CPU free and always lets one Worker spin", () => {
  assert.equal(spinnersFor(1), 1);
  assert.equal(spinnersFor(2), 1);
  assert.equal(spinnersFor(3), 2);
  assert.equal(spinnersFor(16), 15);
  assert.equal(spinnersFor(0), 1);
  assert.equal(spinnersFor(Number.NaN), 1);
});

Deno.test("SpinSlot: no more spinners than the limit, and a place given back is free again", () => {
  const budget = newSpinBudget();
  const a = new SpinSlot(budget, 2);
  const b = new SpinSlot(budget, 2);
  const c = new SpinSlot(budget, 2);
  assert.equal(a.take(), true);
  assert.equal(a.take(), true, "a place already held is not taken twice");
  assert.equal(b.take(), true);
  assert.equal(c.take(), false);
  b.give();
  b.give(); // nothing held: nothing given back
  assert.equal(c.take(), true);
  assert.equal(b.take(), false);
  a.give();
  c.give();
  assert.equal(b.take(), true);
  assert.equal(new Int32Array(budget)[0], 1);
});

Deno.test("SpinSlot: Workers in other threads count against the same limit", async () => {
  const budget = newSpinBudget();
  const url = new URL(
    "data:text/javascript," + encodeURIComponent(`
    self.onmessage = (e) => {
      const count = new Int32Array(e.data, 0, 1);
      Atomics.add(count, 0, 1); // another Worker spinning
      self.postMessage("spinning");
    };`),
  );
  const worker = new Worker(url, { type: "module" });
  try {
    const spinning = new Promise((resolve) => worker.onmessage = resolve);
    worker.postMessage(budget);
    await spinning;
    assert.equal(new SpinSlot(budget, 1).take(), false);
    assert.equal(new SpinSlot(budget, 2).take(), true);
  } finally {
    worker.terminate();
  }
});
