import assert from "node:assert/strict";
import {
  bucketIndex,
  Histogram,
  LATENCY_BOUNDS_SECONDS,
  TRANSFER_BOUNDS_SECONDS,
} from "./histogram.ts";

Deno.test("latency buckets are log-spaced from 10 µs to 10 s", () => {
  assert.equal(LATENCY_BOUNDS_SECONDS[0], 1e-5);
  assert.equal(LATENCY_BOUNDS_SECONDS.at(-1), 10);
  assert.deepEqual(LATENCY_BOUNDS_SECONDS.slice(0, 4), [1e-5, 2.5e-5, 5e-5, 1e-4]);
  assert.equal(LATENCY_BOUNDS_SECONDS.length, 19);
  assert.equal(TRANSFER_BOUNDS_SECONDS[0], 1e-3);
  assert.equal(TRANSFER_BOUNDS_SECONDS.at(-1), 1000);
});

Deno.test("an observation lands in the first bucket whose bound it does not exceed", () => {
  const bounds = [1, 2.5, 5];
  assert.equal(bucketIndex(bounds, 0), 0);
  assert.equal(bucketIndex(bounds, 1), 0); // le: equal to the bound is inside
  assert.equal(bucketIndex(bounds, 1.0001), 1);
  assert.equal(bucketIndex(bounds, 5), 2);
  assert.equal(bucketIndex(bounds, 6), 3); // above every bound: the +Inf bucket
  const h = new Histogram(bounds);
  for (const v of [0.5, 2, 2, 100]) h.observe(v);
  assert.deepEqual([...h.counts], [1, 2, 0, 1]);
  assert.equal(h.sum, 104.5);
});
