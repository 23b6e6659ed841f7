import assert from "node:assert/strict";
import { eventfdRead, eventfdWrite, setNonBlocking } from "../../ffi/mod.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import { DriverRing } from "./driver_ring.ts";
import { SharedGuestMemory } from "./shared_memory.ts";

function setup(eventIdx: boolean) {
  const memory = SharedGuestMemory.create({ size: 256 * 1024, guestBase: 0x10_0000 });
  const ring = new DriverRing(memory, { index: 1, size: 8, eventIdx });
  // The device side, as a back-end Worker would see the same memory.
  const device = new SplitQueue({
    size: 8,
    ...ring.layout,
    nextAvail: 0,
    nextUsed: 0,
    eventIdx,
    indirect: false,
  });
  assert.equal(device.attach(memory.guestMemory), undefined);
  setNonBlocking(ring.kickFd, true);
  return {
    memory,
    ring,
    device,
    [Symbol.dispose]() {
      ring.close();
      memory.close();
    },
  };
}

for (const eventIdx of [false, true]) {
  Deno.test(`DriverRing round trip with a device queue (eventIdx ${eventIdx})`, () => {
    using t = setup(eventIdx);
    const buffer = t.memory.alloc(64);
    const head = t.ring.publish([{ addr: buffer, len: 64, writable: true }]);
    assert.equal(t.ring.notify(), true, "first chain needs a kick");
    assert.equal(eventfdRead(t.ring.kickFd), 1);
    assert.equal(t.ring.notify(), false, "nothing new since");

    const chain = t.device.popAvail();
    assert.ok(chain !== undefined && !("ringError" in chain));
    assert.equal(chain.head, head);
    assert.deepEqual(chain.segments, [{ addr: buffer, len: 64, writable: true }]);
    assert.equal(t.ring.hasUsed(), false);
    assert.equal(t.ring.waitForUsed(performance.now() + 20), false, "times out while empty");

    t.device.pushUsed(chain.head, 17);
    assert.equal(t.ring.waitForUsed(performance.now() + 1000), true);
    assert.deepEqual(t.ring.takeUsed(), { id: head, len: 17 });
    assert.equal(t.ring.takeUsed(), undefined);
    assert.equal(t.ring.hasUsed(), false);
  });
}

Deno.test("DriverRing waits on its call eventfd and arms used_event", () => {
  using t = setup(true);
  const buffer = t.memory.alloc(16);
  t.ring.publish([{ addr: buffer, len: 16, writable: false }]);
  const chain = t.device.popAvail();
  assert.ok(chain !== undefined && !("ringError" in chain));
  // Nothing used yet: the wait arms used_event = 0, then times out.
  assert.equal(t.ring.waitForUsed(performance.now() + 10), false);
  t.device.pushUsed(chain.head, 0);
  assert.equal(t.device.needsNotification(), true, "used_event asks for this interrupt");
  eventfdWrite(t.ring.callFd, 1);
  assert.equal(t.ring.waitForUsed(performance.now() + 1000), true);
  assert.deepEqual(t.ring.takeUsed(), { id: chain.head, len: 0 });
  // A stale call wakes the next wait, which consumes it and still times out.
  assert.equal(t.ring.waitForUsed(performance.now() + 20), false);
  assert.equal(eventfdRead(t.ring.callFd), 0, "the call was consumed");
});

Deno.test("DriverRing.vringAddress carries this process's addresses", () => {
  using t = setup(false);
  const a = t.ring.vringAddress();
  assert.equal(a.index, 1);
  assert.equal(a.descUserAddr, t.memory.mapAddress + BigInt(t.ring.layout.descGpa - 0x10_0000));
  assert.equal(a.availUserAddr, t.memory.userAddr(t.ring.layout.availGpa));
  assert.equal(a.usedUserAddr, t.memory.userAddr(t.ring.layout.usedGpa));
  assert.equal(t.ring.layout.descGpa % 4096, 0);
});
