import assert from "node:assert/strict";
import { arrayBufferRegion, GuestMemory } from "../memory/guest_memory.ts";
import { DriverQueue } from "./driver_queue.ts";
import {
  availEventOffset,
  availRingSize,
  descTableSize,
  isValidQueueSize,
  usedEventOffset,
  usedRingSize,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./layout.ts";

const MEM_SIZE = 1 << 20;

function setup(size = 8, eventIdx = false) {
  const memory = new GuestMemory([arrayBufferRegion(0, MEM_SIZE)]);
  const layout = DriverQueue.layout(0x1000, size);
  const driver = new DriverQueue(memory, { size, ...layout, eventIdx });
  const le = (gpa: number, len: number) => {
    const bytes = memory.slice(gpa, len)!;
    return new DataView(bytes.buffer, bytes.byteOffset, len);
  };
  return { memory, layout, driver, le };
}

Deno.test("layout sizes and queue size validation", () => {
  assert.equal(descTableSize(256), 4096);
  assert.equal(availRingSize(256), 6 + 512);
  assert.equal(usedRingSize(256), 6 + 2048);
  assert.equal(usedEventOffset(256), 4 + 512);
  assert.equal(availEventOffset(256), 4 + 2048);
  for (const ok of [1, 2, 256, 32768]) assert.ok(isValidQueueSize(ok), `${ok}`);
  for (const bad of [0, 3, 100, 65536, -2, 1.5, NaN]) assert.ok(!isValidQueueSize(bad), `${bad}`);
});

Deno.test("vringNeedEvent matches the virtio formula", () => {
  assert.equal(vringNeedEvent(0, 1, 0), true);
  assert.equal(vringNeedEvent(1, 1, 0), false);
  assert.equal(vringNeedEvent(4, 6, 3), true);
  assert.equal(vringNeedEvent(6, 6, 3), false);
  assert.equal(vringNeedEvent(65535, 1, 65534), true);
  assert.equal(vringNeedEvent(0, 0, 0), false);
});

Deno.test("layout is contiguous and aligned", () => {
  const l = DriverQueue.layout(0x1003, 4);
  assert.equal(l.descGpa, 0x1010);
  assert.equal(l.availGpa, 0x1010 + 64);
  assert.equal(l.usedGpa % 4, 0);
  assert.ok(l.usedGpa >= l.availGpa + availRingSize(4));
  assert.ok(l.usedGpa - (l.availGpa + availRingSize(4)) < 4);
  assert.equal(l.end, l.usedGpa + usedRingSize(4));
});

Deno.test("constructor zeroes the rings and checks its arguments", () => {
  const memory = new GuestMemory([arrayBufferRegion(0, MEM_SIZE)]);
  memory.slice(0, 0x4000)!.fill(0xff);
  const layout = DriverQueue.layout(0x1000, 16);
  new DriverQueue(memory, { size: 16, ...layout });
  const zeroed = (gpa: number, len: number) => memory.slice(gpa, len)!.every((b) => b === 0);
  assert.ok(zeroed(layout.descGpa, descTableSize(16)));
  assert.ok(zeroed(layout.availGpa, availRingSize(16)));
  assert.ok(zeroed(layout.usedGpa, usedRingSize(16)));
  assert.equal(memory.slice(layout.end, 1)![0], 0xff, "nothing past the used ring is touched");
  assert.throws(() => new DriverQueue(memory, { size: 12, ...layout }), /invalid queue size/);
  assert.throws(
    () => new DriverQueue(memory, { size: 16, ...layout, usedGpa: layout.usedGpa + 2 }),
    /misaligned/,
  );
  assert.throws(
    () => new DriverQueue(memory, { size: 16, ...layout, usedGpa: MEM_SIZE - 8 }),
    /not inside guest memory/,
  );
});

Deno.test("addChain writes linked descriptors and publishes the head", () => {
  const { layout, driver, le } = setup();
  const head = driver.addChain([
    { addr: 0x1_0000_2000, len: 10, writable: false },
    { addr: 0x3000, len: 20, writable: true },
  ]);
  const d0 = le(layout.descGpa + head * 16, 16);
  assert.equal(d0.getUint32(0, true), 0x2000);
  assert.equal(d0.getUint32(4, true), 1);
  assert.equal(d0.getUint32(8, true), 10);
  assert.equal(d0.getUint16(12, true), VIRTQ_DESC_F_NEXT);
  const d1 = le(layout.descGpa + d0.getUint16(14, true) * 16, 16);
  assert.equal(d1.getUint32(0, true), 0x3000);
  assert.equal(d1.getUint32(8, true), 20);
  assert.equal(d1.getUint16(12, true), VIRTQ_DESC_F_WRITE);
  const avail = le(layout.availGpa, availRingSize(8));
  assert.equal(avail.getUint16(2, true), 1);
  assert.equal(avail.getUint16(4, true), head);
  assert.equal(driver.freeCount(), 6);
  assert.throws(() => driver.addChain([]), /at least one segment/);
});

Deno.test("addChain with an indirect table uses one ring descriptor", () => {
  const { layout, driver, le } = setup();
  const head = driver.addChain([
    { addr: 0x5000, len: 1, writable: false },
    { addr: 0x6000, len: 2, writable: true },
  ], { indirectTableGpa: 0x40000 });
  const d = le(layout.descGpa + head * 16, 16);
  assert.equal(d.getUint32(0, true), 0x40000);
  assert.equal(d.getUint32(8, true), 32);
  assert.equal(d.getUint16(12, true), VIRTQ_DESC_F_INDIRECT);
  const t = le(0x40000, 32);
  assert.equal(t.getUint16(12, true), VIRTQ_DESC_F_NEXT);
  assert.equal(t.getUint16(14, true), 1);
  assert.equal(t.getUint32(16, true), 0x6000);
  assert.equal(t.getUint16(28, true), VIRTQ_DESC_F_WRITE);
  assert.equal(driver.freeCount(), 7);
  assert.throws(
    () => driver.addChain([{ addr: 0, len: 1, writable: false }], { indirectTableGpa: MEM_SIZE }),
    /indirect table outside guest memory/,
  );
  assert.equal(driver.freeCount(), 7, "a failed add allocates nothing");
});

Deno.test("full queue throws; takeUsed frees the chain it allocated", () => {
  const { layout, driver, le } = setup(4);
  const a = driver.addChain([
    { addr: 0x5000, len: 1, writable: false },
    { addr: 0x5001, len: 1, writable: false },
    { addr: 0x5002, len: 1, writable: true },
  ]);
  const b = driver.addChain([{ addr: 0x6000, len: 1, writable: false }]);
  assert.equal(driver.freeCount(), 0);
  assert.throws(() => driver.addChain([{ addr: 0, len: 1, writable: false }]), /virtqueue full/);
  assert.equal(driver.takeUsed(), undefined);
  // Play the device: used elem for chain a, then used.idx.
  const used = le(layout.usedGpa, usedRingSize(4));
  used.setUint32(4, a, true);
  used.setUint32(8, 3, true);
  used.setUint16(2, 1, true);
  assert.deepEqual(driver.takeUsed(), { id: a, len: 3 });
  assert.equal(driver.freeCount(), 3);
  // Descriptors come back and are reused.
  const c = driver.addChain([
    { addr: 0x7000, len: 1, writable: false },
    { addr: 0x7001, len: 1, writable: false },
    { addr: 0x7002, len: 1, writable: false },
  ]);
  assert.equal(driver.freeCount(), 0);
  assert.notEqual(c, b);
  // An id the driver never handed out frees nothing.
  used.setUint32(12, 77, true);
  used.setUint32(16, 0, true);
  used.setUint16(2, 2, true);
  assert.deepEqual(driver.takeUsed(), { id: 77, len: 0 });
  assert.equal(driver.freeCount(), 0);
});

Deno.test("needsKick follows avail_event with event idx", () => {
  const { layout, driver, le } = setup(8, true);
  const availEvent = (v: number) =>
    le(layout.usedGpa, usedRingSize(8)).setUint16(availEventOffset(8), v, true);
  assert.equal(driver.needsKick(), false, "nothing published");
  availEvent(0);
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]); // avail 0 -> 1
  assert.equal(driver.needsKick(), true);
  availEvent(3); // kick me when avail idx passes 3
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]); // 2
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]); // 3
  assert.equal(driver.needsKick(), false);
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]); // 4
  assert.equal(driver.needsKick(), true);
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]); // 5
  assert.equal(driver.needsKick(), false, "avail_event 3 already passed");
  // NO_NOTIFY is ignored when event idx is in use.
  le(layout.usedGpa, 2).setUint16(0, VRING_USED_F_NO_NOTIFY, true);
  availEvent(5);
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]); // 6
  assert.equal(driver.needsKick(), true);
});

Deno.test("needsKick follows NO_NOTIFY without event idx", () => {
  const { layout, driver, le } = setup();
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]);
  assert.equal(driver.needsKick(), true);
  le(layout.usedGpa, 2).setUint16(0, VRING_USED_F_NO_NOTIFY, true);
  driver.addChain([{ addr: 0x5000, len: 1, writable: false }]);
  assert.equal(driver.needsKick(), false);
});

Deno.test("setUsedEvent and suppressInterrupts write the avail ring", () => {
  const { layout, driver, le } = setup();
  const avail = () => le(layout.availGpa, availRingSize(8));
  driver.setUsedEvent(0x1_2345);
  assert.equal(avail().getUint16(usedEventOffset(8), true), 0x2345);
  driver.suppressInterrupts(true);
  assert.equal(avail().getUint16(0, true), VRING_AVAIL_F_NO_INTERRUPT);
  driver.suppressInterrupts(false);
  assert.equal(avail().getUint16(0, true), 0);
});
