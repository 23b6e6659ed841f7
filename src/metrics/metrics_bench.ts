/**
 * What `--metrics` costs, measured without the noise of a whole daemon:
 * a ring runner serving a full ring of requests with and without request
 * statistics (the per-request cost in the queue Worker), and one scrape's
 * rendering (the main thread's cost per scrape). Run with
 * `deno bench src/metrics/metrics_bench.ts`.
 *
 * @module
 */

import { arrayBufferRegion, GuestMemory } from "../memory/guest_memory.ts";
import { DriverQueue } from "../virtqueue/driver_queue.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import { DEFERRED, type QueueHandler, type VirtioDevice } from "../devices/device.ts";
import { RingRunner } from "../backend/ring_runner.ts";
import { queueStatsBytes, QueueStatsWriter } from "./queue_stats.ts";
import { DaemonMetrics } from "./daemon_metrics.ts";
import { blkMetricFamilies } from "../devices/blk/blk_metrics.ts";
import { BLK_COUNTERS, type BlkCounter } from "../devices/blk/blk_shared_state.ts";

const SIZE = 256;
/** Requests per iteration: one ring's worth of three-descriptor chains. */
const REQUESTS = SIZE / 3 | 0;

function ringBench(withStats: boolean, deferred: boolean) {
  const memory = new GuestMemory([arrayBufferRegion(0, 4 << 20)]);
  const layout = DriverQueue.layout(0x1000, SIZE);
  const driver = new DriverQueue(memory, { size: SIZE, ...layout, eventIdx: true });
  const queue = new SplitQueue({
    size: SIZE,
    ...layout,
    nextAvail: 0,
    nextUsed: 0,
    eventIdx: true,
    indirect: false,
  });
  const error = queue.attach(memory);
  if (error !== undefined) throw new Error(error);
  const held: Parameters<QueueHandler["handle"]>[0][] = [];
  // Completes at once (a memory-backed disk) or later, as an io_uring completion would.
  const handler: QueueHandler = {
    handle: (chain) => {
      if (!deferred) return 4097;
      held.push(chain);
      return DEFERRED;
    },
  };
  const stats = withStats
    ? new QueueStatsWriter(new SharedArrayBuffer(queueStatsBytes(1)), 0, SIZE)
    : undefined;
  const runner = new RingRunner(0, queue, handler, memory, undefined, stats);
  return (b: Deno.BenchContext) => {
    for (let i = 0; i < REQUESTS; i++) {
      driver.addChain([
        { addr: 0x100000 + i * 16, len: 16, writable: false },
        { addr: 0x200000 + i * 4096, len: 4096, writable: true },
        { addr: 0x180000 + i, len: 1, writable: true },
      ]);
    }
    b.start();
    runner.process();
    for (const chain of held) runner.complete(chain, 4097);
    runner.takeNotification();
    b.end();
    held.length = 0;
    while (driver.takeUsed() !== undefined) { /* drain */ }
  };
}

for (const deferred of [false, true]) {
  const kind = deferred ? "deferred" : "immediate";
  Deno.bench(`${REQUESTS} ${kind} requests, metrics off`, {
    group: kind,
    baseline: true,
  }, ringBench(false, deferred));
  Deno.bench(
    `${REQUESTS} ${kind} requests, metrics on`,
    { group: kind },
    ringBench(true, deferred),
  );
}

const counters = Object.fromEntries(BLK_COUNTERS.map((c) => [c, 12345n])) as Record<
  BlkCounter,
  bigint
>;
const scraped = new DaemonMetrics(
  {
    kind: "blk",
    numQueues: 4,
    aio: "io_uring",
    metrics: () => blkMetricFamilies(counters),
  } as unknown as VirtioDevice,
);

Deno.bench("one scrape of a 4-queue blk device (render)", () => {
  scraped.render();
});
