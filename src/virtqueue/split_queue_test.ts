import assert from "node:assert/strict";
import { arrayBufferRegion, GuestMemory, type WriteObserver } from "../memory/guest_memory.ts";
import type { DescriptorChain } from "./descriptor_chain.ts";
import { DriverQueue } from "./driver_queue.ts";
import { availEventOffset, VIRTQ_DESC_F_NEXT, VRING_USED_F_NO_NOTIFY } from "./layout.ts";
import { type RingError, SplitQueue, type SplitQueueState } from "./split_queue.ts";

const MEM_SIZE = 1 << 20;

class RecordingObserver implements WriteObserver {
  writes: [number, number][] = [];
  markWritten(gpa: number, len: number): void {
    this.writes.push([gpa, len]);
  }
}

interface SetupOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  start?: number;
  logUsedGpa?: number;
}

function setup(opts: SetupOptions = {}) {
  const size = opts.size ?? 16;
  const memory = new GuestMemory([arrayBufferRegion(0, MEM_SIZE)]);
  const layout = DriverQueue.layout(0x1000, size);
  const driver = new DriverQueue(memory, { size, ...layout, eventIdx: opts.eventIdx });
  const start = opts.start ?? 0;
  if (start !== 0) driver.setIndices(start, start);
  const state: SplitQueueState = {
    size,
    descGpa: layout.descGpa,
    availGpa: layout.availGpa,
    usedGpa: layout.usedGpa,
    nextAvail: start,
    nextUsed: start,
    eventIdx: opts.eventIdx ?? false,
    indirect: opts.indirect ?? false,
    logUsedGpa: opts.logUsedGpa,
  };
  const queue = new SplitQueue(state);
  assert.equal(queue.attach(memory), undefined);
  return { memory, layout, driver, queue, state };
}

function expectChain(popped: DescriptorChain | undefined | RingError): DescriptorChain {
  assert.ok(popped !== undefined, "expected a chain, ring was empty");
  assert.ok(!("ringError" in popped), "unexpected ring error");
  assert.equal(popped.error, undefined);
  return popped;
}

Deno.test("simple chain round trip between driver and device", () => {
  const { memory, driver, queue } = setup();
  memory.slice(0x10000, 4)!.set([1, 2, 3, 4]);
  const head = driver.addChain([
    { addr: 0x10000, len: 4, writable: false },
    { addr: 0x20000, len: 4, writable: true },
  ]);
  assert.equal(driver.freeCount(), 14);
  assert.equal(queue.pendingCount(), 1);
  assert.equal(queue.availIndex(), 1);

  const chain = expectChain(queue.popAvail());
  assert.equal(chain.head, head);
  assert.equal(queue.popAvail(), undefined);
  assert.equal(queue.pendingCount(), 0);
  const request = new Uint8Array(4);
  chain.readFrom(memory, 0, request);
  chain.writeTo(memory, 0, request.map((b) => b * 10));
  queue.pushUsed(chain.head, 4);

  assert.deepEqual(driver.takeUsed(), { id: head, len: 4 });
  assert.equal(driver.takeUsed(), undefined);
  assert.equal(driver.freeCount(), 16);
  assert.deepEqual([...memory.slice(0x20000, 4)!], [10, 20, 30, 40]);
  assert.equal(queue.state().nextAvail, 1);
  assert.equal(queue.state().nextUsed, 1);
});

Deno.test("several chains complete out of order and free their descriptors", () => {
  const { driver, queue } = setup({ size: 8 });
  const heads = [0, 1, 2].map((i) =>
    driver.addChain([
      { addr: 0x10000 + i * 0x100, len: 16, writable: false },
      { addr: 0x20000 + i * 0x100, len: 16, writable: true },
    ])
  );
  assert.equal(driver.freeCount(), 2);
  assert.throws(
    () =>
      driver.addChain([
        { addr: 0, len: 1, writable: false },
        { addr: 0, len: 1, writable: false },
        { addr: 0, len: 1, writable: false },
      ]),
    /virtqueue full/,
  );
  const chains = [0, 1, 2].map(() => expectChain(queue.popAvail()));
  assert.deepEqual(chains.map((c) => c.head), heads);
  queue.pushUsed(chains[2].head, 7);
  queue.pushUsed(chains[0].head, 5);
  assert.deepEqual(driver.takeUsed(), { id: heads[2], len: 7 });
  assert.deepEqual(driver.takeUsed(), { id: heads[0], len: 5 });
  assert.equal(driver.freeCount(), 6);
  queue.pushUsed(chains[1].head, 0);
  assert.deepEqual(driver.takeUsed(), { id: heads[1], len: 0 });
  assert.equal(driver.freeCount(), 8);
});

Deno.test("16-bit indices wrap around", () => {
  const { driver, queue } = setup({ size: 4, start: 65533 });
  const seen: number[] = [];
  for (let round = 0; round < 5; round++) {
    const heads = [0, 1, 2].map((i) =>
      driver.addChain([{ addr: 0x10000 + i, len: 1, writable: true }])
    );
    assert.equal(queue.pendingCount(), 3);
    for (const expected of heads) {
      const chain = expectChain(queue.popAvail());
      assert.equal(chain.head, expected);
      queue.pushUsed(chain.head, round);
    }
    for (const expected of heads) {
      assert.deepEqual(driver.takeUsed(), { id: expected, len: round });
    }
    seen.push(queue.state().nextAvail);
  }
  assert.deepEqual(seen, [0, 3, 6, 9, 12]);
  assert.equal(queue.state().nextUsed, 12);
  assert.equal(driver.usedIndex(), 12);
  assert.equal(driver.availIndex(), 12);
  assert.equal(driver.freeCount(), 4);
});

Deno.test("avail index more than size ahead is a ring error", () => {
  const { driver, queue } = setup({ size: 4 });
  for (let i = 0; i < 4; i++) driver.publishRaw(0);
  assert.equal(queue.pendingCount(), 4, "a full ring is legal");
  driver.publishRaw(0);
  const pending = queue.pendingCount();
  assert.equal(typeof pending, "string");
  assert.match(pending as string, /5 entries ahead.*queue size 4/);
  const popped = queue.popAvail();
  assert.ok(popped !== undefined && "ringError" in popped);
  assert.match(popped.ringError, /5 entries ahead/);
  assert.equal(queue.state().nextAvail, 0, "a broken ring is not consumed");
});

Deno.test("a batch is taken on one read of avail.idx: what it published stays poppable", () => {
  const { memory, layout, driver, queue } = setup({ size: 4 });
  for (let i = 0; i < 3; i++) driver.publishRaw(i);
  expectChain(queue.popAvail());
  // A hostile driver now moves avail.idx far ahead: the two chains it published before are
  // still taken (they were published), the next read of the index breaks the ring.
  const availIdx = new DataView(memory.regions[0].bytes.buffer, layout.availGpa + 2, 2);
  availIdx.setUint16(0, 200, true);
  assert.equal(expectChain(queue.popAvail()).head, 1);
  assert.equal(expectChain(queue.popAvail()).head, 2);
  const popped = queue.popAvail();
  assert.ok(popped !== undefined && "ringError" in popped);
  assert.equal(queue.state().nextAvail, 3);
  // setNextAvail forgets what was seen: the index is read again.
  availIdx.setUint16(0, 3, true);
  queue.setNextAvail(1);
  assert.equal(expectChain(queue.popAvail()).head, 1);
  assert.equal(expectChain(queue.popAvail()).head, 2);
  assert.equal(queue.popAvail(), undefined);
  assert.equal(queue.hasAvailable(), false);
  driver.publishRaw(3);
  assert.equal(queue.hasAvailable(), true);
  assert.equal(expectChain(queue.popAvail()).head, 3);
});

Deno.test("hostile head in the avail ring yields a chain error, not a throw", () => {
  const { driver, queue } = setup({ size: 4 });
  driver.publishRaw(9);
  driver.writeRawDescriptor(1, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
  driver.publishRaw(1);
  const first = queue.popAvail() as DescriptorChain;
  assert.match(first.error!, /head index 9 >= queue size 4/);
  const second = queue.popAvail() as DescriptorChain;
  assert.match(second.error!, /loop/);
  assert.equal(queue.pendingCount(), 0);
});

Deno.test("indirect chains pop when negotiated", () => {
  const { driver, queue } = setup({ indirect: true });
  const head = driver.addChain([
    { addr: 0x10000, len: 8, writable: false },
    { addr: 0x20000, len: 8, writable: true },
  ], { indirectTableGpa: 0x30000 });
  const chain = expectChain(queue.popAvail());
  assert.equal(chain.head, head);
  assert.equal(chain.segments.length, 2);

  const plain = setup({ indirect: false });
  plain.driver.addChain([{ addr: 0x10000, len: 8, writable: false }], {
    indirectTableGpa: 0x30000,
  });
  assert.match((plain.queue.popAvail() as DescriptorChain).error!, /not negotiated/);
});

Deno.test("attach validates size, alignment and placement", () => {
  const memory = new GuestMemory([arrayBufferRegion(0, MEM_SIZE)]);
  const good: SplitQueueState = {
    size: 16,
    descGpa: 0x1000,
    availGpa: 0x2000,
    usedGpa: 0x3000,
    nextAvail: 0,
    nextUsed: 0,
    eventIdx: false,
    indirect: false,
  };
  assert.equal(new SplitQueue(good).attach(memory), undefined);
  const bad: [Partial<SplitQueueState>, RegExp][] = [
    [{ size: 0 }, /invalid queue size 0/],
    [{ size: 24 }, /invalid queue size 24/],
    [{ size: 65536 }, /invalid queue size/],
    [{ descGpa: 0x1008 }, /descriptor table .* not 16-byte aligned/],
    [{ availGpa: 0x2001 }, /available ring .* not 2-byte aligned/],
    [{ usedGpa: 0x3002 }, /used ring .* not 4-byte aligned/],
    [{ descGpa: MEM_SIZE - 0x80 }, /descriptor table .* not inside guest memory/],
    [{ availGpa: MEM_SIZE - 0x10 }, /available ring .* not inside guest memory/],
    [{ usedGpa: MEM_SIZE - 0x40 }, /used ring .* not inside guest memory/],
    [{ nextAvail: 70000 }, /invalid next avail index/],
  ];
  for (const [change, expected] of bad) {
    const queue = new SplitQueue({ ...good, ...change });
    const error = queue.attach(memory);
    assert.ok(error !== undefined, JSON.stringify(change));
    assert.match(error, expected);
    assert.equal(queue.attached, false);
    assert.throws(() => queue.popAvail(), /not attached/);
  }
});

Deno.test("detach drops the views; state survives a rebuild (migration)", () => {
  const { memory, driver, queue } = setup();
  driver.addChain([{ addr: 0x10000, len: 8, writable: true }]);
  driver.addChain([{ addr: 0x10100, len: 8, writable: true }]);
  const first = expectChain(queue.popAvail());
  queue.pushUsed(first.head, 8);
  queue.detach();
  assert.equal(queue.attached, false);
  assert.throws(() => queue.availIndex(), /not attached/);

  const saved = queue.state();
  saved.nextAvail = 99; // a copy: mutating it must not reach the queue
  assert.equal(queue.state().nextAvail, 1);

  const rebuilt = new SplitQueue(queue.state());
  assert.equal(rebuilt.attach(memory), undefined);
  const second = expectChain(rebuilt.popAvail());
  assert.equal(second.segments[0].addr, 0x10100);
  rebuilt.pushUsed(second.head, 3);
  assert.deepEqual(driver.takeUsed(), { id: first.head, len: 8 });
  assert.deepEqual(driver.takeUsed(), { id: second.head, len: 3 });
});

Deno.test("syncUsedFromRing adopts the used ring's idx", () => {
  const { memory, driver, queue } = setup({ start: 300 });
  const restarted = new SplitQueue({ ...queue.state(), nextUsed: 0 });
  assert.equal(restarted.attach(memory), undefined);
  restarted.syncUsedFromRing();
  assert.equal(restarted.state().nextUsed, 300);
  const head = driver.addChain([{ addr: 0x10000, len: 1, writable: true }]);
  restarted.pushUsed(expectChain(restarted.popAvail()).head, 1);
  assert.deepEqual(driver.takeUsed(), { id: head, len: 1 });
  assert.equal(driver.usedIndex(), 301);
});

Deno.test("event idx: interrupt only when used idx passes used_event", () => {
  const { driver, queue } = setup({ eventIdx: true });
  for (let i = 0; i < 8; i++) driver.addChain([{ addr: 0x10000 + i, len: 1, writable: true }]);
  const chains = Array.from({ length: 8 }, () => expectChain(queue.popAvail()));

  assert.equal(queue.needsNotification(), false, "nothing pushed yet");
  driver.setUsedEvent(0); // "interrupt me when entry 0 is used"
  queue.pushUsed(chains[0].head, 1); // used idx 0 -> 1
  assert.equal(queue.needsNotification(), true);
  assert.equal(queue.needsNotification(), false, "already signalled");

  driver.setUsedEvent(3); // interrupt when used idx goes past 3, i.e. reaches 4
  queue.pushUsed(chains[1].head, 1); // 2
  assert.equal(queue.needsNotification(), false);
  queue.pushUsed(chains[2].head, 1); // 3
  assert.equal(queue.needsNotification(), false);
  queue.pushUsed(chains[3].head, 1); // 4
  assert.equal(queue.needsNotification(), true);

  // A batch that crosses used_event in the middle still notifies.
  driver.setUsedEvent(5);
  queue.pushUsed(chains[4].head, 1); // 5
  queue.pushUsed(chains[5].head, 1); // 6
  queue.pushUsed(chains[6].head, 1); // 7
  assert.equal(queue.needsNotification(), true);
  // used_event left behind: no more interrupts until the index comes round.
  queue.pushUsed(chains[7].head, 1); // 8
  assert.equal(queue.needsNotification(), false);
});

Deno.test("event idx: used_event decision across the 16-bit wrap", () => {
  const { driver, queue } = setup({ eventIdx: true, size: 4, start: 65534 });
  for (let i = 0; i < 3; i++) driver.addChain([{ addr: 0x10000 + i, len: 1, writable: true }]);
  const chains = Array.from({ length: 3 }, () => expectChain(queue.popAvail()));
  driver.setUsedEvent(65535); // notify when used idx reaches 0 (65536)
  queue.pushUsed(chains[0].head, 1); // 65535
  assert.equal(queue.needsNotification(), false);
  queue.pushUsed(chains[1].head, 1); // 0
  assert.equal(queue.needsNotification(), true);
  queue.pushUsed(chains[2].head, 1); // 1
  assert.equal(queue.needsNotification(), false);
});

Deno.test("without event idx, NO_INTERRUPT decides", () => {
  const { driver, queue } = setup();
  for (let i = 0; i < 3; i++) driver.addChain([{ addr: 0x10000 + i, len: 1, writable: true }]);
  const chains = Array.from({ length: 3 }, () => expectChain(queue.popAvail()));
  queue.pushUsed(chains[0].head, 1);
  assert.equal(queue.needsNotification(), true);
  driver.suppressInterrupts(true);
  queue.pushUsed(chains[1].head, 1);
  assert.equal(queue.needsNotification(), false);
  driver.suppressInterrupts(false);
  assert.equal(queue.needsNotification(), false, "nothing new since the last check");
  queue.pushUsed(chains[2].head, 1);
  assert.equal(queue.needsNotification(), true);
});

Deno.test("device notification suppression without event idx: NO_NOTIFY flag", () => {
  const { driver, queue } = setup();
  queue.disableNotifications();
  driver.addChain([{ addr: 0x10000, len: 1, writable: true }]);
  assert.equal(driver.needsKick(), false);
  // Work arrived while disabled: enable reports it.
  assert.equal(queue.enableNotifications(), true);
  expectChain(queue.popAvail());
  assert.equal(queue.enableNotifications(), false);
  driver.addChain([{ addr: 0x10000, len: 1, writable: true }]);
  assert.equal(driver.needsKick(), true);
});

Deno.test("device notification suppression with event idx: avail_event", () => {
  const { memory, layout, driver, queue } = setup({ eventIdx: true });
  const availEvent = () =>
    new DataView(memory.slice(layout.usedGpa, 4096)!.slice().buffer).getUint16(
      availEventOffset(16),
      true,
    );
  assert.equal(queue.enableNotifications(), false);
  assert.equal(availEvent(), 0);
  driver.addChain([{ addr: 0x10000, len: 1, writable: true }]);
  assert.equal(driver.needsKick(), true, "avail idx 0 -> 1 passes avail_event 0");

  // Popping while enabled keeps avail_event at the next index to read.
  expectChain(queue.popAvail());
  assert.equal(availEvent(), 1);
  queue.disableNotifications();
  driver.addChain([{ addr: 0x10000, len: 1, writable: true }]);
  assert.equal(driver.needsKick(), true, "1 -> 2 passes avail_event 1");
  expectChain(queue.popAvail());
  assert.equal(availEvent(), 1, "not advanced while disabled");
  driver.addChain([{ addr: 0x10000, len: 1, writable: true }]);
  assert.equal(driver.needsKick(), false, "2 -> 3 does not pass avail_event 1");
  assert.equal(queue.enableNotifications(), true, "chain 2 is pending");
  assert.equal(availEvent(), 2);
  expectChain(queue.popAvail());
  assert.equal(queue.enableNotifications(), false);
  assert.equal(availEvent(), 3);
});

Deno.test("markWritten sees the exact used ring and data ranges", () => {
  const { memory, layout, driver, queue } = setup({ size: 4, eventIdx: false });
  const observer = new RecordingObserver();
  memory.writeObserver = observer;
  for (let round = 0; round < 6; round++) {
    driver.addChain([
      { addr: 0x10000, len: 4, writable: false },
      { addr: 0x20000, len: 3, writable: true },
      { addr: 0x20100, len: 3, writable: true },
    ]);
    const chain = expectChain(queue.popAvail());
    observer.writes = [];
    chain.writeTo(memory, 1, Uint8Array.of(1, 2, 3, 4));
    queue.pushUsed(chain.head, 5);
    const slot = round % 4;
    assert.deepEqual(observer.writes, [
      [0x20001, 2],
      [0x20100, 2],
      [layout.usedGpa + 4 + 8 * slot, 8],
      [layout.usedGpa + 2, 2],
    ]);
    driver.takeUsed();
  }
  observer.writes = [];
  queue.disableNotifications();
  assert.deepEqual(observer.writes, [[layout.usedGpa, 2]], "used.flags write is logged");
  driver.needsKick();
  assert.equal(driver.needsKick(), false);
  const usedFlags = new DataView(memory.slice(layout.usedGpa, 2)!.slice().buffer).getUint16(
    0,
    true,
  );
  assert.equal(usedFlags, VRING_USED_F_NO_NOTIFY);
});

Deno.test("logUsedGpa moves used ring logging to the log address", () => {
  const logUsedGpa = 0x80000;
  const { memory, driver, queue } = setup({ size: 8, eventIdx: true, logUsedGpa });
  const observer = new RecordingObserver();
  memory.writeObserver = observer;
  driver.addChain([{ addr: 0x20000, len: 2, writable: true }]);
  driver.addChain([{ addr: 0x20000, len: 2, writable: true }]);
  queue.enableNotifications();
  const a = expectChain(queue.popAvail());
  const b = expectChain(queue.popAvail());
  queue.pushUsed(b.head, 2);
  queue.pushUsed(a.head, 1);
  a.writeTo(memory, 0, Uint8Array.of(9));
  const availEventAt = logUsedGpa + availEventOffset(8);
  assert.deepEqual(observer.writes, [
    [availEventAt, 2], // enableNotifications
    [availEventAt, 2], // pop a
    [availEventAt, 2], // pop b
    [logUsedGpa + 4, 8],
    [logUsedGpa + 2, 2],
    [logUsedGpa + 12, 8],
    [logUsedGpa + 2, 2],
    [0x20000, 1], // data writes are logged at their own address
  ]);
});
