/**
 * The benchmark's pipelined FUSE sender (scripts/fs_pipeline.ts) against a
 * real `vhostd fs`: many READs in flight over two request queues, each
 * reply handed to its own request's callback with its own bytes, FORGET on
 * the high-priority queue, and the slot limit.
 */

import assert from "node:assert/strict";
import { O_RDONLY } from "../ffi/mod.ts";
import { HIPRIO_QUEUE } from "../src/devices/fs/fs_spec.ts";
import { FuseOpcode } from "../src/devices/fs/fuse/mod.ts";
import { FsPipeline } from "../scripts/fs_pipeline.ts";
import { FsFixture, pattern, withVhostdFs } from "./support/fs_fixture.ts";

const BLOCK = 4096;
const BLOCKS = 64;
const DEPTH = 16;

function readArgs(fh: bigint, block: number) {
  return {
    fh,
    offset: BigInt(block * BLOCK),
    size: BLOCK,
    readFlags: 0,
    lockOwner: 0n,
    flags: 0,
  };
}

Deno.test("fs pipeline: 64 READs, 16 in flight over two queues, each reply with its own block", async () => {
  await withVhostdFs(["--num-request-queues", "2"], async (vhostd, dirs) => {
    const blocks = Array.from({ length: BLOCKS }, (_, i) => pattern(BLOCK, i + 1));
    const file = new Uint8Array(BLOCKS * BLOCK);
    blocks.forEach((block, i) => file.set(block, i * BLOCK));
    await Deno.writeFile(`${dirs.share}/blocks.bin`, file);

    using fx = FsFixture.open(vhostd.socketPath, { numRequestQueues: 2, eventIdx: true });
    const d = fx.driver;
    const node = d.lookup(1n, "blocks.bin").nodeid;
    const { fh } = d.open(node, O_RDONLY);
    const pipeline = new FsPipeline(d, fx.memory, DEPTH, 2 * BLOCK);
    try {
      const seen = new Map<number, Uint8Array>();
      const queuesUsed = new Set<number>();
      let next = 0;
      let mostInFlight = 0;
      const send = () => {
        // Backwards through the file: replies cannot match by accident of order.
        const block = BLOCKS - 1 - next++;
        const queue = 1 + (block % 2);
        queuesUsed.add(queue);
        pipeline.submit({
          opcode: FuseOpcode.READ,
          args: readArgs(fh, block),
          nodeid: node,
          replyRoom: BLOCK,
          queue,
        }, (reply) => {
          assert.equal(reply.error, 0);
          assert.ok(reply.latencyMs >= 0);
          seen.set(block, reply.payload.slice());
          if (next < BLOCKS) send();
        });
      };
      for (let i = 0; i < DEPTH; i++) send();
      mostInFlight = pipeline.inFlight;
      pipeline.drain();
      assert.equal(mostInFlight, DEPTH);
      assert.deepEqual([...queuesUsed].sort(), [1, 2]);
      assert.equal(seen.size, BLOCKS);
      for (let i = 0; i < BLOCKS; i++) assert.deepEqual(seen.get(i), blocks[i], `block ${i}`);

      // FORGET has no reply: its callback still runs once the back-end returns the chain.
      let forgotten = false;
      pipeline.submit({
        opcode: FuseOpcode.FORGET,
        args: { nlookup: 1n },
        nodeid: node,
        replyRoom: 0,
        noReply: true,
        queue: HIPRIO_QUEUE,
      }, () => forgotten = true);
      pipeline.drain();
      assert.ok(forgotten);
    } finally {
      pipeline.close();
    }
  });
});

Deno.test("fs pipeline: a request beyond depth + 1 slots, or larger than a slot, is refused", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    Deno.writeFileSync(`${dirs.share}/f`, new Uint8Array(BLOCK));
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    const node = d.lookup(1n, "f").nodeid;
    const { fh } = d.open(node, O_RDONLY);
    const pipeline = new FsPipeline(d, fx.memory, 2, 2 * BLOCK);
    try {
      const read = (room: number) =>
        pipeline.submit({
          opcode: FuseOpcode.READ,
          args: readArgs(fh, 0),
          nodeid: node,
          replyRoom: room,
          queue: 1,
        }, (reply) => assert.equal(reply.error, 0));
      assert.throws(() => read(4 * BLOCK), RangeError);
      for (let i = 0; i < 3; i++) read(BLOCK);
      assert.throws(() => read(BLOCK), /every pipeline slot is in use/);
      pipeline.drain();
      assert.equal(pipeline.inFlight, 0);
      read(BLOCK);
      pipeline.drain();
    } finally {
      pipeline.close();
    }
  });
});
