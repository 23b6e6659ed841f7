/**
 * Micro-benchmark of the device hot path: popAvail + pushUsed on a 256-entry
 * queue. Run with `deno bench src/virtqueue/split_queue_bench.ts`; each
 * iteration handles one full ring (256 pops and 256 pushes), so requests per
 * second = 256 × iter/s. The driver side's refill is outside the timed part.
 *
 * @module
 */

import { arrayBufferRegion, GuestMemory } from "../memory/guest_memory.ts";
import type { DescriptorChain } from "./descriptor_chain.ts";
import { DriverQueue } from "./driver_queue.ts";
import { SplitQueue } from "./split_queue.ts";

const SIZE = 256;

function makeBench(eventIdx: boolean, indirect: boolean) {
  const memory = new GuestMemory([arrayBufferRegion(0, 4 << 20)]);
  const layout = DriverQueue.layout(0x1000, SIZE);
  const driver = new DriverQueue(memory, { size: SIZE, ...layout, eventIdx });
  const queue = new SplitQueue({
    size: SIZE,
    ...layout,
    nextAvail: 0,
    nextUsed: 0,
    eventIdx,
    indirect,
  });
  const error = queue.attach(memory);
  if (error !== undefined) throw new Error(error);
  // A virtio-blk-like request: header, data, status byte.
  const segments = (i: number) => [
    { addr: 0x100000 + i * 16, len: 16, writable: false },
    { addr: 0x200000 + i * 4096, len: 4096, writable: true },
    { addr: 0x180000 + i, len: 1, writable: true },
  ];
  const fill = () => {
    for (let i = 0; i < (indirect ? SIZE : SIZE / 3 | 0); i++) {
      driver.addChain(segments(i), indirect ? { indirectTableGpa: 0x300000 + i * 48 } : {});
    }
  };
  return (b: Deno.BenchContext) => {
    fill();
    b.start();
    let popped: DescriptorChain | undefined;
    for (;;) {
      const next = queue.popAvail();
      if (next === undefined || "ringError" in next) break;
      popped = next;
      queue.pushUsed(popped.head, 4097);
    }
    queue.needsNotification();
    b.end();
    while (driver.takeUsed() !== undefined) { /* drain */ }
  };
}

Deno.bench("256 pops+pushes, indirect chains of 3, event idx", makeBench(true, true));
Deno.bench("85 pops+pushes, direct chains of 3 (ring of 256 descriptors)", makeBench(false, false));
