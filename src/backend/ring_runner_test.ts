import assert from "node:assert/strict";
import { arrayBufferRegion, GuestMemory } from "../memory/guest_memory.ts";
import { DriverQueue } from "../virtqueue/driver_queue.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import { DEFERRED, type HandleResult, type QueueHandler } from "../devices/device.ts";
import {
  CHAINS_PER_CLOCK_LOOK,
  COMPLETIONS_PER_NOTIFY_CHECK,
  type InflightRecorder,
  RingRunner,
} from "./ring_runner.ts";

/** A data half that defers every request and lets the test complete them. */
class DeferringHandler implements QueueHandler {
  readonly held: DescriptorChain[] = [];
  quiesced: number[] = [];
  /** Heads completed synchronously instead of deferred. */
  syncHeads = new Set<number>();

  handle(chain: DescriptorChain, _memory: GuestMemory, _queue: number): HandleResult {
    if (this.syncHeads.has(chain.head)) return 7;
    this.held.push(chain);
    return DEFERRED;
  }

  quiesce(queueIndex: number): void {
    this.quiesced.push(queueIndex);
  }
}

function setup(size = 16, eventIdx = true) {
  const memory = new GuestMemory([arrayBufferRegion(0, 1 << 20)]);
  const layout = DriverQueue.layout(0x1000, size);
  const driver = new DriverQueue(memory, { size, ...layout, eventIdx });
  const queue = new SplitQueue({
    size,
    ...layout,
    nextAvail: 0,
    nextUsed: 0,
    eventIdx,
    indirect: false,
  });
  assert.equal(queue.attach(memory), undefined);
  const handler = new DeferringHandler();
  const runner = new RingRunner(0, queue, handler, memory);
  const add = (n: number) =>
    Array.from(
      { length: n },
      (_, i) => driver.addChain([{ addr: 0x10000 + i * 16, len: 16, writable: true }]),
    );
  const takeAll = () => {
    const out: { id: number; len: number }[] = [];
    for (let u = driver.takeUsed(); u; u = driver.takeUsed()) out.push(u);
    return out;
  };
  return { memory, driver, queue, handler, runner, add, takeAll };
}

Deno.test("deferred requests complete in any order, each exactly once", () => {
  const { handler, runner, add, takeAll } = setup();
  const heads = add(8);
  runner.process();
  assert.equal(runner.inflightCount, 8);
  assert.deepEqual(takeAll(), []);
  // Complete in reverse order, with distinct lengths.
  for (const chain of [...handler.held].reverse()) {
    assert.ok(runner.complete(chain, chain.head + 100));
  }
  assert.equal(runner.inflightCount, 0);
  const used = takeAll();
  assert.deepEqual(used.map((u) => u.id), [...heads].reverse());
  assert.deepEqual(used.map((u) => u.len), [...heads].reverse().map((h) => h + 100));
  // A second completion of the same chain is refused and writes nothing.
  assert.equal(runner.complete(handler.held[0], 1), false);
  assert.deepEqual(takeAll(), []);
});

Deno.test("synchronous and deferred requests mix on one ring", () => {
  const { handler, runner, add, takeAll } = setup();
  const heads = add(4);
  handler.syncHeads.add(heads[1]);
  handler.syncHeads.add(heads[3]);
  runner.process();
  assert.equal(runner.inflightCount, 2);
  assert.deepEqual(takeAll(), [{ id: heads[1], len: 7 }, { id: heads[3], len: 7 }]);
  for (const chain of handler.held) runner.complete(chain, 1);
  assert.deepEqual(takeAll().map((u) => u.id), [heads[0], heads[2]]);
});

Deno.test("a head made available again while in flight breaks the ring", () => {
  const { driver, handler, runner, add, takeAll } = setup();
  const [head] = add(1);
  runner.process();
  const reasons: string[] = [];
  runner.onBroken = (r) => reasons.push(r);
  driver.publishRaw(head);
  runner.process();
  assert.equal(reasons.length, 1);
  assert.match(reasons[0], /still in flight/);
  assert.equal(runner.inflightCount, 1);
  // The request in flight still completes once.
  runner.complete(handler.held[0], 3);
  assert.deepEqual(takeAll(), [{ id: head, len: 3 }]);
});

Deno.test("paused ring takes no new chains until resumed; in-flight ones drain", () => {
  const { memory, handler, runner, add, takeAll } = setup();
  add(2);
  runner.process();
  runner.pause();
  assert.deepEqual(handler.quiesced, [0]);
  add(3);
  runner.process();
  assert.equal(handler.held.length, 2, "no chain popped while paused");
  for (const chain of handler.held) runner.complete(chain, 0);
  assert.equal(runner.inflightCount, 0);
  // Position is exact: two popped, two used.
  assert.equal(runner.queue.state().nextAvail, 2);
  assert.equal(runner.queue.state().nextUsed, 2);
  assert.equal(takeAll().length, 2);
  runner.resume(memory);
  assert.equal(handler.held.length, 5, "the kick missed while paused is served on resume");
});

Deno.test("notification once per batch, as event idx asks", () => {
  const { driver, handler, runner, add } = setup();
  add(4);
  runner.process();
  assert.equal(runner.takeNotification(), false, "nothing completed yet");
  driver.setUsedEvent(0); // interrupt once used.idx passes 0
  for (const chain of handler.held) runner.complete(chain, 0);
  assert.equal(runner.takeNotification(), true);
  assert.equal(runner.takeNotification(), false, "the same batch is not signalled twice");
});

Deno.test("without event idx the NO_INTERRUPT flag suppresses the batch's notification", () => {
  const { driver, handler, runner, add } = setup(16, false);
  add(2);
  runner.process();
  driver.suppressInterrupts(true);
  runner.complete(handler.held[0], 0);
  assert.equal(runner.takeNotification(), false);
  driver.suppressInterrupts(false);
  runner.complete(handler.held[1], 0);
  assert.equal(runner.takeNotification(), true);
});

Deno.test("with onNotify, the completion a waiting driver asked for is signalled at once", () => {
  const { driver, handler, runner, add, takeAll } = setup();
  let signals = 0;
  runner.onNotify = () => signals++;
  add(4);
  runner.process();
  driver.setUsedEvent(0); // the driver waits for its first reply
  runner.complete(handler.held[0], 0);
  assert.equal(signals, 1, "signalled before the rest of the batch completed");
  runner.complete(handler.held[1], 0);
  assert.equal(signals, 1, "the driver asked for no second interrupt");
  // The driver took both and waits again.
  assert.equal(takeAll().length, 2);
  driver.setUsedEvent(2);
  runner.complete(handler.held[2], 0);
  runner.complete(handler.held[3], 0);
  assert.equal(signals, 2);
  assert.equal(runner.takeNotification(), false, "nothing is left for the end of the round");
});

Deno.test("with onNotify, a burst is signalled every COMPLETIONS_PER_NOTIFY_CHECK and at its end", () => {
  const { driver, handler, queue, runner, add, takeAll } = setup(64);
  const count = COMPLETIONS_PER_NOTIFY_CHECK + 4;
  const signalledAt: number[] = [];
  // A driver that sleeps whenever it has taken everything: each interrupt
  // wakes it, it takes what is there and asks for the next one.
  let taken = 0;
  runner.onNotify = () => {
    signalledAt.push(queue.nextUsed);
    taken += takeAll().length;
    driver.setUsedEvent(taken);
  };
  for (const head of add(count)) handler.syncHeads.add(head);
  driver.setUsedEvent(0);
  runner.process();
  assert.deepEqual(signalledAt, [COMPLETIONS_PER_NOTIFY_CHECK, count]);
  assert.equal(runner.takeNotification(), false, "the last completion was signalled already");

  // One chain at a time (a driver at depth 1): each reply is signalled at once.
  signalledAt.length = 0;
  for (let i = 0; i < 3; i++) {
    for (const head of add(1)) handler.syncHeads.add(head);
    runner.process();
  }
  assert.deepEqual(signalledAt, [count + 1, count + 2, count + 3]);
});

Deno.test("with onNotify, replies a burst left unsignalled are signalled at the end of the round", () => {
  const { driver, handler, runner, add } = setup(64);
  let signals = 0;
  runner.onNotify = () => signals++;
  const heads = add(4);
  // Three answered at once while the fourth still waits in the ring; the fourth is deferred.
  for (const head of heads.slice(0, 3)) handler.syncHeads.add(head);
  driver.setUsedEvent(0);
  runner.process();
  assert.equal(signals, 0, "left to the round while more chains waited");
  assert.equal(runner.takeNotification(), true, "the round's end signals them");
  runner.complete(handler.held[0], 0);
  assert.equal(signals, 0, "the driver asked for no second interrupt");
});

Deno.test("with onNotify and without event idx, NO_INTERRUPT decides each completion", () => {
  const { driver, handler, runner, add } = setup(16, false);
  let signals = 0;
  runner.onNotify = () => signals++;
  add(3);
  runner.process();
  driver.suppressInterrupts(true);
  runner.complete(handler.held[0], 0);
  assert.equal(signals, 0);
  driver.suppressInterrupts(false);
  runner.complete(handler.held[1], 0);
  runner.complete(handler.held[2], 0);
  assert.equal(signals, 2);
  assert.equal(runner.takeNotification(), false);
});

Deno.test("a throwing data half fails only its request", () => {
  const { runner, add, takeAll, memory, queue } = setup();
  const throwing: QueueHandler = {
    handle() {
      throw new Error("device bug");
    },
  };
  const r = new RingRunner(0, queue, throwing, memory);
  add(2);
  r.process();
  assert.equal(r.inflightCount, 0);
  assert.deepEqual(takeAll().map((u) => u.len), [0, 0]);
  assert.equal(runner.broken, undefined);
});

Deno.test("inflight recorder sees begin, completing and completed in order", () => {
  const { queue, memory, handler, add } = setup();
  const events: string[] = [];
  const recorder: InflightRecorder = {
    begin: (h) => events.push(`begin ${h}`),
    completing: (h) => events.push(`completing ${h}`),
    completed: (h, used) => events.push(`completed ${h} used=${used}`),
  };
  const runner = new RingRunner(0, queue, handler, memory, recorder);
  const [a, b] = add(2);
  runner.process();
  runner.complete(handler.held[1], 0);
  runner.complete(handler.held[0], 0);
  assert.deepEqual(events, [
    `begin ${a}`,
    `begin ${b}`,
    `completing ${b}`,
    `completed ${b} used=1`,
    `completing ${a}`,
    `completed ${a} used=2`,
  ]);
});

Deno.test("resubmit hands a head to the device without reading the avail ring", () => {
  const { driver, handler, runner, queue } = setup();
  const head = driver.addChain([{ addr: 0x20000, len: 8, writable: true }]);
  runner.resubmit(head);
  assert.equal(handler.held.length, 1);
  assert.equal(handler.held[0].head, head);
  assert.equal(queue.state().nextAvail, 0);
});

/** A data half that pulls its chains: pops only as many as it has data for. */
class PullingHandler implements QueueHandler {
  readonly ready: number[] = [];
  readonly popped: DescriptorChain[] = [];
  /** Chains the device has data for. */
  wanted = 0;
  pop: () => DescriptorChain | undefined = () => undefined;

  handle(): HandleResult {
    throw new Error("handle must not be called for a pulled queue");
  }

  pullsQueue(): boolean {
    return true;
  }

  queueReady(queueIndex: number): void {
    this.ready.push(queueIndex);
    while (this.wanted > 0) {
      const chain = this.pop();
      if (!chain) return;
      this.popped.push(chain);
      this.wanted--;
    }
  }
}

function pullSetup() {
  const base = setup();
  const handler = new PullingHandler();
  const runner = new RingRunner(0, base.queue, handler, base.memory);
  handler.pop = () => runner.pop();
  return { ...base, handler, runner };
}

Deno.test("a pulled ring: chains stay available until the device pops them", () => {
  const { handler, runner, add, takeAll, queue } = pullSetup();
  add(3);
  runner.process();
  assert.deepEqual(handler.ready, [0]);
  assert.equal(handler.popped.length, 0);
  assert.equal(runner.inflightCount, 0);
  // Chains the device does not want yet are no work for busy polling.
  assert.equal(runner.hasWork(), false);
  assert.equal(queue.hasAvailable(), true);
  handler.wanted = 2;
  runner.process();
  assert.equal(handler.popped.length, 2);
  assert.equal(runner.inflightCount, 2);
  assert.ok(runner.complete(handler.popped[1], 5));
  assert.ok(runner.complete(handler.popped[0], 6));
  assert.deepEqual(takeAll().map((u) => u.len), [5, 6]);
  // The third chain is still there for a later pop; a fourth pop finds nothing.
  assert.ok(runner.pop());
  assert.equal(runner.pop(), undefined);
});

Deno.test("a pulled ring: an empty pop asks the driver to kick", () => {
  const { handler, runner, driver, add } = pullSetup();
  handler.wanted = 1;
  runner.process();
  assert.equal(handler.popped.length, 0);
  add(1);
  // Notifications are on after the empty pop, so the driver's new chain needs a kick.
  assert.equal(driver.needsKick(), true);
  runner.process();
  assert.equal(handler.popped.length, 1);
});

Deno.test("a pulled ring: pop while paused returns nothing and the device is told on resume", () => {
  const { handler, runner, memory, add } = pullSetup();
  add(2);
  runner.pause();
  assert.equal(runner.pop(), undefined);
  assert.equal(runner.inflightCount, 0);
  handler.wanted = 2;
  runner.resume(memory);
  assert.deepEqual(handler.ready, [0]);
  assert.equal(handler.popped.length, 2);
});

Deno.test("a turn past its deadline stops with chains left and no kick to wait for", () => {
  const { handler, runner, driver, add } = setup(64);
  add(CHAINS_PER_CLOCK_LOOK * 2 + 3);
  driver.needsKick();
  // A deadline already passed: the first look at the clock ends the turn.
  assert.equal(runner.process(0), true);
  assert.equal(handler.held.length, CHAINS_PER_CLOCK_LOOK);
  // Notifications stay off: the Worker comes back by itself, the driver is not asked to kick.
  add(1);
  assert.equal(driver.needsKick(), false);
  assert.equal(runner.process(0), true);
  assert.equal(handler.held.length, CHAINS_PER_CLOCK_LOOK * 2);
  // Without a deadline the rest is taken and notifications are back on.
  assert.equal(runner.process(), false);
  assert.equal(handler.held.length, CHAINS_PER_CLOCK_LOOK * 2 + 4);
  add(1);
  assert.equal(driver.needsKick(), true);
});

Deno.test("a turn that ends just as the ring empties waits for a kick", () => {
  const { handler, runner, driver, add } = setup(64);
  add(CHAINS_PER_CLOCK_LOOK);
  assert.equal(runner.process(0), false);
  assert.equal(handler.held.length, CHAINS_PER_CLOCK_LOOK);
  driver.needsKick();
  add(1);
  assert.equal(driver.needsKick(), true);
});

Deno.test("a turn before its deadline takes every chain", () => {
  const { handler, runner, add } = setup(64);
  add(CHAINS_PER_CLOCK_LOOK * 3);
  assert.equal(runner.process(performance.now() + 60_000), false);
  assert.equal(handler.held.length, CHAINS_PER_CLOCK_LOOK * 3);
});
