/**
 * `vhostd blk` with no queue option offers as many request queues as QEMU
 * asks for by default (one per vCPU, up to 64) and serves the rings a
 * front-end starts, however few.
 */

import assert from "node:assert/strict";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { withVhostd } from "./support/vhostd_process.ts";

Deno.test("no --num-queues: GET_QUEUE_NUM and the config say 64; four started rings all serve", async () => {
  await withVhostd({ args: ["--ram", "4M"] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, { numQueues: 4, queueSize: 64 });
    assert.equal(s.client.getQueueNum(), 64);
    assert.equal(s.driver.config.numQueues, 64);
    for (let q = 0; q < 4; q++) {
      assert.equal(
        s.driver.write(q, q * 8, pattern(4096, q)).status,
        BlkStatus.OK,
        `write on ${q}`,
      );
    }
    // Each queue's data read back through the next queue.
    for (let q = 0; q < 4; q++) {
      const r = s.driver.read((q + 1) % 4, q * 8, 4096);
      assert.equal(r.status, BlkStatus.OK, `read on ${(q + 1) % 4}`);
      assert.deepEqual(r.data, pattern(4096, q));
    }
  });
});

Deno.test("--num-queues 1 still offers exactly one queue", async () => {
  await withVhostd({ args: ["--ram", "4M", "--num-queues", "1"] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath);
    assert.equal(s.client.getQueueNum(), 1);
    assert.equal(s.driver.config.numQueues, 1);
  });
});
