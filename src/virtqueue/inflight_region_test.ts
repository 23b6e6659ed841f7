import assert from "node:assert/strict";
import {
  DESC_STATE_SPLIT_SIZE,
  INFLIGHT_VERSION,
  InflightQueue,
  inflightQueueOffset,
  inflightQueueRegionSize,
  type InflightRecovery,
  inflightRegionSize,
  prepareInflightQueue,
  QUEUE_REGION_HEADER_SIZE,
} from "./inflight_region.ts";

/** A zeroed region for one queue, as GET_INFLIGHT_FD hands it out. */
function region(queueSize: number): Uint8Array {
  return new Uint8Array(inflightQueueRegionSize(queueSize));
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const header = {
  version: (b: Uint8Array) => view(b).getUint16(8, true),
  descNum: (b: Uint8Array) => view(b).getUint16(10, true),
  lastBatchHead: (b: Uint8Array) => view(b).getUint16(12, true),
  usedIdx: (b: Uint8Array) => view(b).getUint16(14, true),
};

function entry(b: Uint8Array, head: number) {
  const at = QUEUE_REGION_HEADER_SIZE + head * DESC_STATE_SPLIT_SIZE;
  return {
    inflight: b[at],
    next: view(b).getUint16(at + 6, true),
    counter: view(b).getBigUint64(at + 8, true),
  };
}

function setEntry(b: Uint8Array, head: number, inflight: number, counter: bigint, next = 0) {
  const at = QUEUE_REGION_HEADER_SIZE + head * DESC_STATE_SPLIT_SIZE;
  b[at] = inflight;
  view(b).setUint16(at + 6, next, true);
  view(b).setBigUint64(at + 8, counter, true);
}

/** A region that has been used: version 1, desc_num, used_idx. */
function usedRegion(queueSize: number, usedIdx: number, lastBatchHead = 0): Uint8Array {
  const b = region(queueSize);
  view(b).setUint16(8, INFLIGHT_VERSION, true);
  view(b).setUint16(10, queueSize, true);
  view(b).setUint16(12, lastBatchHead, true);
  view(b).setUint16(14, usedIdx, true);
  return b;
}

function open(b: Uint8Array, ringSize: number): InflightQueue {
  const q = InflightQueue.open(b, ringSize);
  if (typeof q === "string") throw new Error(q);
  return q;
}

function recovered(q: InflightQueue, usedIdx: number): InflightRecovery {
  const r = q.recover(usedIdx);
  if (typeof r === "string") throw new Error(r);
  return r;
}

/** Publishes one batch the way the Worker must: completing, used.idx store, completed. */
function publish(q: InflightQueue, heads: number[], usedIdx: number): number {
  for (const h of heads) q.completing(h);
  const next = (usedIdx + heads.length) & 0xffff;
  for (const h of heads) q.completed(h, next);
  return next;
}

Deno.test("region sizes follow QEMU and libvhost-user: ALIGN_UP(16 * n + 2, 64) per queue", () => {
  assert.equal(inflightQueueRegionSize(128), 2112);
  assert.equal(inflightQueueRegionSize(256), 4160);
  assert.equal(inflightQueueRegionSize(1), 64);
  assert.equal(inflightQueueRegionSize(4), 128);
  assert.equal(inflightRegionSize(4, 128), 4 * 2112);
  assert.equal(inflightQueueOffset(3, 128), 3 * 2112);
  for (const n of [1, 2, 3, 4, 5, 64, 1000, 32768]) {
    const size = inflightQueueRegionSize(n);
    assert.equal(size % 64, 0);
    assert.ok(QUEUE_REGION_HEADER_SIZE + n * DESC_STATE_SPLIT_SIZE <= size, `header fits for ${n}`);
  }
  assert.throws(() => inflightQueueRegionSize(0), RangeError);
  assert.throws(() => inflightQueueRegionSize(32769), RangeError);
  assert.throws(() => inflightRegionSize(0, 128), RangeError);
});

Deno.test("a fresh region is initialised by recover() and has nothing in flight", () => {
  const b = region(8);
  b.fill(0xaa, QUEUE_REGION_HEADER_SIZE); // garbage in the entries of an uninitialised region
  assert.equal(prepareInflightQueue(b, 8), undefined);
  assert.equal(header.version(b), 0, "stays version 0 until a ring uses it");
  assert.equal(header.descNum(b), 8);
  const q = open(b, 8);
  const r = recovered(q, 300); // a migration destination starts with a used.idx far from 0
  assert.deepEqual(r, { resubmit: [], count: 0, nextAvail: 300, clearedBatch: 0, fresh: true });
  assert.equal(header.version(b), 1);
  assert.equal(header.usedIdx(b), 300);
  for (let h = 0; h < 8; h++) assert.equal(entry(b, h).inflight, 0);
});

Deno.test("begin/completing/completed keep flags, counters, batch list and used_idx", () => {
  const b = region(8);
  const q = open(b, 8);
  recovered(q, 0);
  q.begin(3);
  q.begin(5);
  q.begin(1);
  assert.deepEqual([3, 5, 1].map((h) => entry(b, h).inflight), [1, 1, 1]);
  assert.deepEqual([3, 5, 1].map((h) => entry(b, h).counter), [0n, 1n, 2n]);
  // 5 completes first, alone.
  q.completing(5);
  assert.equal(header.lastBatchHead(b), 5);
  assert.equal(entry(b, 5).inflight, 1, "still in flight until used.idx is published");
  q.completed(5, 1);
  assert.equal(entry(b, 5).inflight, 0);
  assert.equal(header.usedIdx(b), 1);
  // Then 1 and 3 in one batch.
  q.completing(1);
  q.completing(3);
  assert.equal(header.lastBatchHead(b), 3);
  assert.equal(entry(b, 3).next, 1);
  assert.equal(entry(b, 1).next, 5);
  q.completed(1, 3);
  assert.equal(header.usedIdx(b), 1, "used_idx waits for the whole batch");
  q.completed(3, 3);
  assert.equal(header.usedIdx(b), 3);
  assert.deepEqual([1, 3, 5].map((h) => entry(b, h).inflight), [0, 0, 0]);
});

Deno.test("misuse of the call order throws", () => {
  const q = open(region(4), 4);
  assert.throws(() => q.begin(0), /before recover/);
  recovered(q, 0);
  assert.throws(() => q.recover(0), /twice/);
  assert.throws(() => q.begin(4), RangeError);
  assert.throws(() => q.completed(0, 1), /not given to completing/);
  q.begin(0);
  q.begin(1);
  q.completing(0);
  assert.throws(() => q.completing(0), /twice/);
  q.completing(1);
  q.completed(0, 2);
  assert.throws(() => q.completing(2), /previous batch/);
  q.completed(1, 2);
});

Deno.test("a restart resubmits what was in flight, oldest first, and counters continue", () => {
  const b = region(8);
  let q = open(b, 8);
  recovered(q, 0);
  for (const h of [6, 2, 7, 0]) q.begin(h); // counters 0, 1, 2, 3
  let used = publish(q, [7], 0); // out of order: the third one completes first
  q.begin(4); // counter 4
  used = publish(q, [6], used);
  // Crash. The ring's used.idx is 2; four were popped and two completed.
  assert.equal(prepareInflightQueue(b, 8), undefined);
  q = open(b, 8);
  const r = recovered(q, used);
  assert.deepEqual(r.resubmit, [2, 0, 4]);
  assert.equal(r.count, 3);
  assert.equal(r.nextAvail, 5, "used.idx + in flight = everything popped");
  assert.equal(r.clearedBatch, 0);
  q.begin(1);
  assert.equal(entry(b, 1).counter, 5n, "new submissions come after the resubmitted ones");
});

Deno.test("a crash between completing() and the used.idx store resubmits the batch", () => {
  const b = region(8);
  let q = open(b, 8);
  recovered(q, 10);
  q.begin(0);
  q.begin(1);
  q.completing(1); // used element written, used.idx not published: the guest never saw it
  q = open(b, 8);
  const r = recovered(q, 10);
  assert.deepEqual(r.resubmit, [0, 1]);
  assert.equal(r.nextAvail, 12);
  assert.equal(header.usedIdx(b), 10);
});

Deno.test("a crash after the used.idx store but before completed() clears the last batch", () => {
  const b = region(16);
  let q = open(b, 16);
  recovered(q, 0xfffe); // and across the u16 wrap
  for (const h of [9, 4, 12, 3, 8]) q.begin(h);
  const used = publish(q, [4], 0xfffe); // 0xffff
  q.completing(12);
  q.completing(3);
  q.completing(9);
  // used.idx stored as 0xffff + 3 = 2; only 12 got completed() before the crash.
  q.completed(12, 2);
  assert.equal(header.usedIdx(b), used);
  q = open(b, 16);
  const r = recovered(q, 2);
  assert.equal(r.clearedBatch, 3);
  assert.deepEqual(r.resubmit, [8]);
  assert.equal(r.nextAvail, 3);
  assert.equal(header.usedIdx(b), 2);
  assert.deepEqual([9, 3, 12].map((h) => entry(b, h).inflight), [0, 0, 0]);
  // A second restart with nothing new finds the same state.
  const again = recovered(open(b, 16), 2);
  assert.deepEqual(again.resubmit, [8]);
  assert.equal(again.clearedBatch, 0);
});

Deno.test("a batch of one as libvhost-user writes it: only last_batch_head is cleared", () => {
  const b = usedRegion(8, 5, 6);
  setEntry(b, 6, 1, 40n, 0x1234); // next is never set by libvhost-user: not followed for one
  setEntry(b, 2, 1, 41n);
  const r = recovered(open(b, 8), 6);
  assert.deepEqual(r.resubmit, [2]);
  assert.equal(r.clearedBatch, 1);
  assert.equal(entry(b, 6).inflight, 0);
});

Deno.test("the ring may be smaller than desc_num", () => {
  const b = usedRegion(16, 0);
  setEntry(b, 3, 1, 7n);
  const q = open(b, 8);
  assert.equal(q.descNum, 16);
  assert.deepEqual(recovered(q, 0).resubmit, [3]);
});

Deno.test("hostile regions are refused with a reason and left unchanged", () => {
  const cases: [string, () => Uint8Array, number, number, RegExp][] = [
    [
      "inflight flag 2",
      () => {
        const b = usedRegion(8, 0);
        setEntry(b, 1, 2, 0n);
        return b;
      },
      8,
      0,
      /inflight value 2/,
    ],
    [
      "head beyond the ring",
      () => {
        const b = usedRegion(16, 0);
        setEntry(b, 12, 1, 0n);
        return b;
      },
      8,
      0,
      /head 12 is in flight/,
    ],
    ["batch larger than the ring", () => usedRegion(8, 0), 8, 9, /more than the ring holds/],
    [
      "batch list leaves the ring",
      () => {
        const b = usedRegion(16, 0, 2);
        setEntry(b, 2, 1, 0n, 14);
        return b;
      },
      8,
      2,
      /outside the ring/,
    ],
    [
      "batch list loops",
      () => {
        const b = usedRegion(8, 0, 2);
        setEntry(b, 2, 1, 0n, 3);
        setEntry(b, 3, 1, 1n, 2);
        return b;
      },
      8,
      3,
      /twice/,
    ],
    [
      "counter beyond 2^53",
      () => {
        const b = usedRegion(8, 0);
        setEntry(b, 1, 1, 1n << 60n);
        return b;
      },
      8,
      0,
      /beyond 2\^53/,
    ],
    [
      "duplicate counters",
      () => {
        const b = usedRegion(8, 0);
        setEntry(b, 1, 1, 5n);
        setEntry(b, 4, 1, 5n);
        return b;
      },
      8,
      0,
      /share counter 5/,
    ],
  ];
  for (const [name, make, ringSize, usedIdx, reason] of cases) {
    const b = make();
    const before = b.slice();
    const q = open(b, ringSize);
    const r = q.recover(usedIdx);
    assert.equal(typeof r, "string", name);
    assert.match(r as string, reason, name);
    assert.deepEqual(b, before, `${name}: region unchanged`);
  }
});

Deno.test("hostile headers are refused by open() and prepareInflightQueue()", () => {
  const withHeader = (version: number, descNum: number, features = 0n) => {
    const b = region(8);
    view(b).setBigUint64(0, features, true);
    view(b).setUint16(8, version, true);
    view(b).setUint16(10, descNum, true);
    return b;
  };
  assert.match(InflightQueue.open(withHeader(2, 8), 8) as string, /unknown version 2/);
  assert.match(InflightQueue.open(withHeader(1, 8, 1n), 8) as string, /unknown features/);
  assert.match(InflightQueue.open(withHeader(1, 4), 8) as string, /smaller than the ring/);
  assert.match(InflightQueue.open(withHeader(1, 64), 8) as string, /needs \d+ bytes/);
  assert.match(InflightQueue.open(new Uint8Array(8), 8) as string, /only 8 bytes/);
  assert.match(InflightQueue.open(region(8).subarray(2), 4) as string, /aligned/);
  assert.match(InflightQueue.open(region(8), 0) as string, /out of range/);
  assert.match(prepareInflightQueue(withHeader(1, 4), 8)!, /desc_num is 4/);
  assert.match(prepareInflightQueue(withHeader(3, 8), 8)!, /unknown version 3/);
  assert.match(prepareInflightQueue(withHeader(1, 8, 2n), 8)!, /unknown features/);
  assert.match(prepareInflightQueue(new Uint8Array(64), 8)!, /need 192/);
  assert.equal(prepareInflightQueue(withHeader(1, 8), 8), undefined);
});

Deno.test("queue slices of one region are independent", () => {
  const all = new Uint8Array(inflightRegionSize(2, 4));
  const size = inflightQueueRegionSize(4);
  const q0 = open(all.subarray(0, size), 4);
  const q1 = open(all.subarray(size, 2 * size), 4);
  recovered(q0, 0);
  recovered(q1, 7);
  q1.begin(2);
  assert.equal(entry(all.subarray(size), 2).inflight, 1);
  assert.equal(entry(all, 2).inflight, 0);
  assert.equal(header.usedIdx(all.subarray(size)), 7);
});
