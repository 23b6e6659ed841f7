import assert from "node:assert/strict";
import { pread, pwrite } from "../../../ffi/mod.ts";
import { setLogLevel } from "../../log.ts";
import { arrayBufferRegion, GuestMemory, type WriteObserver } from "../../memory/guest_memory.ts";
import {
  DescriptorChain,
  DriverQueue,
  type Segment,
  SplitQueue,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../virtqueue/mod.ts";
import { openBacking } from "./backing.ts";
import { BlkDevice } from "./blk_device.ts";
import {
  BlkRequestType,
  BlkStatus,
  DEVICE_ID_LENGTH,
  REQUEST_HEADER_SIZE,
  SECTOR_SIZE,
  WRITE_ZEROES_FLAG_UNMAP,
} from "./blk_spec.ts";
import { BlkRequestHandler } from "./request_handler.ts";

// Failed requests are the point of many tests here: keep their warnings out of the output.
setLogLevel("error");

const MEM_SIZE = 1 << 20;
const QUEUE_SIZE = 512;
const DISK_SECTORS = 512;
const DISK_SIZE = DISK_SECTORS * SECTOR_SIZE;
/** Where the request header goes (rings sit below). */
const HEADER_GPA = 0x4000;
/** Where the status byte goes. */
const STATUS_GPA = 0x4800;
/** Start of the data area. */
const DATA_GPA = 0x10000;
/** What the status byte holds before the device writes it. */
const STATUS_UNSET = 0xee;
const SERIAL = "vhostd-serial-01";

type BackingKind = "ram" | "file";

interface HarnessOptions {
  kind?: BackingKind;
  readOnly?: boolean;
  writeback?: boolean;
}

class RecordingObserver implements WriteObserver {
  ranges: [number, number][] = [];
  markWritten(gpa: number, len: number): void {
    this.ranges.push([gpa, len]);
  }
}

/** Readable segment. */
function r(addr: number, len: number): Segment {
  return { addr, len, writable: false };
}

/** Writable segment. */
function w(addr: number, len: number): Segment {
  return { addr, len, writable: true };
}

/** Bytes that differ from sector to sector and from byte to byte. */
function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (i * 31 + (i >> 9) * 7 + seed * 13 + 1) & 0xff;
  return out;
}

function requestHeader(type: number, sector: bigint | number): Uint8Array {
  const bytes = new Uint8Array(REQUEST_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  view.setUint32(4, 0, true);
  view.setBigUint64(8, BigInt(sector), true);
  return bytes;
}

interface DiscardSegment {
  sector: number;
  sectors: number;
  flags: number;
}

function discardPayload(segments: DiscardSegment[]): Uint8Array {
  const bytes = new Uint8Array(segments.length * 16);
  const view = new DataView(bytes.buffer);
  segments.forEach((s, i) => {
    view.setBigUint64(i * 16, BigInt(s.sector), true);
    view.setUint32(i * 16 + 8, s.sectors, true);
    view.setUint32(i * 16 + 12, s.flags, true);
  });
  return bytes;
}

/** Sorted, de-duplicated guest addresses covered by `ranges`. */
function bytesOf(ranges: readonly (readonly [number, number])[]): number[] {
  const set = new Set<number>();
  for (const [gpa, len] of ranges) for (let i = 0; i < len; i++) set.add(gpa + i);
  return [...set].sort((a, b) => a - b);
}

/** A BlkRequestHandler over a real backing, fed by a driver queue in ArrayBuffer memory. */
class Harness {
  readonly memory = new GuestMemory([arrayBufferRegion(0, MEM_SIZE)]);
  readonly device: BlkDevice;
  readonly handler: BlkRequestHandler;
  readonly driver: DriverQueue;
  readonly queue: SplitQueue;
  readonly #tempPath: string | undefined;

  constructor(opts: HarnessOptions = {}) {
    const kind = opts.kind ?? "ram";
    const readOnly = opts.readOnly ?? false;
    if (kind === "file") {
      this.#tempPath = Deno.makeTempFileSync({ prefix: "vhostd-blk-test-", suffix: ".img" });
      Deno.truncateSync(this.#tempPath, DISK_SIZE);
    }
    const backing = kind === "ram"
      ? openBacking({ kind: "ram", size: DISK_SIZE, readOnly })
      : openBacking({ kind: "file", path: this.#tempPath!, readOnly });
    this.device = new BlkDevice(backing, { numQueues: 1, queueSize: QUEUE_SIZE, serial: SERIAL });
    if (opts.writeback === false) this.device.shared.writeback = false;
    this.handler = new BlkRequestHandler(this.device.workerSetup());
    const layout = DriverQueue.layout(0, QUEUE_SIZE);
    assert.ok(layout.end <= HEADER_GPA, "rings overlap the request area");
    this.driver = new DriverQueue(this.memory, { size: QUEUE_SIZE, ...layout });
    this.queue = new SplitQueue({
      size: QUEUE_SIZE,
      descGpa: layout.descGpa,
      availGpa: layout.availGpa,
      usedGpa: layout.usedGpa,
      nextAvail: 0,
      nextUsed: 0,
      eventIdx: false,
      indirect: false,
    });
    assert.equal(this.queue.attach(this.memory), undefined);
  }

  close(): void {
    this.device.close();
    if (this.#tempPath !== undefined) Deno.removeSync(this.#tempPath);
  }

  put(gpa: number, bytes: Uint8Array): void {
    this.memory.slice(gpa, bytes.length)!.set(bytes);
  }

  get(gpa: number, len: number): Uint8Array {
    return this.memory.slice(gpa, len)!.slice();
  }

  fillDisk(offset: number, bytes: Uint8Array): void {
    assert.equal(pwrite(this.device.backing.fd, bytes, offset), bytes.length);
  }

  disk(offset: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    assert.equal(pread(this.device.backing.fd, out, offset), len);
    return out;
  }

  /** Writes a request header at HEADER_GPA and primes the status byte. */
  prepare(type: number, sector: bigint | number): void {
    this.put(HEADER_GPA, requestHeader(type, sector));
    this.put(STATUS_GPA, Uint8Array.of(STATUS_UNSET));
  }

  /** Publishes `segments`, lets the handler serve the chain and returns the used length. */
  submit(segments: Segment[], observer?: WriteObserver): number {
    const head = this.driver.addChain(segments);
    const popped = this.queue.popAvail();
    assert.ok(popped !== undefined && !("ringError" in popped), "no chain to pop");
    assert.equal(popped.error, undefined);
    const used = this.serve(popped, observer);
    assert.deepEqual(this.driver.takeUsed(), { id: head, len: used });
    return used;
  }

  /** Hands a chain to the handler (observing its guest writes) and completes it. */
  serve(chain: DescriptorChain, observer?: WriteObserver): number {
    this.memory.writeObserver = observer;
    let used: number;
    try {
      used = this.handler.handle(chain, this.memory, 0);
    } finally {
      this.memory.writeObserver = undefined;
    }
    this.queue.pushUsed(chain.head, used);
    return used;
  }

  status(gpa = STATUS_GPA): number {
    return this.get(gpa, 1)[0];
  }

  /** IN request of the given writable data segments; returns [used, status]. */
  read(sector: bigint | number, data: Segment[]): [number, number] {
    this.prepare(BlkRequestType.IN, sector);
    const used = this.submit([r(HEADER_GPA, 16), ...data, w(STATUS_GPA, 1)]);
    return [used, this.status()];
  }

  /** OUT request of the given readable data segments; returns [used, status]. */
  write(sector: bigint | number, data: Segment[]): [number, number] {
    this.prepare(BlkRequestType.OUT, sector);
    const used = this.submit([r(HEADER_GPA, 16), ...data, w(STATUS_GPA, 1)]);
    return [used, this.status()];
  }

  /** DISCARD or WRITE_ZEROES with the given segments; returns [used, status]. */
  discard(type: number, segments: DiscardSegment[]): [number, number] {
    this.prepare(type, 0);
    const payload = discardPayload(segments);
    this.put(DATA_GPA, payload);
    const used = this.submit([
      r(HEADER_GPA, 16),
      r(DATA_GPA, payload.length),
      w(STATUS_GPA, 1),
    ]);
    return [used, this.status()];
  }
}

function withHarness(opts: HarnessOptions, body: (h: Harness) => void): () => void {
  return () => {
    const h = new Harness(opts);
    try {
      body(h);
    } finally {
      h.close();
    }
  };
}

for (const kind of ["ram", "file"] as const) {
  Deno.test(
    `${kind}: IN and OUT round trip through single buffers`,
    withHarness({ kind }, (h) => {
      const data = pattern(2048, 1);
      h.put(DATA_GPA, data);
      assert.deepEqual(h.write(10, [r(DATA_GPA, 2048)]), [1, BlkStatus.OK]);
      assert.deepEqual(h.disk(10 * SECTOR_SIZE, 2048), data);
      assert.deepEqual(h.disk(9 * SECTOR_SIZE, SECTOR_SIZE), new Uint8Array(SECTOR_SIZE));
      assert.deepEqual(h.disk(14 * SECTOR_SIZE, SECTOR_SIZE), new Uint8Array(SECTOR_SIZE));

      const readGpa = DATA_GPA + 0x10000;
      assert.deepEqual(h.read(11, [w(readGpa, 1024)]), [1024 + 1, BlkStatus.OK]);
      assert.deepEqual(h.get(readGpa, 1024), data.subarray(512, 1536));

      const c = h.device.shared.counters();
      assert.equal(c.reads, 1n);
      assert.equal(c.writes, 1n);
      assert.equal(c.bytesRead, 1024n);
      assert.equal(c.bytesWritten, 2048n);
      assert.equal(c.errors, 0n);
    }),
  );

  Deno.test(
    `${kind}: data and header split across descriptors at odd boundaries`,
    withHarness({ kind }, (h) => {
      const data = pattern(1536, 2);
      // Header split 7 + 9 bytes in two places; data in pieces of 100, 700 and 736 bytes.
      const header = requestHeader(BlkRequestType.OUT, 3);
      h.put(0x5000, header.subarray(0, 7));
      h.put(0x5100, header.subarray(7));
      const pieces: Segment[] = [r(0x20003, 100), r(0x30001, 700), r(0x40007, 736)];
      let at = 0;
      for (const p of pieces) {
        h.put(p.addr, data.subarray(at, at + p.len));
        at += p.len;
      }
      h.put(STATUS_GPA, Uint8Array.of(STATUS_UNSET));
      const used = h.submit([r(0x5000, 7), r(0x5100, 9), ...pieces, w(STATUS_GPA, 1)]);
      assert.equal(used, 1);
      assert.equal(h.status(), BlkStatus.OK);
      assert.deepEqual(h.disk(3 * SECTOR_SIZE, 1536), data);

      // Read it back into 1 + 511 + 300 bytes, then 724 data bytes sharing a
      // descriptor with the status byte.
      h.put(0x5000, requestHeader(BlkRequestType.IN, 3).subarray(0, 5));
      h.put(0x5100, requestHeader(BlkRequestType.IN, 3).subarray(5));
      const last = 0x60005;
      h.put(last + 724, Uint8Array.of(STATUS_UNSET));
      const readSegs = [w(0x50001, 1), w(0x51000, 511), w(0x52003, 300), w(last, 725)];
      assert.equal(h.submit([r(0x5000, 5), r(0x5100, 11), ...readSegs]), 1536 + 1);
      assert.equal(h.get(last + 724, 1)[0], BlkStatus.OK);
      const back = new Uint8Array(1536);
      at = 0;
      for (const s of readSegs) {
        const n = Math.min(s.len, 1536 - at);
        back.set(h.get(s.addr, n), at);
        at += n;
      }
      assert.deepEqual(back, data);
    }),
  );

  Deno.test(
    `${kind}: DISCARD and WRITE_ZEROES leave zeroes and keep the rest`,
    withHarness({ kind }, (h) => {
      const data = pattern(64 * SECTOR_SIZE, 3);
      h.fillDisk(0, data);
      const expected = data.slice();
      const zero = (sector: number, sectors: number) =>
        expected.fill(0, sector * SECTOR_SIZE, (sector + sectors) * SECTOR_SIZE);

      assert.deepEqual(
        h.discard(BlkRequestType.DISCARD, [{ sector: 4, sectors: 4, flags: 0 }]),
        [1, BlkStatus.OK],
      );
      zero(4, 4);
      assert.deepEqual(h.disk(0, expected.length), expected);

      assert.deepEqual(
        h.discard(BlkRequestType.WRITE_ZEROES, [
          { sector: 10, sectors: 3, flags: 0 },
          { sector: 20, sectors: 5, flags: WRITE_ZEROES_FLAG_UNMAP },
        ]),
        [1, BlkStatus.OK],
      );
      zero(10, 3);
      zero(20, 5);
      assert.deepEqual(h.disk(0, expected.length), expected);

      // A zero-length segment is accepted and changes nothing.
      assert.deepEqual(
        h.discard(BlkRequestType.WRITE_ZEROES, [{ sector: 30, sectors: 0, flags: 0 }]),
        [1, BlkStatus.OK],
      );
      assert.deepEqual(h.disk(0, expected.length), expected);
      // The file keeps its size (KEEP_SIZE): the last sector still reads.
      assert.equal(h.disk(DISK_SIZE - SECTOR_SIZE, SECTOR_SIZE).length, SECTOR_SIZE);

      const c = h.device.shared.counters();
      assert.equal(c.discards, 1n);
      assert.equal(c.writeZeroes, 2n);
    }),
  );

  Deno.test(
    `${kind}: write-through mode (writeback off) still reads and writes`,
    withHarness({ kind, writeback: false }, (h) => {
      assert.equal(h.device.shared.writeback, false);
      const data = pattern(SECTOR_SIZE * 2, 4);
      h.put(DATA_GPA, data);
      assert.deepEqual(h.write(0, [r(DATA_GPA, data.length)]), [1, BlkStatus.OK]);
      assert.deepEqual(h.disk(0, data.length), data);
      assert.deepEqual(
        h.discard(BlkRequestType.WRITE_ZEROES, [{ sector: 1, sectors: 1, flags: 0 }]),
        [1, BlkStatus.OK],
      );
      assert.deepEqual(h.read(0, [w(DATA_GPA + 0x8000, 1024)]), [1025, BlkStatus.OK]);
      assert.deepEqual(h.get(DATA_GPA + 0x8000, 512), data.subarray(0, 512));
      assert.deepEqual(h.get(DATA_GPA + 0x8000 + 512, 512), new Uint8Array(512));
    }),
  );
}

Deno.test(
  "more data segments than one preadv/pwritev takes are all transferred",
  withHarness({}, (h) => {
    // 300 segments of 256 bytes: more than the handler's iovec array holds.
    const count = 300;
    const len = 256;
    const data = pattern(count * len, 5);
    const segs: Segment[] = [];
    for (let i = 0; i < count; i++) {
      const gpa = DATA_GPA + i * 512 + (i % 3);
      h.put(gpa, data.subarray(i * len, (i + 1) * len));
      segs.push(r(gpa, len));
    }
    assert.deepEqual(h.write(2, segs), [1, BlkStatus.OK]);
    assert.deepEqual(h.disk(2 * SECTOR_SIZE, data.length), data);

    const readSegs = segs.map((s) => w(s.addr + 0x60000, len));
    for (const s of readSegs) h.put(s.addr, new Uint8Array(len));
    assert.deepEqual(h.read(2, readSegs), [data.length + 1, BlkStatus.OK]);
    readSegs.forEach((s, i) =>
      assert.deepEqual(h.get(s.addr, len), data.subarray(i * len, (i + 1) * len))
    );
  }),
);

Deno.test(
  "FLUSH succeeds with a one-byte answer and is counted",
  withHarness({}, (h) => {
    h.prepare(BlkRequestType.FLUSH, 0);
    assert.equal(h.submit([r(HEADER_GPA, 16), w(STATUS_GPA, 1)]), 1);
    assert.equal(h.status(), BlkStatus.OK);
    assert.equal(h.device.shared.counters().flushes, 1n);
  }),
);

Deno.test(
  "GET_ID writes the 20-byte serial, truncated to a shorter buffer",
  withHarness({}, (h) => {
    const expected = new Uint8Array(DEVICE_ID_LENGTH);
    expected.set(new TextEncoder().encode(SERIAL));

    h.prepare(BlkRequestType.GET_ID, 0);
    h.put(DATA_GPA, new Uint8Array(32).fill(0xaa));
    assert.equal(
      h.submit([r(HEADER_GPA, 16), w(DATA_GPA, DEVICE_ID_LENGTH), w(STATUS_GPA, 1)]),
      DEVICE_ID_LENGTH + 1,
    );
    assert.equal(h.status(), BlkStatus.OK);
    assert.deepEqual(h.get(DATA_GPA, DEVICE_ID_LENGTH), expected);
    assert.equal(h.get(DATA_GPA + DEVICE_ID_LENGTH, 1)[0], 0xaa);

    h.prepare(BlkRequestType.GET_ID, 0);
    h.put(DATA_GPA, new Uint8Array(32).fill(0xaa));
    assert.equal(h.submit([r(HEADER_GPA, 16), w(DATA_GPA, 8), w(STATUS_GPA, 1)]), 8 + 1);
    assert.equal(h.status(), BlkStatus.OK);
    assert.deepEqual(h.get(DATA_GPA, 8), expected.subarray(0, 8));
    assert.equal(h.get(DATA_GPA + 8, 1)[0], 0xaa);

    // A bigger buffer still gets 20 bytes; the status byte is the last byte of the chain.
    h.prepare(BlkRequestType.GET_ID, 0);
    h.put(DATA_GPA, new Uint8Array(32).fill(0xaa));
    assert.equal(h.submit([r(HEADER_GPA, 16), w(DATA_GPA, 32), w(STATUS_GPA, 1)]), 21);
    assert.equal(h.status(), BlkStatus.OK);
    assert.deepEqual(h.get(DATA_GPA, DEVICE_ID_LENGTH), expected);
    assert.equal(h.device.shared.counters().getIds, 3n);
  }),
);

Deno.test(
  "DISCARD and WRITE_ZEROES refusals: flags, segment count, range, payload size",
  withHarness({}, (h) => {
    const data = pattern(DISK_SIZE, 6);
    h.fillDisk(0, data);
    const WZ = BlkRequestType.WRITE_ZEROES;
    const DISCARD = BlkRequestType.DISCARD;
    // Discard knows no flags at all; write-zeroes only UNMAP.
    assert.deepEqual(h.discard(DISCARD, [{ sector: 0, sectors: 1, flags: 1 }]), [
      1,
      BlkStatus.UNSUPP,
    ]);
    assert.deepEqual(h.discard(WZ, [{ sector: 0, sectors: 1, flags: 2 }]), [1, BlkStatus.UNSUPP]);
    assert.deepEqual(h.discard(DISCARD, [{ sector: 0, sectors: 1, flags: 0x8000_0000 }]), [
      1,
      BlkStatus.UNSUPP,
    ]);
    // 17 segments: one more than max_discard_seg.
    const many = Array.from({ length: 17 }, (_, i) => ({ sector: i, sectors: 1, flags: 0 }));
    assert.deepEqual(h.discard(WZ, many), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.discard(DISCARD, many), [1, BlkStatus.IOERR]);
    // Past the end of the disk, and starting beyond it.
    assert.deepEqual(h.discard(WZ, [{ sector: DISK_SECTORS - 1, sectors: 2, flags: 0 }]), [
      1,
      BlkStatus.IOERR,
    ]);
    assert.deepEqual(h.discard(DISCARD, [{ sector: 2 ** 40, sectors: 1, flags: 0 }]), [
      1,
      BlkStatus.IOERR,
    ]);
    // More sectors than max_discard_sectors.
    assert.deepEqual(h.discard(WZ, [{ sector: 0, sectors: 0x40_0001, flags: 0 }]), [
      1,
      BlkStatus.IOERR,
    ]);
    // Payload that is not whole segments, and no payload at all.
    h.prepare(WZ, 0);
    h.put(DATA_GPA, discardPayload([{ sector: 0, sectors: 1, flags: 0 }]));
    assert.equal(h.submit([r(HEADER_GPA, 16), r(DATA_GPA, 15), w(STATUS_GPA, 1)]), 1);
    assert.equal(h.status(), BlkStatus.IOERR);
    h.prepare(DISCARD, 0);
    assert.equal(h.submit([r(HEADER_GPA, 16), w(STATUS_GPA, 1)]), 1);
    assert.equal(h.status(), BlkStatus.IOERR);

    assert.deepEqual(h.disk(0, DISK_SIZE), data, "a refused request changed the disk");
    const c = h.device.shared.counters();
    assert.equal(c.discards, 0n);
    assert.equal(c.writeZeroes, 0n);
    assert.equal(c.errors, 10n);
  }),
);

Deno.test(
  "unknown request types get UNSUPP",
  withHarness({}, (h) => {
    for (const type of [2, 10, 99, 0xffff_ffff]) {
      h.prepare(type, 0);
      assert.equal(h.submit([r(HEADER_GPA, 16), w(DATA_GPA, 512), w(STATUS_GPA, 1)]), 1);
      assert.equal(h.status(), BlkStatus.UNSUPP, `type ${type}`);
    }
    assert.equal(h.device.shared.counters().unsupported, 4n);
  }),
);

Deno.test(
  "read-only disk refuses OUT, DISCARD and WRITE_ZEROES but serves IN and FLUSH",
  withHarness({ readOnly: true }, (h) => {
    const data = pattern(4 * SECTOR_SIZE, 7);
    h.fillDisk(0, data);
    h.put(DATA_GPA, pattern(SECTOR_SIZE, 8));
    assert.deepEqual(h.write(0, [r(DATA_GPA, SECTOR_SIZE)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(
      h.discard(BlkRequestType.DISCARD, [{ sector: 0, sectors: 1, flags: 0 }]),
      [1, BlkStatus.IOERR],
    );
    assert.deepEqual(
      h.discard(BlkRequestType.WRITE_ZEROES, [{ sector: 0, sectors: 1, flags: 0 }]),
      [1, BlkStatus.IOERR],
    );
    assert.deepEqual(h.disk(0, data.length), data);

    assert.deepEqual(h.read(0, [w(DATA_GPA + 0x1000, data.length)]), [
      data.length + 1,
      BlkStatus.OK,
    ]);
    assert.deepEqual(h.get(DATA_GPA + 0x1000, data.length), data);
    h.prepare(BlkRequestType.FLUSH, 0);
    assert.equal(h.submit([r(HEADER_GPA, 16), w(STATUS_GPA, 1)]), 1);
    assert.equal(h.status(), BlkStatus.OK);
    assert.equal(h.device.shared.counters().writes, 0n);
  }),
);

Deno.test(
  "sectors past the end and lengths that are not whole sectors fail with IOERR",
  withHarness({}, (h) => {
    const data = pattern(DISK_SIZE, 9);
    h.fillDisk(0, data);
    const buf = DATA_GPA;
    h.put(buf, new Uint8Array(2048).fill(0x5a));
    // The last sector reads fine; one more does not.
    assert.deepEqual(h.read(DISK_SECTORS - 1, [w(buf, 512)]), [513, BlkStatus.OK]);
    assert.deepEqual(h.read(DISK_SECTORS - 1, [w(buf, 1024)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.read(DISK_SECTORS, [w(buf, 512)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.read(0xffff_ffff_ffff_ffffn, [w(buf, 512)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.write(DISK_SECTORS - 1, [r(buf, 1024)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.write(2n ** 63n, [r(buf, 512)]), [1, BlkStatus.IOERR]);
    // Not a multiple of 512.
    assert.deepEqual(h.read(0, [w(buf, 100)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.read(0, [w(buf, 512), w(buf + 1024, 1)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.write(0, [r(buf, 300)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.write(0, [r(buf, 1023)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.disk(0, DISK_SIZE), data, "a refused write changed the disk");
    // A header shorter than 16 bytes.
    h.prepare(BlkRequestType.IN, 0);
    assert.equal(h.submit([r(HEADER_GPA, 12), w(buf, 512), w(STATUS_GPA, 1)]), 1);
    assert.equal(h.status(), BlkStatus.IOERR);
    assert.equal(h.device.shared.counters().errors, 10n);
  }),
);

Deno.test(
  "a malformed chain gets IOERR when it has a status byte, nothing when it has none",
  withHarness({}, (h) => {
    // header -> status -> a buffer outside guest memory: the walk stops with an error.
    h.prepare(BlkRequestType.IN, 0);
    h.driver.writeRawDescriptor(0, HEADER_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
    h.driver.writeRawDescriptor(1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
    h.driver.writeRawDescriptor(2, MEM_SIZE + 0x1000, 512, VIRTQ_DESC_F_WRITE, 0);
    h.driver.publishRaw(0);
    const chain = h.queue.popAvail();
    assert.ok(chain !== undefined && !("ringError" in chain));
    assert.notEqual(chain.error, undefined);
    assert.equal(chain.writableLength(), 1);
    assert.equal(h.serve(chain), 1);
    assert.equal(h.status(), BlkStatus.IOERR);

    // The same fault with no writable byte parsed: nothing can be reported.
    h.driver.writeRawDescriptor(3, HEADER_GPA, 16, VIRTQ_DESC_F_NEXT, 4);
    h.driver.writeRawDescriptor(4, MEM_SIZE + 0x1000, 512, VIRTQ_DESC_F_WRITE, 0);
    h.driver.publishRaw(3);
    const bad = h.queue.popAvail();
    assert.ok(bad !== undefined && !("ringError" in bad));
    assert.notEqual(bad.error, undefined);
    assert.equal(h.serve(bad), 0);

    // Hand-built chain with error and a status byte in a larger buffer: the last byte.
    h.put(DATA_GPA, new Uint8Array(8).fill(STATUS_UNSET));
    const built = new DescriptorChain(5, [r(HEADER_GPA, 16), w(DATA_GPA, 8)], "test fault");
    assert.equal(h.handler.handle(built, h.memory, 0), 1);
    assert.deepEqual([...h.get(DATA_GPA, 8)], [0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 1]);
    assert.equal(h.device.shared.counters().errors, 3n);
  }),
);

Deno.test(
  "a chain without a writable byte returns 0 and does not throw",
  withHarness({}, (h) => {
    const data = pattern(SECTOR_SIZE, 10);
    h.put(DATA_GPA, data);
    for (const type of [BlkRequestType.IN, BlkRequestType.OUT, BlkRequestType.GET_ID, 77]) {
      h.prepare(type, 0);
      assert.equal(h.submit([r(HEADER_GPA, 16), r(DATA_GPA, SECTOR_SIZE)]), 0);
    }
    assert.equal(h.submit([r(HEADER_GPA, 4)]), 0);
    // Nothing was written to the disk without a way to report the result.
    assert.deepEqual(h.disk(0, SECTOR_SIZE), new Uint8Array(SECTOR_SIZE));
    const c = h.device.shared.counters();
    assert.equal(c.errors, 5n);
    assert.equal(c.writes, 0n);
  }),
);

Deno.test(
  "markWritten sees exactly the guest bytes the handler wrote",
  withHarness({}, (h) => {
    h.fillDisk(0, pattern(8 * SECTOR_SIZE, 11));
    const observe = (segments: Segment[]): number[] => {
      const rec = new RecordingObserver();
      h.submit(segments, rec);
      const unique = bytesOf(rec.ranges);
      const total = rec.ranges.reduce((sum, [, len]) => sum + len, 0);
      assert.equal(total, unique.length, "a byte was reported twice");
      return unique;
    };

    // IN over odd pieces: every data byte plus the status byte.
    const readSegs = [w(DATA_GPA + 1, 511), w(DATA_GPA + 0x1003, 700), w(DATA_GPA + 0x2001, 325)];
    h.prepare(BlkRequestType.IN, 1);
    assert.deepEqual(
      observe([r(HEADER_GPA, 16), ...readSegs, w(STATUS_GPA, 1)]),
      bytesOf([...readSegs.map((s) => [s.addr, s.len] as const), [STATUS_GPA, 1]]),
    );
    // Status sharing a descriptor with the data: data bytes then the status byte, not beyond.
    h.prepare(BlkRequestType.IN, 1);
    assert.deepEqual(
      observe([r(HEADER_GPA, 16), w(DATA_GPA, 513)]),
      bytesOf([[DATA_GPA, 513]]),
    );
    // OUT: only the status byte.
    h.prepare(BlkRequestType.OUT, 1);
    assert.deepEqual(
      observe([r(HEADER_GPA, 16), r(DATA_GPA, 512), w(STATUS_GPA, 1)]),
      [STATUS_GPA],
    );
    // GET_ID into a 32-byte buffer: 20 id bytes and the status byte.
    h.prepare(BlkRequestType.GET_ID, 0);
    assert.deepEqual(
      observe([r(HEADER_GPA, 16), w(DATA_GPA, 32), w(STATUS_GPA, 1)]),
      bytesOf([[DATA_GPA, 20], [STATUS_GPA, 1]]),
    );
    // A failed IN writes no data: only the status byte.
    h.prepare(BlkRequestType.IN, DISK_SECTORS);
    assert.deepEqual(
      observe([r(HEADER_GPA, 16), w(DATA_GPA, 512), w(STATUS_GPA, 1)]),
      [STATUS_GPA],
    );
    // FLUSH and an unknown type: the status byte.
    h.prepare(BlkRequestType.FLUSH, 0);
    assert.deepEqual(observe([r(HEADER_GPA, 16), w(STATUS_GPA, 1)]), [STATUS_GPA]);
    h.prepare(99, 0);
    assert.deepEqual(observe([r(HEADER_GPA, 16), w(STATUS_GPA, 1)]), [STATUS_GPA]);
    // No writable byte: nothing.
    h.prepare(BlkRequestType.IN, 0);
    assert.deepEqual(observe([r(HEADER_GPA, 16)]), []);
  }),
);
