/**
 * Malformed descriptor chains against a real vhostd process: each one must
 * complete (with IOERR/UNSUPP when a status byte is addressable, or at least
 * come back in the used ring), and the ring must keep serving normal
 * requests before and after.
 */

import assert from "node:assert/strict";
import { BlkRequestType, BlkStatus, SECTOR_SIZE } from "../src/devices/blk/blk_spec.ts";
import { type BlkCompletion, STATUS_UNSET, writeBlkHeader } from "../src/frontend/mod.ts";
import {
  VIRTQ_DESC_F_INDIRECT as INDIRECT,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
} from "../src/virtqueue/layout.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const DISK_SIZE = 2 * 2 ** 20;
const QUEUE_SIZE = 16;
/** Raw chains use the top of the descriptor table, away from the driver's own chains. */
const RAW = QUEUE_SIZE - 4;

interface RawDescriptor {
  addr: number;
  len: number;
  flags: number;
  next?: number;
}

/** Buffers for one raw request: a header, a data sector and a status byte. */
class RawRequest {
  readonly header: number;
  readonly data: number;
  readonly status: number;

  constructor(readonly s: BlkFixture, type: number = BlkRequestType.IN, sector = 0) {
    this.header = s.memory.alloc(16, 16);
    this.data = s.memory.alloc(SECTOR_SIZE, SECTOR_SIZE);
    this.status = s.memory.alloc(1, 1);
    writeBlkHeader(s.memory.bytes(this.header, 16), type, sector);
    s.memory.bytes(this.status, 1)[0] = STATUS_UNSET;
  }

  /** The status byte as the back-end left it. */
  statusByte(): number {
    return this.s.memory.bytes(this.status, 1)[0];
  }

  /** Writes `descriptors` at RAW, RAW+1, ... (next defaults to the following one) and submits. */
  submit(descriptors: RawDescriptor[], head: number = RAW): BlkCompletion {
    const queue = this.s.driver.ring(0).queue;
    descriptors.forEach((d, i) =>
      queue.writeRawDescriptor(RAW + i, d.addr, d.len, d.flags, d.next ?? RAW + i + 1)
    );
    const token = this.s.driver.submitRaw(0, head);
    return this.s.driver.waitFor(0, token);
  }
}

/** Writes an indirect table of `descriptors` in guest memory; returns its address. */
function indirectTable(s: BlkFixture, descriptors: RawDescriptor[]): number {
  const gpa = s.memory.alloc(descriptors.length * 16, 16);
  const view = new DataView(s.memory.bytes(gpa, descriptors.length * 16).buffer);
  const base = s.memory.bytes(gpa, 1).byteOffset;
  descriptors.forEach((d, i) => {
    const at = base + i * 16;
    view.setBigUint64(at, BigInt(d.addr), true);
    view.setUint32(at + 8, d.len, true);
    view.setUint16(at + 12, d.flags, true);
    view.setUint16(at + 14, d.next ?? i + 1, true);
  });
  return gpa;
}

let healthySeed = 0;
/** A normal write + read on queue 0 must still work. */
function assertHealthy(s: BlkFixture): void {
  const seed = ++healthySeed;
  const data = pattern(2048, seed);
  assert.equal(s.driver.write(0, 64 + (seed % 32) * 4, data).status, BlkStatus.OK);
  const r = s.driver.read(0, 64 + (seed % 32) * 4, 2048);
  assert.equal(r.status, BlkStatus.OK);
  assert.deepEqual(r.data, data);
}

/** Asserts the chain failed with `status` written in its status byte. */
function assertFailedWith(c: BlkCompletion, raw: RawRequest, status: number, what: string): void {
  assert.equal(raw.statusByte(), status, `${what}: status byte`);
  assert.equal(c.written, 1, `${what}: only the status byte is reported written`);
}

/** Asserts the chain came back although no status byte could be written. */
function assertReturnedWithoutStatus(c: BlkCompletion, raw: RawRequest, what: string): void {
  assert.equal(c.written, 0, `${what}: nothing written`);
  assert.equal(raw.statusByte(), STATUS_UNSET, `${what}: status byte untouched`);
}

Deno.test("malformed descriptor chains fail alone; the ring keeps serving", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, { queueSize: QUEUE_SIZE, indirect: true });
    const outside = s.memory.guestEnd + 0x10000;
    assertHealthy(s);

    let r = new RawRequest(s);
    let c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE | NEXT, next: RAW + 1 }, // points at itself
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "descriptor loop");
    assertHealthy(s);

    r = new RawRequest(s);
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE | NEXT, next: QUEUE_SIZE + 7 },
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "next index out of range after the status");
    r = new RawRequest(s);
    c = r.submit([{ addr: r.header, len: 16, flags: NEXT, next: 999 }]);
    assertReturnedWithoutStatus(c, r, "next index out of range after the header");
    assertHealthy(s);

    r = new RawRequest(s);
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: outside, len: 512, flags: WRITE | NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assertReturnedWithoutStatus(c, r, "data buffer outside guest memory");
    r = new RawRequest(s);
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: 2 ** 60, len: 512, flags: WRITE | NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assertReturnedWithoutStatus(c, r, "data buffer at 2^60");
    r = new RawRequest(s);
    c = r.submit([{ addr: outside, len: 16, flags: NEXT }, {
      addr: r.status,
      len: 1,
      flags: WRITE,
    }]);
    assertReturnedWithoutStatus(c, r, "header outside guest memory");
    assertHealthy(s);

    r = new RawRequest(s);
    const inner = indirectTable(s, [{ addr: r.data, len: 512, flags: WRITE, next: 0 }]);
    let table = indirectTable(s, [
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE | NEXT },
      { addr: inner, len: 16, flags: INDIRECT },
    ]);
    c = r.submit([{ addr: table, len: 48, flags: INDIRECT }]);
    assertFailedWith(c, r, BlkStatus.IOERR, "nested indirect table");
    r = new RawRequest(s);
    table = indirectTable(s, [
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    c = r.submit([{ addr: table, len: 24, flags: INDIRECT }]);
    assertReturnedWithoutStatus(c, r, "indirect table length not a multiple of 16");
    r = new RawRequest(s);
    c = r.submit([{ addr: outside, len: 32, flags: INDIRECT }]);
    assertReturnedWithoutStatus(c, r, "indirect table outside guest memory");
    assertHealthy(s);

    r = new RawRequest(s, BlkRequestType.OUT);
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE | NEXT },
      { addr: r.data, len: 512, flags: 0 },
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "readable descriptor after a writable one");
    assertHealthy(s);

    r = new RawRequest(s);
    c = r.submit([
      { addr: r.header, len: 8, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "8-byte header");
    r = new RawRequest(s);
    c = r.submit([{ addr: r.status, len: 1, flags: WRITE }]);
    assertFailedWith(c, r, BlkStatus.IOERR, "no header at all");
    assertHealthy(s);

    // Beyond the end of the disk, through the driver's own well-formed chains.
    const capacity = s.driver.config.capacity;
    assert.equal(s.driver.read(0, capacity, 512).status, BlkStatus.IOERR);
    assert.equal(s.driver.read(0, capacity - 1, 1024).status, BlkStatus.IOERR);
    assert.equal(s.driver.write(0, capacity, pattern(512, 1)).status, BlkStatus.IOERR);
    assert.equal(s.driver.write(0, capacity - 1, pattern(512, 2)).status, BlkStatus.OK);
    assert.deepEqual(s.driver.read(0, capacity - 1, 512).data, pattern(512, 2));
    assert.equal(s.driver.read(0, 0, 100).status, BlkStatus.IOERR, "not a multiple of 512");
    // A sector whose byte offset overflows 64 bits.
    r = new RawRequest(s);
    new DataView(s.memory.bytes(r.header, 16).buffer).setBigUint64(
      s.memory.bytes(r.header, 16).byteOffset + 8,
      0xffff_ffff_ffff_fff0n,
      true,
    );
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.data, len: 512, flags: WRITE | NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assert.equal(r.statusByte(), BlkStatus.IOERR, "sector 2^64 - 16");
    assertHealthy(s);

    const unknown = s.driver.waitFor(0, s.driver.submit(0, { op: "raw", type: 99 }));
    assert.equal(unknown.status, BlkStatus.UNSUPP, "unknown request type");
    assertHealthy(s);

    // A head index beyond the queue size in the available ring.
    c = s.driver.waitFor(0, s.driver.submitRaw(0, QUEUE_SIZE + 3));
    assert.equal(c.head, QUEUE_SIZE + 3);
    assert.equal(c.written, 0);
    assertHealthy(s);
    // The ring went round several times; it is still in step.
    assert.equal(s.driver.stopQueue(0), s.driver.ring(0).queue.availIndex());
  });
});

Deno.test("an indirect descriptor without RING_INDIRECT_DESC negotiated fails alone", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, { queueSize: QUEUE_SIZE, indirect: false });
    assert.equal(s.driver.features & (1n << 28n), 0n);
    assertHealthy(s);
    const r = new RawRequest(s);
    const table = indirectTable(s, [
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    const c = r.submit([{ addr: table, len: 32, flags: INDIRECT }]);
    assertReturnedWithoutStatus(c, r, "INDIRECT not negotiated");
    assertHealthy(s);
  });
});

Deno.test("requests malformed for virtio-blk get IOERR in their status byte; I/O goes on", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, { queueSize: QUEUE_SIZE, indirect: true });
    assertHealthy(s);
    // The disk under the sector these requests name, to see that none of them changes it.
    const before = s.driver.read(0, 8, 512).data;

    // IN whose data buffer is device-readable: nothing to read into.
    let r = new RawRequest(s, BlkRequestType.IN, 8);
    let c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.data, len: 512, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "IN with a device-readable data buffer");
    assertHealthy(s);

    // OUT whose data buffer is device-writable: nothing to write.
    r = new RawRequest(s, BlkRequestType.OUT, 8);
    s.memory.bytes(r.data, 512).set(pattern(512, 99));
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.data, len: 512, flags: WRITE | NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "OUT with a device-writable data buffer");
    assert.deepEqual(s.memory.bytes(r.data, 512), pattern(512, 99), "OUT buffer written");
    assertHealthy(s);

    // An indirect table with one descriptor more than the queue size; the chain in it is
    // a well-formed read, so its status byte can be found and reports the error.
    r = new RawRequest(s, BlkRequestType.IN, 8);
    const entries: RawDescriptor[] = [
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.data, len: 512, flags: WRITE | NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ];
    while (entries.length < QUEUE_SIZE + 1) entries.push({ addr: 0, len: 0, flags: 0 });
    const long = indirectTable(s, entries);
    s.memory.bytes(r.data, 512).fill(0x5a);
    c = r.submit([{ addr: long, len: entries.length * 16, flags: INDIRECT }]);
    assertFailedWith(c, r, BlkStatus.IOERR, "indirect table longer than the queue");
    assert.deepEqual(s.memory.bytes(r.data, 512), new Uint8Array(512).fill(0x5a), "data read");
    // The same table cut to the queue size is served.
    r = new RawRequest(s, BlkRequestType.IN, 8);
    const fits = indirectTable(
      s,
      entries.slice(0, QUEUE_SIZE).map((d, i) =>
        i === 0
          ? { ...d, addr: r.header }
          : i === 1
          ? { ...d, addr: r.data }
          : i === 2
          ? { ...d, addr: r.status }
          : d
      ),
    );
    c = r.submit([{ addr: fits, len: QUEUE_SIZE * 16, flags: INDIRECT }]);
    assert.equal(r.statusByte(), BlkStatus.OK, "indirect table of the queue size");
    assert.equal(c.written, 513);
    assert.deepEqual(s.memory.bytes(r.data, 512), before);
    assertHealthy(s);

    // GET_ID with no buffer before the status byte.
    r = new RawRequest(s, BlkRequestType.GET_ID);
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "GET_ID without a buffer");
    assertHealthy(s);

    // A header of 15 bytes.
    r = new RawRequest(s, BlkRequestType.IN, 8);
    c = r.submit([
      { addr: r.header, len: 15, flags: NEXT },
      { addr: r.data, len: 512, flags: WRITE | NEXT },
      { addr: r.status, len: 1, flags: WRITE },
    ]);
    assertFailedWith(c, r, BlkStatus.IOERR, "15-byte header");
    assertHealthy(s);

    // The status byte sharing the last writable descriptor with the data (QEMU's rule: the
    // last byte of the last device-writable buffer) is accepted.
    r = new RawRequest(s, BlkRequestType.IN, 8);
    const both = s.memory.alloc(513, 512);
    s.memory.bytes(both + 512, 1)[0] = STATUS_UNSET;
    c = r.submit([
      { addr: r.header, len: 16, flags: NEXT },
      { addr: both, len: 513, flags: WRITE },
    ]);
    assert.equal(s.memory.bytes(both + 512, 1)[0], BlkStatus.OK, "status in the data buffer");
    assert.equal(c.written, 513);
    assert.deepEqual(s.memory.bytes(both, 512), before);

    assert.deepEqual(s.driver.read(0, 8, 512).data, before, "a refused request changed the disk");
    assertHealthy(s);
    assert.equal(s.driver.stopQueue(0), s.driver.ring(0).queue.availIndex());
  });
});
