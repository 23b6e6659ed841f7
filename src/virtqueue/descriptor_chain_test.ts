import assert from "node:assert/strict";
import { arrayBufferRegion, GuestMemory, type WriteObserver } from "../memory/guest_memory.ts";
import {
  DescriptorChain,
  forEachPiece,
  readDescriptorChain,
  type Segment,
} from "./descriptor_chain.ts";
import { DriverQueue } from "./driver_queue.ts";
import {
  DESC_SIZE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "./layout.ts";

const MEM_SIZE = 1 << 20;

class RecordingObserver implements WriteObserver {
  writes: [number, number][] = [];
  markWritten(gpa: number, len: number): void {
    this.writes.push([gpa, len]);
  }
}

function setup(size = 16, memSize = MEM_SIZE) {
  const memory = new GuestMemory([arrayBufferRegion(0, memSize)]);
  const layout = DriverQueue.layout(0x1000, size);
  const driver = new DriverQueue(memory, { size, ...layout });
  const read = (head: number, indirect = false, maxSegments?: number) =>
    readDescriptorChain(memory, layout.descGpa, size, head, { indirect, maxSegments });
  return { memory, layout, driver, read };
}

function fill(memory: GuestMemory, gpa: number, bytes: number[]): void {
  memory.slice(gpa, bytes.length)!.set(bytes);
}

Deno.test("simple chain: one readable and one writable segment", () => {
  const { driver, read } = setup();
  const segments: Segment[] = [
    { addr: 0x10000, len: 16, writable: false },
    { addr: 0x20000, len: 512, writable: true },
  ];
  const head = driver.addChain(segments);
  const chain = read(head);
  assert.equal(chain.error, undefined);
  assert.equal(chain.head, head);
  assert.deepEqual(chain.segments, segments);
  assert.equal(chain.readableLength(), 16);
  assert.equal(chain.writableLength(), 512);
  assert.deepEqual(chain.readableSegments(), [segments[0]]);
  assert.deepEqual(chain.writableSegments(), [segments[1]]);
  assert.equal(chain.descriptorCount, 2);
});

Deno.test("readFrom and writeTo cross segment boundaries", () => {
  const { memory, driver, read } = setup();
  const segments: Segment[] = [
    { addr: 0x10000, len: 3, writable: false },
    { addr: 0x10100, len: 5, writable: false },
    { addr: 0x10200, len: 7, writable: false },
    { addr: 0x20000, len: 4, writable: true },
    { addr: 0x20100, len: 4, writable: true },
  ];
  fill(memory, 0x10000, [0, 1, 2]);
  fill(memory, 0x10100, [3, 4, 5, 6, 7]);
  fill(memory, 0x10200, [8, 9, 10, 11, 12, 13, 14]);
  const chain = read(driver.addChain(segments));
  assert.equal(chain.error, undefined);
  assert.equal(chain.readableLength(), 15);
  assert.equal(chain.writableLength(), 8);

  const dest = new Uint8Array(10);
  assert.equal(chain.readFrom(memory, 2, dest), 10);
  assert.deepEqual([...dest], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  // Short read at the end of the readable part; writable bytes are never read.
  const tail = new Uint8Array(8);
  assert.equal(chain.readFrom(memory, 12, tail), 3);
  assert.deepEqual([...tail.subarray(0, 3)], [12, 13, 14]);
  assert.equal(chain.readFrom(memory, 15, tail), 0);
  assert.equal(chain.readFrom(memory, -1, tail), 0);

  const observer = new RecordingObserver();
  memory.writeObserver = observer;
  assert.equal(chain.writeTo(memory, 3, Uint8Array.of(0xa1, 0xa2, 0xa3, 0xa4)), 4);
  assert.deepEqual([...memory.slice(0x20000, 4)!], [0, 0, 0, 0xa1]);
  assert.deepEqual([...memory.slice(0x20100, 4)!], [0xa2, 0xa3, 0xa4, 0]);
  assert.deepEqual(observer.writes, [[0x20003, 1], [0x20100, 3]]);
  // Past the end of the writable part: only what fits is written and reported.
  observer.writes = [];
  assert.equal(chain.writeTo(memory, 6, Uint8Array.of(1, 2, 3, 4)), 2);
  assert.deepEqual(observer.writes, [[0x20102, 2]]);
  assert.deepEqual([...memory.slice(0x20100, 4)!], [0xa2, 0xa3, 1, 2]);
  // Readable bytes are never written.
  assert.deepEqual([...memory.slice(0x10000, 3)!], [0, 1, 2]);
});

Deno.test("indirect table is followed only when negotiated", () => {
  const { memory, driver, read } = setup();
  const segments: Segment[] = [
    { addr: 0x10000, len: 16, writable: false },
    { addr: 0x11000, len: 4096, writable: false },
    { addr: 0x20000, len: 1, writable: true },
  ];
  const head = driver.addChain(segments, { indirectTableGpa: 0x30000 });
  assert.equal(driver.freeCount(), 15);
  const chain = read(head, true);
  assert.equal(chain.error, undefined);
  assert.deepEqual(chain.segments, segments);
  assert.equal(chain.descriptorCount, 3);
  fill(memory, 0x11000, [42]);
  const one = new Uint8Array(1);
  chain.readFrom(memory, 16, one);
  assert.equal(one[0], 42);

  const refused = read(head, false);
  assert.match(refused.error!, /not negotiated/);
  assert.deepEqual(refused.segments, []);
});

Deno.test("indirect descriptor after direct ones continues in the table", () => {
  const { memory, driver, read } = setup();
  // Head 0 (direct, readable) -> 1 (INDIRECT) -> table of two entries.
  driver.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
  driver.writeRawDescriptor(1, 0x30000, 2 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  writeTableEntry(memory, 0x30000, 0, 0x10100, 4, VIRTQ_DESC_F_NEXT, 1);
  writeTableEntry(memory, 0x30000, 1, 0x20000, 4, VIRTQ_DESC_F_WRITE, 0);
  const chain = read(0, true);
  assert.equal(chain.error, undefined);
  assert.deepEqual(chain.segments, [
    { addr: 0x10000, len: 8, writable: false },
    { addr: 0x10100, len: 4, writable: false },
    { addr: 0x20000, len: 4, writable: true },
  ]);
  assert.equal(chain.descriptorCount, 3);
});

function writeTableEntry(
  memory: GuestMemory,
  tableGpa: number,
  index: number,
  addr: number,
  len: number,
  flags: number,
  next: number,
): void {
  const bytes = memory.slice(tableGpa + index * DESC_SIZE, DESC_SIZE)!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, DESC_SIZE);
  view.setUint32(0, addr % 2 ** 32, true);
  view.setUint32(4, Math.floor(addr / 2 ** 32), true);
  view.setUint32(8, len, true);
  view.setUint16(12, flags, true);
  view.setUint16(14, next, true);
}

Deno.test("indirect table entries are validated like direct ones", () => {
  const { memory, driver, read } = setup();
  driver.writeRawDescriptor(0, 0x30000, 3 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  writeTableEntry(memory, 0x30000, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 2);
  writeTableEntry(memory, 0x30000, 2, 0x20000, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  writeTableEntry(memory, 0x30000, 1, 0x20100, 4, VIRTQ_DESC_F_WRITE, 0);
  const ok = read(0, true);
  assert.equal(ok.error, undefined);
  assert.deepEqual(ok.segments.map((s) => s.addr), [0x10000, 0x20000, 0x20100]);

  // next beyond the indirect table
  writeTableEntry(memory, 0x30000, 1, 0x20100, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
  assert.match(read(0, true).error!, /next index 3 >= indirect table size 3/);
  // loop inside the indirect table
  writeTableEntry(memory, 0x30000, 1, 0x20100, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
  const loop = read(0, true);
  assert.match(loop.error!, /indirect chain longer than its table of 3/);
  assert.equal(loop.segments.length, 3);
});

Deno.test("malformed chains set error and never throw", async (t) => {
  const cases: [string, (d: DriverQueue, m: GuestMemory) => number, RegExp, boolean?][] = [
    ["head out of range", () => 16, /head index 16 >= queue size 16/],
    ["loop via next pointing back", (d) => {
      d.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
      d.writeRawDescriptor(1, 0x10100, 8, VIRTQ_DESC_F_NEXT, 0);
      return 0;
    }, /longer than the queue size 16 \(loop\?\)/],
    ["self loop", (d) => {
      d.writeRawDescriptor(3, 0x10000, 8, VIRTQ_DESC_F_NEXT, 3);
      return 3;
    }, /loop/],
    ["next out of range", (d) => {
      d.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 16);
      return 0;
    }, /next index 16 >= queue size 16/],
    [
      "nested indirect",
      (d, m) => {
        d.writeRawDescriptor(0, 0x30000, DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
        writeTableEntry(m, 0x30000, 0, 0x31000, DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
        return 0;
      },
      /nested indirect table/,
      true,
    ],
    [
      "indirect together with next",
      (d) => {
        d.writeRawDescriptor(0, 0x30000, DESC_SIZE, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
        return 0;
      },
      /INDIRECT together with NEXT/,
      true,
    ],
    [
      "indirect table out of memory",
      (d) => {
        d.writeRawDescriptor(0, MEM_SIZE - DESC_SIZE, 2 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
        return 0;
      },
      /indirect table .* is not inside guest memory/,
      true,
    ],
    [
      "indirect table of length 0",
      (d) => {
        d.writeRawDescriptor(0, 0x30000, 0, VIRTQ_DESC_F_INDIRECT, 0);
        return 0;
      },
      /bad indirect table length 0/,
      true,
    ],
    [
      "indirect table length not a multiple of 16",
      (d) => {
        d.writeRawDescriptor(0, 0x30000, 24, VIRTQ_DESC_F_INDIRECT, 0);
        return 0;
      },
      /bad indirect table length 24/,
      true,
    ],
    [
      "indirect table over 65536 entries",
      (d) => {
        d.writeRawDescriptor(0, 0, DESC_SIZE * 65537, VIRTQ_DESC_F_INDIRECT, 0);
        return 0;
      },
      /bad indirect table length/,
      true,
    ],
    ["segment straddling the end of the region", (d) => {
      d.writeRawDescriptor(0, MEM_SIZE - 8, 16, VIRTQ_DESC_F_WRITE, 0);
      return 0;
    }, /buffer \[0xffff8, \+16\) is not inside guest memory/],
    ["segment entirely outside memory", (d) => {
      d.writeRawDescriptor(0, 2 ** 40, 16, 0, 0);
      return 0;
    }, /not inside guest memory/],
    ["address beyond 2^53", (d) => {
      d.writeRawDescriptor(0, 2 ** 60, 16, 0, 0);
      return 0;
    }, /not inside guest memory/],
    ["readable after writable", (d) => {
      d.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
      d.writeRawDescriptor(1, 0x20000, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
      d.writeRawDescriptor(2, 0x10100, 8, VIRTQ_DESC_F_NEXT, 3);
      d.writeRawDescriptor(3, 0x20100, 8, VIRTQ_DESC_F_WRITE, 0);
      return 0;
    }, /descriptor 2: readable descriptor after a writable one/],
  ];
  for (const [name, build, expected, indirect] of cases) {
    await t.step(name, () => {
      const { memory, driver, read } = setup();
      const head = build(driver, memory);
      let chain: DescriptorChain | undefined;
      assert.doesNotThrow(() => {
        chain = read(head, indirect ?? false);
      });
      assert.ok(chain!.error !== undefined, `${name}: expected an error`);
      assert.match(chain!.error!, expected);
    });
  }
});

Deno.test("malformed chain keeps the segments parsed before the fault", () => {
  const { driver, read } = setup();
  driver.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
  driver.writeRawDescriptor(1, 0x20000, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
  driver.writeRawDescriptor(2, 0x10100, 8, 0, 0);
  const chain = read(0);
  assert.match(chain.error!, /readable descriptor after a writable one/);
  assert.deepEqual(chain.segments, [
    { addr: 0x10000, len: 8, writable: false },
    { addr: 0x20000, len: 8, writable: true },
  ]);
});

Deno.test("a chain of exactly queue-size descriptors is accepted", () => {
  const { driver, read } = setup(8);
  for (let i = 0; i < 8; i++) {
    driver.writeRawDescriptor(i, 0x10000 + i * 0x100, 4, i < 7 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
  }
  const chain = read(0);
  assert.equal(chain.error, undefined);
  assert.equal(chain.segments.length, 8);
  // One more link back to the start makes it a loop.
  driver.writeRawDescriptor(7, 0x10700, 4, VIRTQ_DESC_F_NEXT, 0);
  assert.match(read(0).error!, /loop/);
});

Deno.test("maxSegments caps the number of descriptors", () => {
  const { driver, read } = setup();
  const head = driver.addChain([
    { addr: 0x10000, len: 1, writable: false },
    { addr: 0x10001, len: 1, writable: false },
    { addr: 0x10002, len: 1, writable: true },
  ]);
  assert.equal(read(head, false, 3).error, undefined);
  assert.match(read(head, false, 2).error!, /more than 2 descriptors/);
});

Deno.test("zero-length descriptors are skipped without address checks", () => {
  const { driver, read } = setup();
  driver.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
  driver.writeRawDescriptor(1, 2 ** 40, 0, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
  driver.writeRawDescriptor(2, 0x10100, 8, VIRTQ_DESC_F_NEXT, 3);
  driver.writeRawDescriptor(3, 0x20000, 8, VIRTQ_DESC_F_WRITE, 0);
  const chain = read(0);
  assert.equal(chain.error, undefined);
  assert.equal(chain.descriptorCount, 4);
  assert.deepEqual(chain.segments.map((s) => [s.addr, s.writable]), [
    [0x10000, false],
    [0x10100, false],
    [0x20000, true],
  ]);
});

Deno.test("total chain length over 2^32 - 1 is refused", () => {
  // 4097 one-MiB descriptors in an indirect table, all over the same memory (a queue of
  // 8192: a chain may not be longer than the queue size).
  const memory = new GuestMemory([arrayBufferRegion(0, 2 * MEM_SIZE)]);
  const size = 8192;
  const layout = DriverQueue.layout(0, size);
  assert.ok(layout.end <= MEM_SIZE);
  const driver = new DriverQueue(memory, { size, ...layout });
  const entries = 4097;
  const tableGpa = MEM_SIZE;
  const segments: Segment[] = [];
  for (let i = 0; i < entries; i++) segments.push({ addr: 0, len: MEM_SIZE, writable: true });
  const head = driver.addChain(segments, { indirectTableGpa: tableGpa });
  const chain = readDescriptorChain(memory, layout.descGpa, size, head, { indirect: true });
  assert.match(chain.error!, /exceeds 2\^32 - 1 bytes/);
  assert.equal(chain.segments.length, 4095);
  // One fewer entry fits.
  const shortHead = driver.addChain(segments.slice(0, 4095), { indirectTableGpa: tableGpa });
  const ok = readDescriptorChain(memory, layout.descGpa, size, shortHead, { indirect: true });
  assert.equal(ok.error, undefined);
  assert.equal(ok.writableLength(), 4095 * MEM_SIZE);
});

Deno.test("a buffer spanning two adjacent regions becomes one segment per region", () => {
  const memory = new GuestMemory([
    arrayBufferRegion(0, 0x10000),
    arrayBufferRegion(0x10000, 0x10000),
  ]);
  const layout = DriverQueue.layout(0, 4);
  const driver = new DriverQueue(memory, { size: 4, ...layout });
  const head = driver.addChain([{ addr: 0xfffc, len: 8, writable: false }]);
  memory.slice(0xfffc, 4)!.set([1, 2, 3, 4]);
  memory.slice(0x10000, 4)!.set([5, 6, 7, 8]);
  const chain = readDescriptorChain(memory, layout.descGpa, 4, head);
  assert.equal(chain.error, undefined);
  assert.deepEqual(chain.segments, [
    { addr: 0xfffc, len: 4, writable: false },
    { addr: 0x10000, len: 4, writable: false },
  ]);
  assert.equal(chain.descriptorCount, 1);
  const dest = new Uint8Array(8);
  assert.equal(chain.readFrom(memory, 0, dest), 8);
  assert.deepEqual([...dest], [1, 2, 3, 4, 5, 6, 7, 8]);
  // Past the second region there is a hole: refused.
  const bad = readDescriptorChain(
    memory,
    layout.descGpa,
    4,
    driver.addChain([{ addr: 0x1fffc, len: 8, writable: false }]),
  );
  assert.match(bad.error!, /not inside guest memory/);
  assert.deepEqual(bad.segments, []);
});

Deno.test("bad queue size or descriptor table address give an error", () => {
  const { memory } = setup();
  assert.match(readDescriptorChain(memory, 0, 3, 0).error!, /invalid queue size 3/);
  assert.match(readDescriptorChain(memory, MEM_SIZE - 16, 4, 0).error!, /descriptor table/);
});

Deno.test("random descriptor tables never throw and always yield consistent chains", () => {
  const size = 64;
  const { memory, layout } = setup(size);
  // xorshift32: deterministic so a failure can be replayed.
  let seed = 0x9e3779b9;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const table = memory.slice(layout.descGpa, size * DESC_SIZE)!;
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  let clean = 0;
  let multiSegment = 0;
  let faulty = 0;
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < size; i++) {
      const at = i * DESC_SIZE;
      // Mostly plausible addresses and lengths so that long chains get built too.
      view.setUint32(at, next() % (MEM_SIZE + 0x1000), true);
      view.setUint32(at + 4, next() % 16 === 0 ? next() : 0, true);
      view.setUint32(at + 8, next() % 8 === 0 ? next() : next() % 0x2000, true);
      view.setUint16(at + 12, next() & 7, true);
      view.setUint16(at + 14, next() % 8 === 0 ? next() & 0xffff : next() % size, true);
    }
    for (let head = 0; head < size; head++) {
      const chain = readDescriptorChain(memory, layout.descGpa, size, head, { indirect: true });
      let seenWritable = false;
      let total = 0;
      for (const s of chain.segments) {
        assert.ok(memory.resolve(s.addr, s.len) !== undefined);
        assert.ok(s.len > 0);
        assert.ok(!(seenWritable && !s.writable));
        seenWritable ||= s.writable;
        total += s.len;
      }
      assert.ok(total <= 0xffffffff);
      assert.equal(chain.readableLength() + chain.writableLength(), total);
      if (chain.error === undefined) clean++;
      else faulty++;
      if (chain.error === undefined && chain.segments.length > 1) multiSegment++;
    }
  }
  // The generator must exercise both outcomes, or this test proves nothing.
  assert.ok(clean > 100 && faulty > 100 && multiSegment > 10, `${clean} ${faulty} ${multiSegment}`);
});

Deno.test("an indirect table longer than the queue size is an error; its chain is still walked", () => {
  const { memory, driver, read } = setup(16);
  // 17 entries (one more than the queue size), three of them chained: header, data, status.
  driver.writeRawDescriptor(0, 0x30000, 17 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  writeTableEntry(memory, 0x30000, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 1);
  writeTableEntry(memory, 0x30000, 1, 0x20000, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
  writeTableEntry(memory, 0x30000, 2, 0x21000, 1, VIRTQ_DESC_F_WRITE, 0);
  const long = read(0, true);
  assert.match(long.error!, /indirect table of 17 descriptors is longer than the queue size 16/);
  // The table lies in guest memory and its links are sound: the segments (and so the
  // status byte) are known.
  assert.deepEqual(long.segments.map((s) => [s.addr, s.len, s.writable]), [
    [0x10000, 16, false],
    [0x20000, 512, true],
    [0x21000, 1, true],
  ]);
  // Exactly the queue size is fine.
  driver.writeRawDescriptor(0, 0x30000, 16 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  assert.equal(read(0, true).error, undefined);
  // A structural fault later in an over-long table is the error reported; the walk stops there.
  driver.writeRawDescriptor(0, 0x30000, 17 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  writeTableEntry(memory, 0x30000, 1, 0x20000, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 40);
  const broken = read(0, true);
  assert.match(broken.error!, /next index 40 >= indirect table size 17/);
  assert.equal(broken.segments.length, 2);
});

Deno.test("direct descriptors plus an indirect table longer than the queue size in all", () => {
  const { memory, driver, read } = setup(16);
  // Two direct descriptors, then a table of 15 chained entries: 17 descriptors > 16.
  driver.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1);
  driver.writeRawDescriptor(1, 0x10100, 8, VIRTQ_DESC_F_NEXT, 2);
  driver.writeRawDescriptor(2, 0x30000, 15 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  for (let i = 0; i < 15; i++) {
    const last = i === 14;
    const flags = VIRTQ_DESC_F_WRITE | (last ? 0 : VIRTQ_DESC_F_NEXT);
    writeTableEntry(memory, 0x30000, i, 0x20000 + i * 0x100, 4, flags, i + 1);
  }
  const chain = read(0, true);
  assert.match(chain.error!, /chain of 17 descriptors is longer than the queue size 16/);
  assert.equal(chain.descriptorCount, 17);
  assert.equal(chain.writableLength(), 15 * 4);
  // One direct descriptor fewer: 16, accepted.
  driver.writeRawDescriptor(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 2);
  assert.equal(read(0, true).error, undefined);
});

Deno.test("forEachPiece visits exactly the range of the segments' byte stream, and stops on request", () => {
  const segments = [
    { addr: 0x1000, len: 16, writable: false },
    { addr: 0x2000, len: 100, writable: true },
    { addr: 0x3000, len: 1, writable: true },
  ];
  const seen: [number, number, number][] = [];
  const visited = forEachPiece(segments, 10, 110, (gpa, len, at) => {
    seen.push([gpa, len, at]);
    return true;
  });
  assert.equal(visited, 107, "the segments end 107 bytes into the range");
  assert.deepEqual(seen, [[0x100a, 6, 0], [0x2000, 100, 6], [0x3000, 1, 106]]);
  const first: number[] = [];
  assert.equal(forEachPiece(segments, 0, 200, (gpa) => (first.push(gpa), false)), 16);
  assert.deepEqual(first, [0x1000]);
  assert.equal(forEachPiece(segments, 117, 5, () => true), 0, "start past the end");
});
