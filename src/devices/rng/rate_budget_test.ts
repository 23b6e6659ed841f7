import assert from "node:assert/strict";
import { RateBudget } from "./rate_budget.ts";

Deno.test("RateBudget grants what remains and is full again after refill", () => {
  const budget = new RateBudget(100, 1000);
  assert.equal(budget.full, true);
  assert.equal(budget.take(60), 60);
  assert.equal(budget.full, false);
  assert.equal(budget.take(60), 40);
  assert.equal(budget.take(1), 0);
  assert.equal(budget.remaining, 0);
  budget.refill();
  assert.equal(budget.remaining, 100);
  assert.equal(budget.take(-5), 0);
});

Deno.test("RateBudget.restore clamps a loaded value; bad limits are refused", () => {
  const budget = new RateBudget(100, 50);
  budget.restore(1e12);
  assert.equal(budget.remaining, 100);
  budget.restore(-3);
  assert.equal(budget.remaining, 0);
  budget.restore(41.9);
  assert.equal(budget.remaining, 41);
  budget.restore(NaN);
  assert.equal(budget.remaining, 100);
  assert.throws(() => new RateBudget(0, 10), RangeError);
  assert.throws(() => new RateBudget(10, 0), RangeError);
  assert.throws(() => new RateBudget(1.5, 10), RangeError);
});
