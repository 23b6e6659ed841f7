import assert from "node:assert/strict";
import { arrayBufferRegion, GuestMemory } from "../memory/guest_memory.ts";
import { DriverQueue } from "../virtqueue/driver_queue.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import { DEFERRED, type HandleResult, type QueueHandler } from "../devices/device.ts";
import { RingRunner } from "./ring_runner.ts";
import { queueStatsBytes, QueueStatsWriter, readQueueStats } from "../metrics/queue_stats.ts";

/** Defers every request except heads in `throwFor`, for which it throws. */
class Handler implements QueueHandler {
  readonly held: DescriptorChain[] = [];
  readonly throwFor = new Set<number>();

  handle(chain: DescriptorChain, _memory: GuestMemory, _queue: number): HandleResult {
    if (this.throwFor.has(chain.head)) throw new Error("device bug");
    this.held.push(chain);
    return DEFERRED;
  }
}

/** Ring 1 of a two-queue statistics buffer, with a driver to fill it. */
function setup() {
  const memory = new GuestMemory([arrayBufferRegion(0, 1 << 20)]);
  const size = 16;
  const layout = DriverQueue.layout(0x1000, size);
  const driver = new DriverQueue(memory, { size, ...layout, eventIdx: true });
  const queue = new SplitQueue({
    size,
    ...layout,
    nextAvail: 0,
    nextUsed: 0,
    eventIdx: true,
    indirect: false,
  });
  assert.equal(queue.attach(memory), undefined);
  const buffer = new SharedArrayBuffer(queueStatsBytes(2));
  const handler = new Handler();
  const runner = new RingRunner(
    1,
    queue,
    handler,
    memory,
    undefined,
    new QueueStatsWriter(buffer, 1, size),
  );
  const add = (n: number) =>
    Array.from(
      { length: n },
      (_, i) => driver.addChain([{ addr: 0x10000 + i * 64, len: 64, writable: true }]),
    );
  const stats = () => readQueueStats(buffer, 1);
  return { buffer, handler, runner, add, stats, driver };
}

const sum = (a: ArrayLike<number>) => Array.from(a).reduce((x, y) => x + y, 0);

Deno.test("the ring counts requests, written bytes, in-flight and one latency per request", () => {
  const { buffer, handler, runner, add, stats } = setup();
  add(3);
  runner.process();
  assert.equal(stats().started, 3);
  assert.equal(stats().inFlight, 3);
  assert.equal(stats().completed, 0);
  runner.complete(handler.held[0], 7);
  runner.complete(handler.held[2], 9);
  assert.equal(sum(stats().latencyCounts), 0, "timed only when the round ends");
  runner.takeNotification();
  let s = stats();
  assert.equal(s.completed, 2);
  assert.equal(s.writtenBytes, 16);
  assert.equal(s.inFlight, 1);
  assert.equal(sum(s.latencyCounts), 2);
  assert.ok(s.latencySum >= 0);
  runner.complete(handler.held[1], 0);
  runner.takeNotification();
  s = stats();
  assert.equal(s.completed, 3);
  assert.equal(s.inFlight, 0);
  assert.equal(sum(s.latencyCounts), 3);
  // The other queue's block is untouched.
  const other = readQueueStats(buffer, 0);
  assert.equal(other.started + other.completed + sum(other.latencyCounts), 0);
});

Deno.test("framework failures are counted by kind", () => {
  const { handler, runner, add, stats, driver } = setup();
  const heads = add(2);
  handler.throwFor.add(heads[1]);
  runner.process();
  assert.equal(stats().deviceExceptions, 1);
  assert.equal(stats().completed, 1); // failed with len 0, still returned
  assert.ok(runner.complete(handler.held[0], 1));
  assert.equal(runner.complete(handler.held[0], 1), false);
  assert.equal(stats().strayCompletions, 1);
  assert.equal(stats().inFlight, 0);
  // A head made available again while in flight breaks the ring.
  add(1);
  runner.process();
  driver.publishRaw(handler.held[1].head);
  runner.process();
  assert.ok(runner.broken);
  assert.equal(stats().ringBreaks, 1);
});

Deno.test("with onNotify, each reply is timed before it is published", () => {
  const { handler, runner, add, stats, driver } = setup();
  let signals = 0;
  runner.onNotify = () => signals++;
  add(2);
  runner.process();
  for (const [i, chain] of handler.held.entries()) {
    runner.complete(chain, 1);
    // A driver that finds the reply (woken or polling) finds its latency counted too.
    assert.ok(driver.takeUsed() !== undefined);
    assert.equal(sum(stats().latencyCounts), i + 1);
  }
  assert.ok(signals >= 1);
});
