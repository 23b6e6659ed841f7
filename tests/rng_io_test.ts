/**
 * `vhostd rng` as a process, driven by the TypeScript front-end through real
 * queue Workers: random bytes in guest memory, the rate limit held by the
 * Worker's own timer, and GET_VRING_BASE answering waiting requests empty
 * with the exact index.
 */

import assert from "node:assert/strict";
import { withVhostd } from "./support/vhostd_process.ts";
import { RngDriver } from "./support/rng_driver.ts";

const WAIT_MS = 30_000;

/** Waits until `count` requests completed; fails after WAIT_MS without progress. */
function collect(driver: RngDriver, count: number) {
  const done: { head: number; len: number }[] = [];
  while (done.length < count) {
    const got = driver.wait(WAIT_MS);
    assert.ok(got.length > 0, `only ${done.length} of ${count} requests completed`);
    done.push(...got);
  }
  return done;
}

Deno.test("vhostd rng: requests of every size get random bytes in guest memory", async () => {
  await withVhostd({ command: "rng", args: [] }, (vhostd) => {
    const driver = RngDriver.connect(vhostd.socketPath);
    try {
      const sizes = [1, 64, 4096, 65536];
      const heads = sizes.map((size) => driver.request(size));
      driver.notify();
      const done = collect(driver, sizes.length);
      for (const [i, head] of heads.entries()) {
        const c = done.find((d) => d.head === head)!;
        assert.equal(c.len, sizes[i]);
      }
      const big = driver.bytes(heads[3], 65536);
      assert.ok(new Set(big).size === 256, "64 KiB of random bytes hold every byte value");
      assert.notDeepEqual(driver.bytes(heads[2], 64), big.subarray(0, 64));
    } finally {
      driver.close();
    }
  });
});

Deno.test("vhostd rng --max-bytes: later requests wait for the Worker's period timer", async () => {
  await withVhostd(
    { command: "rng", args: ["--max-bytes", "256", "--period", "200"] },
    (vhostd) => {
      const driver = RngDriver.connect(vhostd.socketPath);
      try {
        const started = performance.now();
        const heads = [0, 1, 2].map(() => driver.request(256));
        driver.notify();
        const done = collect(driver, 3);
        const elapsed = performance.now() - started;
        assert.deepEqual(done.map((d) => d.head), heads, "answered in arrival order");
        assert.ok(done.every((d) => d.len === 256));
        // Three budgets of 256 bytes: the last request needs two periods to have ended.
        assert.ok(elapsed >= 390, `three periods' bytes came after ${elapsed.toFixed(0)} ms`);
      } finally {
        driver.close();
      }
    },
  );
});

Deno.test("vhostd rng --max-bytes: GET_VRING_BASE returns a waiting request empty, index exact", async () => {
  await withVhostd(
    { command: "rng", args: ["--max-bytes", "100", "--period", "3600000"] },
    (vhostd) => {
      const driver = RngDriver.connect(vhostd.socketPath);
      try {
        const first = driver.request(100);
        const waiting = driver.request(100);
        driver.notify();
        assert.deepEqual(collect(driver, 1), [{ head: first, len: 100 }]);
        // The second waits for an hour-long period; stopping the ring must not wait for it.
        assert.equal(driver.stop(), 2);
        assert.deepEqual(driver.take(), [{ head: waiting, len: 0 }]);
      } finally {
        driver.close();
      }
    },
  );
});
