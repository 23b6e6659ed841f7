import assert from "node:assert/strict";
import {
  dupFd,
  EAGAIN,
  EIO,
  ENOSPC,
  EOPNOTSUPP,
  EPOLLIN,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  ftruncate,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  mapArrayBuffer,
  mmap,
  munmap,
  pollFd,
  POLLIN,
  pread,
  PROT_READ,
  PROT_WRITE,
  pwrite,
} from "../../../ffi/mod.ts";
import type { FileIoEngine } from "../../io/file_io_engine.ts";
import { openFileIoEngine, probeIoUring } from "../../io/open_engine.ts";
import { SyncFileIoEngine } from "../../io/sync_engine.ts";
import { setLogLevel } from "../../log.ts";
import { GuestMemory, type GuestRegion, type WriteObserver } from "../../memory/guest_memory.ts";
import {
  DescriptorChain,
  DriverQueue,
  type Segment,
  SplitQueue,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../virtqueue/mod.ts";
import { DEFERRED } from "../device.ts";
import { type Backing, closeBacking, openBacking } from "./backing.ts";
import { BlkDevice } from "./blk_device.ts";
import {
  BlkRequestType,
  BlkStatus,
  DEVICE_ID_LENGTH,
  REQUEST_HEADER_SIZE,
  SECTOR_SIZE,
  WRITE_ZEROES_FLAG_UNMAP,
} from "./blk_spec.ts";
import {
  DeferredEngine,
  RecordingContext,
  SpyEngine,
} from "../../../tests/support/engine_doubles.ts";
import { BlkRequestHandler } from "./request_handler.ts";

// Failed requests are the point of many tests here: keep their warnings out of the output.
setLogLevel("error");

const MEM_SIZE = 4 << 20;
const QUEUE_SIZE = 512;
const DISK_SECTORS = 4096;
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

/** Why io_uring cannot be tested here, or undefined when it can. */
const URING_UNAVAILABLE = probeIoUring();
/** The real engines under test. */
type RealEngine = "sync" | "io_uring";
type EngineChoice = RealEngine | "deferred";
const REAL_ENGINES: readonly RealEngine[] = ["sync", "io_uring"];

type BackingKind = "ram" | "file";

interface HarnessOptions {
  kind?: BackingKind;
  readOnly?: boolean;
  writeback?: boolean;
  engine?: EngineChoice;
  /** O_DIRECT image (`--cache none`); needs kind "file". */
  cacheNone?: boolean;
  /** Replaces the backing's direct-I/O description (fake alignment rules). */
  direct?: Backing["direct"];
  /** Do not call attach (the handler then runs a sync engine by itself). */
  noAttach?: boolean;
  /** Shared event timeline. */
  timeline?: string[];
}

class RecordingObserver implements WriteObserver {
  ranges: [number, number][] = [];
  constructor(readonly onMark?: (gpa: number, len: number) => void) {}
  markWritten(gpa: number, len: number): void {
    this.ranges.push([gpa, len]);
    this.onMark?.(gpa, len);
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

/** Guest memory in a page-aligned anonymous mapping (as a front-end's memfd would be). */
function mappedMemory(size: number): { memory: GuestMemory; unmap: () => void } {
  const base = mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  const bytes = new Uint8Array(mapArrayBuffer(base, size));
  const region: GuestRegion = {
    guestAddr: 0,
    size,
    userAddr: 0x7f00_0000_0000,
    hostAddr: Number(base),
    bytes,
    view: new DataView(bytes.buffer),
  };
  return { memory: new GuestMemory([region]), unmap: () => munmap(base, size) };
}

/** A BlkRequestHandler over a real backing, fed by a driver queue in mapped memory. */
class Harness {
  readonly memory: GuestMemory;
  readonly #unmap: () => void;
  readonly device: BlkDevice;
  readonly handler: BlkRequestHandler;
  readonly driver: DriverQueue;
  readonly queue: SplitQueue;
  readonly context: RecordingContext;
  readonly timeline: string[];
  readonly engineChoice: EngineChoice;
  /** The real engine, wrapped (sync and io_uring). */
  spy: SpyEngine | undefined;
  /** The deferred engine (engine "deferred"). */
  deferred: DeferredEngine | undefined;
  readonly tempPath: string | undefined;

  constructor(opts: HarnessOptions = {}) {
    const kind = opts.kind ?? (opts.cacheNone ? "file" : "ram");
    const readOnly = opts.readOnly ?? false;
    this.timeline = opts.timeline ?? [];
    this.engineChoice = opts.engine ?? "sync";
    ({ memory: this.memory, unmap: this.#unmap } = mappedMemory(MEM_SIZE));
    if (kind === "file") {
      // /var/tmp: a disk file system (tmpfs would not test O_DIRECT for real).
      this.tempPath = Deno.makeTempFileSync({
        dir: opts.cacheNone ? "/var/tmp" : undefined,
        prefix: "vhostd-blk-test-",
        suffix: ".img",
      });
      Deno.truncateSync(this.tempPath, DISK_SIZE);
    }
    let backing = kind === "ram"
      ? openBacking({ kind: "ram", size: DISK_SIZE, readOnly })
      : openBacking({
        kind: "file",
        path: this.tempPath!,
        readOnly,
        cache: opts.cacheNone ? "none" : "writeback",
      });
    if (opts.direct !== undefined) backing = { ...backing, direct: opts.direct };
    this.device = new BlkDevice(backing, {
      numQueues: 1,
      queueSize: QUEUE_SIZE,
      serial: SERIAL,
      aio: this.engineChoice === "sync" ? "sync" : "io_uring",
    });
    if (opts.writeback === false) this.device.shared.writeback = false;
    this.context = new RecordingContext(this.timeline);
    this.handler = new BlkRequestHandler(this.device.workerSetup(), {
      openEngine: (engineKind, entries) => {
        assert.equal(engineKind, this.engineChoice === "sync" ? "sync" : "io_uring");
        if (this.engineChoice === "deferred") return this.deferred = new DeferredEngine();
        const inner: FileIoEngine = this.engineChoice === "sync"
          ? new SyncFileIoEngine()
          : openFileIoEngine("io_uring", { entries });
        return this.spy = new SpyEngine(inner, this.timeline);
      },
    });
    if (!opts.noAttach) this.handler.attach(this.context);
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
    try {
      assert.equal(this.handler.inflight, 0, "requests left in flight");
      assert.deepEqual(this.context.doubles, [], "a request was completed twice");
    } finally {
      this.handler.close();
      this.device.close();
      this.#unmap();
      if (this.tempPath !== undefined) Deno.removeSync(this.tempPath);
    }
  }

  /** The engine operations recorded (spied real engine or the deferred one). */
  get ops(): {
    op: string;
    fd: number;
    offset: number;
    dsync: boolean;
    iovecs: [number, number][];
  }[] {
    return this.spy?.ops ?? this.deferred?.log ?? [];
  }

  put(gpa: number, bytes: Uint8Array): void {
    this.memory.slice(gpa, bytes.length)!.set(bytes);
  }

  get(gpa: number, len: number): Uint8Array {
    return this.memory.slice(gpa, len)!.slice();
  }

  fillDisk(offset: number, bytes: Uint8Array): void {
    if (this.tempPath === undefined) {
      assert.equal(pwrite(this.device.shared.backingFd, bytes, offset), bytes.length);
      return;
    }
    // A buffered fd: O_DIRECT would want an aligned buffer.
    const file = Deno.openSync(this.tempPath, { write: true });
    try {
      file.seekSync(offset, Deno.SeekMode.Start);
      let at = 0;
      while (at < bytes.length) at += file.writeSync(bytes.subarray(at));
    } finally {
      file.close();
    }
  }

  disk(offset: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    // A buffered fd: O_DIRECT would want an aligned buffer.
    const fd = this.tempPath !== undefined
      ? Deno.openSync(this.tempPath, { read: true })
      : undefined;
    try {
      if (fd) {
        fd.seekSync(offset, Deno.SeekMode.Start);
        let at = 0;
        while (at < len) {
          const n = fd.readSync(out.subarray(at));
          if (n === null) break;
          at += n;
        }
      } else {
        assert.equal(pread(this.device.shared.backingFd, out, offset), len);
      }
    } finally {
      fd?.close();
    }
    return out;
  }

  /** Writes a request header at `headerGpa` and primes the status byte. */
  prepare(type: number, sector: bigint | number, headerGpa = HEADER_GPA, statusGpa = STATUS_GPA) {
    this.put(headerGpa, requestHeader(type, sector));
    this.put(statusGpa, Uint8Array.of(STATUS_UNSET));
  }

  /** Publishes `segments` and pops the chain (without handling it). */
  pop(segments: Segment[]): DescriptorChain {
    this.driver.addChain(segments);
    const popped = this.queue.popAvail();
    assert.ok(popped !== undefined && !("ringError" in popped), "no chain to pop");
    assert.equal(popped.error, undefined);
    return popped;
  }

  /** Publishes `segments`, lets the handler serve the chain and returns the used length. */
  submit(segments: Segment[], observer?: WriteObserver): number {
    const chain = this.pop(segments);
    const used = this.serve(chain, observer);
    assert.deepEqual(this.driver.takeUsed(), { id: chain.head, len: used });
    return used;
  }

  /** Hands a chain to the handler (observing its guest writes), waits for it, completes it. */
  serve(chain: DescriptorChain, observer?: WriteObserver): number {
    this.memory.writeObserver = observer;
    let used: number;
    try {
      const result = this.handler.handle(chain, this.memory, 0);
      this.handler.submitQueued();
      used = result === DEFERRED ? this.wait(chain.head) : result;
    } finally {
      this.memory.writeObserver = undefined;
    }
    this.queue.pushUsed(chain.head, used);
    return used;
  }

  /** Runs the engine until `head` completed; returns its used length. */
  wait(head: number): number {
    for (let round = 0; round < 10_000; round++) {
      const done = this.context.take(head);
      if (done !== undefined) return done.written;
      if (this.deferred !== undefined) {
        this.deferred.runAll();
        continue;
      }
      const fd = this.spy?.completionFd;
      if (fd === undefined) throw new Error(`request ${head} did not complete (sync engine)`);
      assert.ok(pollFd(fd, POLLIN, 5000) & POLLIN, `request ${head}: no completion in 5 s`);
      const watched = this.context.watched.get(fd);
      assert.ok(watched, "the engine's completion fd is not watched");
      watched.onReady(EPOLLIN);
    }
    throw new Error(`request ${head} never completed`);
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

  /** FLUSH; returns [used, status]. */
  flush(): [number, number] {
    this.prepare(BlkRequestType.FLUSH, 0);
    const used = this.submit([r(HEADER_GPA, 16), w(STATUS_GPA, 1)]);
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

/** Registers `body` once per real engine (io_uring ignored, with the reason, where it is unavailable). */
function engineTest(name: string, opts: HarnessOptions, body: (h: Harness) => void): void {
  for (const engine of REAL_ENGINES) {
    const unavailable = engine === "io_uring" ? URING_UNAVAILABLE : undefined;
    Deno.test({
      name: `[${engine}] ${name}${unavailable ? ` (io_uring unavailable: ${unavailable})` : ""}`,
      ignore: unavailable !== undefined,
      fn: withHarness({ ...opts, engine }, body),
    });
  }
}

for (const kind of ["ram", "file"] as const) {
  engineTest(`${kind}: IN and OUT round trip through single buffers`, { kind }, (h) => {
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
    // Both went through the engine, the write without dsync (writeback cache).
    assert.deepEqual(h.ops.map((o) => [o.op, o.dsync]), [["writev", false], ["readv", false]]);
  });

  engineTest(
    `${kind}: data and header split across descriptors at odd boundaries`,
    { kind },
    (h) => {
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
    },
  );

  engineTest(`${kind}: DISCARD and WRITE_ZEROES leave zeroes and keep the rest`, { kind }, (h) => {
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
    // Every range went through the engine (fallocate; zeroes written where a memfd has no
    // ZERO_RANGE); no fdatasync in writeback mode.
    assert.ok(h.ops.filter((o) => o.op === "fallocate").length >= 3);
    assert.deepEqual(h.ops.filter((o) => o.op !== "fallocate" && o.op !== "writev"), []);
  });

  engineTest(
    `${kind}: write-through (writeback off): writes carry dsync, discards end with fdatasync`,
    { kind, writeback: false },
    (h) => {
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
      const ops = h.ops.map((o) => o.op);
      assert.deepEqual([ops[0], h.ops[0].dsync], ["writev", true]);
      // WRITE_ZEROES: fallocate (and zeroes written where it cannot zero), then one fdatasync.
      assert.deepEqual(ops.slice(-2), ["fsync", "readv"]);
      assert.equal(ops.filter((o) => o === "fsync").length, 1);
      // The guest switches writeback back on: the next write has no dsync.
      h.device.shared.writeback = true;
      assert.deepEqual(h.write(0, [r(DATA_GPA, data.length)]), [1, BlkStatus.OK]);
      assert.equal(h.ops.at(-1)!.dsync, false);
    },
  );
}

engineTest("more data segments than one iovec array takes are all transferred", {}, (h) => {
  // 300 segments of 256 bytes: more than a request's iovec array (seg_max + 2) holds.
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
  // 128 + 128 + 44 buffers: three operations each way, one after the other.
  assert.deepEqual(h.ops.map((o) => o.iovecs.length), [128, 128, 44, 128, 128, 44]);
});

engineTest(
  "FLUSH is an fdatasync through the engine, answered with one byte",
  { kind: "file" },
  (h) => {
    const data = pattern(SECTOR_SIZE, 6);
    h.put(DATA_GPA, data);
    assert.deepEqual(h.write(0, [r(DATA_GPA, SECTOR_SIZE)]), [1, BlkStatus.OK]);
    assert.deepEqual(h.flush(), [1, BlkStatus.OK]);
    assert.equal(h.device.shared.counters().flushes, 1n);
    // The write completed before the FLUSH was submitted, so the fdatasync covers it.
    const ops = h.spy!.ops;
    assert.deepEqual(ops.map((o) => o.op), ["writev", "fsync"]);
    assert.equal(ops[1].dataOnly, true);
    assert.equal(ops[1].fd, h.device.shared.backingFd);
    const t = h.timeline;
    assert.ok(t.indexOf("done writev 512") < t.indexOf("submit fsync"), t.join(", "));
  },
);

engineTest("GET_ID writes the 20-byte serial, truncated to a shorter buffer", {}, (h) => {
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
  // GET_ID completes at once: no engine operation, no completion through the context.
  assert.deepEqual(h.ops, []);
  assert.deepEqual(h.context.completions, []);
});

engineTest(
  "DISCARD and WRITE_ZEROES refusals: flags, segment count, range, payload size",
  {},
  (h) => {
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
    // A good segment followed by a bad one: refused before anything is done.
    assert.deepEqual(
      h.discard(DISCARD, [{ sector: 0, sectors: 1, flags: 0 }, {
        sector: 0,
        sectors: 1,
        flags: 4,
      }]),
      [1, BlkStatus.UNSUPP],
    );
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
    assert.equal(c.errors, 11n);
    assert.deepEqual(h.ops, [], "a refused request reached the engine");
  },
);

engineTest("unknown request types get UNSUPP", {}, (h) => {
  for (const type of [2, 10, 99, 0xffff_ffff]) {
    h.prepare(type, 0);
    assert.equal(h.submit([r(HEADER_GPA, 16), w(DATA_GPA, 512), w(STATUS_GPA, 1)]), 1);
    assert.equal(h.status(), BlkStatus.UNSUPP, `type ${type}`);
  }
  assert.equal(h.device.shared.counters().unsupported, 4n);
});

engineTest(
  "read-only disk refuses OUT, DISCARD and WRITE_ZEROES but serves IN and FLUSH",
  { readOnly: true },
  (h) => {
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
    assert.deepEqual(h.flush(), [1, BlkStatus.OK]);
    assert.equal(h.device.shared.counters().writes, 0n);
    assert.deepEqual(h.ops.map((o) => o.op), ["readv"]);
  },
);

engineTest(
  "sectors past the end and lengths that are not whole sectors fail with IOERR",
  {},
  (h) => {
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
    // Sector numbers are u64: the high word counts (sector 1 is on the disk, 2^32 + 1 is not),
    // and so do offsets past 2^53 bytes, where doubles stop being exact.
    assert.deepEqual(h.read(2n ** 32n + 1n, [w(buf, 512)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.read(2n ** 44n - 1n, [w(buf, 512)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.read(2n ** 53n + 1n, [w(buf, 512)]), [1, BlkStatus.IOERR]);
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
    assert.equal(h.device.shared.counters().errors, 13n);
    assert.equal(h.ops.length, 1, "only the good read reached the engine");
  },
);

engineTest(
  "a malformed chain gets IOERR when it has a status byte, nothing when it has none",
  {},
  (h) => {
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
    assert.deepEqual(h.ops, []);
  },
);

engineTest("a chain without a writable byte returns 0 and does not throw", {}, (h) => {
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
});

engineTest(
  "IN with device-readable data and OUT with device-writable data fail with IOERR",
  { kind: "file" },
  (h) => {
    const disk = pattern(4 * SECTOR_SIZE, 21);
    h.fillDisk(0, disk);
    const guest = pattern(SECTOR_SIZE, 22);
    const other = DATA_GPA + 0x1000;
    const untouched = new Uint8Array(SECTOR_SIZE).fill(0x77);
    const refuse = (type: number, segments: Segment[], what: string) => {
      h.put(DATA_GPA, guest);
      h.put(other, untouched);
      h.prepare(type, 1);
      assert.equal(h.submit(segments), 1, `${what}: used length`);
      assert.equal(h.status(), BlkStatus.IOERR, `${what}: status byte`);
      assert.deepEqual(h.get(other, SECTOR_SIZE), untouched, `${what}: a buffer was written`);
    };
    // IN whose only data buffer is device-readable (there is nothing to read into).
    refuse(BlkRequestType.IN, [r(HEADER_GPA, 16), r(DATA_GPA, 512), w(STATUS_GPA, 1)], "IN r");
    // IN with a device-readable buffer before a writable one.
    refuse(
      BlkRequestType.IN,
      [r(HEADER_GPA, 16), r(DATA_GPA, 512), w(other, 512), w(STATUS_GPA, 1)],
      "IN r+w",
    );
    // OUT whose only data buffer is device-writable (there is nothing to write).
    refuse(BlkRequestType.OUT, [r(HEADER_GPA, 16), w(other, 512), w(STATUS_GPA, 1)], "OUT w");
    // OUT with device-writable bytes after its data.
    refuse(
      BlkRequestType.OUT,
      [r(HEADER_GPA, 16), r(DATA_GPA, 512), w(other, 512), w(STATUS_GPA, 1)],
      "OUT r+w",
    );
    // OUT with a status descriptor of 2 bytes: the first one is writable data.
    h.put(STATUS_GPA, Uint8Array.of(STATUS_UNSET, STATUS_UNSET));
    h.prepare(BlkRequestType.OUT, 1);
    assert.equal(h.submit([r(HEADER_GPA, 16), r(DATA_GPA, 512), w(STATUS_GPA, 2)]), 1);
    assert.deepEqual([...h.get(STATUS_GPA, 2)], [STATUS_UNSET, BlkStatus.IOERR]);

    assert.deepEqual(h.disk(0, disk.length), disk, "a refused OUT changed the disk");
    assert.deepEqual(h.ops, [], "a refused request reached the engine");
    assert.equal(h.device.shared.counters().errors, 5n);

    // Well-formed requests still pass, the status sharing the data's last descriptor
    // included (QEMU's rule: the status is the last byte of the last writable buffer).
    assert.deepEqual(h.write(1, [r(DATA_GPA, 512)]), [1, BlkStatus.OK]);
    h.prepare(BlkRequestType.IN, 1);
    h.put(other + 512, Uint8Array.of(STATUS_UNSET));
    assert.equal(h.submit([r(HEADER_GPA, 16), w(other, 513)]), 513);
    assert.equal(h.get(other + 512, 1)[0], BlkStatus.OK);
    assert.deepEqual(h.get(other, 512), guest);
    // A longer status descriptor of an IN: its other bytes are data (not whole sectors here).
    assert.deepEqual(h.read(1, [w(other, 512), w(STATUS_GPA - 3, 3)]), [1, BlkStatus.IOERR]);
  },
);

engineTest("GET_ID without a data buffer fails with IOERR", {}, (h) => {
  h.prepare(BlkRequestType.GET_ID, 0);
  assert.equal(h.submit([r(HEADER_GPA, 16), w(STATUS_GPA, 1)]), 1);
  assert.equal(h.status(), BlkStatus.IOERR);
  // A zero-length writable descriptor is no buffer either.
  h.prepare(BlkRequestType.GET_ID, 0);
  assert.equal(h.submit([r(HEADER_GPA, 16), w(DATA_GPA, 0), w(STATUS_GPA, 1)]), 1);
  assert.equal(h.status(), BlkStatus.IOERR);
  const c = h.device.shared.counters();
  assert.equal(c.getIds, 0n);
  assert.equal(c.errors, 2n);
  // A one-byte buffer is answered (truncated, as QEMU does).
  h.prepare(BlkRequestType.GET_ID, 0);
  assert.equal(h.submit([r(HEADER_GPA, 16), w(DATA_GPA, 1), w(STATUS_GPA, 1)]), 2);
  assert.equal(h.status(), BlkStatus.OK);
  assert.equal(h.get(DATA_GPA, 1)[0], SERIAL.charCodeAt(0));
});

engineTest("a status byte that cannot be written is not reported written", {}, (h) => {
  // Hand-built chains whose last writable segment no longer resolves (the memory table
  // changed under them): the failure cannot be reported, so the used length is 0.
  const gone = MEM_SIZE + 0x1000;
  h.prepare(BlkRequestType.GET_ID, 0);
  const getId = new DescriptorChain(1, [r(HEADER_GPA, 16), w(DATA_GPA, 20), w(gone, 1)], undefined);
  assert.equal(h.handler.handle(getId, h.memory, 0), 0);
  const faulty = new DescriptorChain(2, [r(HEADER_GPA, 16), w(gone, 1)], "test fault");
  assert.equal(h.handler.handle(faulty, h.memory, 0), 0);
  h.prepare(99, 0);
  const unknown = new DescriptorChain(3, [r(HEADER_GPA, 16), w(gone, 1)], undefined);
  assert.equal(h.handler.handle(unknown, h.memory, 0), 0);
  assert.deepEqual(h.ops, []);
});

engineTest("markWritten sees exactly the guest bytes the handler wrote", {}, (h) => {
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
});

// ---------------------------------------------------------------------------
// Deferred completion.

/** Header and status addresses of request slot `i` (several requests in flight at once). */
function slot(i: number): { header: number; status: number; data: number } {
  return {
    header: 0x5000 + i * 0x100,
    status: 0x5000 + i * 0x100 + 0x80,
    data: 0x100000 + i * 0x2000,
  };
}

Deno.test(
  "requests stay in flight until the engine completes them, and complete out of order",
  withHarness({ engine: "deferred", kind: "file" }, (h) => {
    const engine = h.deferred!;
    assert.ok(h.context.watched.has(engine.completionFd), "completion fd not watched");
    assert.equal(h.context.watched.get(engine.completionFd)!.events, EPOLLIN);
    const data = pattern(4 * SECTOR_SIZE, 20);
    h.fillDisk(0, data);
    const chains: DescriptorChain[] = [];
    for (let i = 0; i < 4; i++) {
      const s = slot(i);
      h.prepare(BlkRequestType.IN, i, s.header, s.status);
      const chain = h.pop([r(s.header, 16), w(s.data, SECTOR_SIZE), w(s.status, 1)]);
      assert.equal(h.handler.handle(chain, h.memory, 0), DEFERRED);
      chains.push(chain);
    }
    // Nothing completes, nothing is written before the batch is submitted and run.
    assert.equal(engine.submits, 0);
    h.handler.submitQueued();
    assert.equal(engine.submits, 1, "one submit for the whole batch");
    assert.equal(engine.held.length, 4);
    assert.equal(h.handler.inflight, 4);
    assert.equal(h.context.completions.length, 0);
    for (let i = 0; i < 4; i++) assert.equal(h.status(slot(i).status), STATUS_UNSET);

    engine.runAll(true); // newest first
    assert.deepEqual(
      h.context.completions.map((c) => [c.head, c.written]),
      [...chains].reverse().map((c) => [c.head, SECTOR_SIZE + 1]),
    );
    for (let i = 0; i < 4; i++) {
      assert.equal(h.status(slot(i).status), BlkStatus.OK);
      assert.deepEqual(
        h.get(slot(i).data, SECTOR_SIZE),
        data.subarray(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE),
      );
    }
    assert.equal(h.handler.inflight, 0);
    for (const c of chains) h.context.take(c.head);
  }),
);

Deno.test(
  {
    name: `[io_uring] 64 requests in one batch complete through the watched completion fd${
      URING_UNAVAILABLE ? ` (io_uring unavailable: ${URING_UNAVAILABLE})` : ""
    }`,
    ignore: URING_UNAVAILABLE !== undefined,
  },
  withHarness({ engine: "io_uring", kind: "file" }, (h) => {
    const count = 64;
    const data = pattern(count * 4096, 21);
    h.fillDisk(0, data);
    const chains: DescriptorChain[] = [];
    for (let i = 0; i < count; i++) {
      const s = slot(i);
      // Half reads, half writes of new data to a second area of the disk.
      if (i % 2 === 0) {
        h.prepare(BlkRequestType.IN, i * 8, s.header, s.status);
        chains.push(h.pop([r(s.header, 16), w(s.data, 4096), w(s.status, 1)]));
      } else {
        h.prepare(BlkRequestType.OUT, 2048 + i * 8, s.header, s.status);
        h.put(s.data, data.subarray(i * 4096, (i + 1) * 4096));
        chains.push(h.pop([r(s.header, 16), r(s.data, 4096), w(s.status, 1)]));
      }
      assert.equal(h.handler.handle(chains[i], h.memory, 0), DEFERRED);
    }
    h.handler.submitQueued();
    assert.ok(h.handler.inflight > 0);
    const fd = h.spy!.completionFd!;
    const watched = h.context.watched.get(fd)!;
    while (h.context.completions.length < count) {
      assert.ok(pollFd(fd, POLLIN, 5000) & POLLIN, "no completion in 5 s");
      watched.onReady(EPOLLIN);
    }
    assert.equal(h.handler.inflight, 0);
    for (let i = 0; i < count; i++) {
      const done = h.context.take(chains[i].head)!;
      assert.equal(done.written, i % 2 === 0 ? 4097 : 1);
      assert.equal(h.status(slot(i).status), BlkStatus.OK);
      if (i % 2 === 0) {
        assert.deepEqual(h.get(slot(i).data, 4096), data.subarray(i * 4096, (i + 1) * 4096));
      } else {
        assert.deepEqual(
          h.disk((2048 + i * 8) * SECTOR_SIZE, 4096),
          data.subarray(i * 4096, (i + 1) * 4096),
        );
      }
    }
  }),
);

Deno.test(
  "without attach the handler runs a sync engine itself and returns used lengths",
  withHarness({ noAttach: true }, (h) => {
    const data = pattern(SECTOR_SIZE, 22);
    h.put(DATA_GPA, data);
    assert.deepEqual(h.write(5, [r(DATA_GPA, SECTOR_SIZE)]), [1, BlkStatus.OK]);
    assert.deepEqual(h.read(5, [w(DATA_GPA + 0x1000, SECTOR_SIZE)]), [513, BlkStatus.OK]);
    assert.deepEqual(h.get(DATA_GPA + 0x1000, SECTOR_SIZE), data);
    assert.equal(h.handler.engine?.kind, "sync");
    assert.deepEqual(h.context.completions, []);
  }),
);

Deno.test("each completion is signalled with the sync engine, once per round with io_uring", () => {
  const kinds: [RealEngine, boolean][] = URING_UNAVAILABLE === undefined
    ? [["sync", true], ["io_uring", false]]
    : [["sync", true]];
  for (const [aio, each] of kinds) {
    const backing = openBacking({ kind: "ram", size: DISK_SIZE, readOnly: false });
    const device = new BlkDevice(backing, { numQueues: 1, queueSize: 128, serial: SERIAL, aio });
    const handler = new BlkRequestHandler(device.workerSetup());
    try {
      handler.attach(new RecordingContext());
      assert.equal(handler.engine?.kind, aio);
      assert.equal(handler.notifiesEachCompletion(), each, aio);
    } finally {
      handler.close();
      device.close();
    }
  }
});

Deno.test("attach falls back to the sync engine when io_uring cannot be opened in the Worker", () => {
  const backing = openBacking({ kind: "ram", size: DISK_SIZE, readOnly: false });
  const device = new BlkDevice(backing, {
    numQueues: 2,
    queueSize: 128,
    serial: SERIAL,
    aio: "io_uring",
  });
  const asked: [string, number][] = [];
  const handler = new BlkRequestHandler(device.workerSetup(), {
    openEngine: (kind, entries) => {
      asked.push([kind, entries]);
      if (kind === "io_uring") throw new Error("io_uring_setup: EPERM");
      return new SyncFileIoEngine();
    },
  });
  const context = new RecordingContext();
  try {
    handler.attach(context);
    assert.deepEqual(asked, [["io_uring", 256], ["sync", 256]]);
    assert.equal(handler.engine?.kind, "sync");
    assert.equal(context.watched.size, 0);
  } finally {
    handler.close();
    device.close();
  }
});

Deno.test(
  "close stops watching the completion fd and closes the engine",
  withHarness({ engine: "deferred" }, (h) => {
    const engine = h.deferred!;
    assert.equal(h.context.watched.size, 1);
    h.handler.close();
    assert.equal(h.context.watched.size, 0);
    assert.ok(engine.closed);
  }),
);

// ---------------------------------------------------------------------------
// Dirty pages are marked after the data landed.

Deno.test(
  "dirty log: data pages are marked when the read completed, the status byte last",
  withHarness({ engine: "deferred", kind: "file" }, (h) => {
    const engine = h.deferred!;
    const data = pattern(2 * SECTOR_SIZE, 23);
    h.fillDisk(SECTOR_SIZE, data);
    const segs = [w(DATA_GPA + 3, 700), w(DATA_GPA + 0x3001, 324)];
    const timeline = h.timeline;
    engine.onComplete = (op, result) => timeline.push(`engine ${op.op} ${result}`);
    const observer = new RecordingObserver((gpa, len) => {
      timeline.push(`mark ${gpa.toString(16)}+${len}`);
      if (gpa === STATUS_GPA) {
        assert.equal(h.status(), BlkStatus.OK, "status byte marked before it was written");
        return;
      }
      // The bytes are already there when they are marked.
      const at = segs[0].addr === gpa ? 0 : 700;
      assert.deepEqual(h.get(gpa, len), data.subarray(at, at + len), "marked before landing");
    });
    h.prepare(BlkRequestType.IN, 1);
    const chain = h.pop([r(HEADER_GPA, 16), ...segs, w(STATUS_GPA, 1)]);
    h.memory.writeObserver = observer;
    assert.equal(h.handler.handle(chain, h.memory, 0), DEFERRED);
    h.handler.submitQueued();
    assert.deepEqual(observer.ranges, [], "pages marked while the read is in flight");
    engine.runAll();
    h.memory.writeObserver = undefined;
    assert.deepEqual(timeline, [
      "engine readv 1024",
      `mark ${(DATA_GPA + 3).toString(16)}+700`,
      `mark ${(DATA_GPA + 0x3001).toString(16)}+324`,
      `mark ${STATUS_GPA.toString(16)}+1`,
      `complete ${chain.head}`,
    ]);
    assert.equal(h.context.take(chain.head)!.written, 1025);
  }),
);

engineTest("dirty log: every marked byte already holds the data read", { kind: "file" }, (h) => {
  const data = pattern(64 * SECTOR_SIZE, 24);
  h.fillDisk(0, data);
  // 200 odd pieces: two operations; each piece is marked after its operation finished.
  const segs: Segment[] = [];
  for (let i = 0; i < 128; i++) segs.push(w(DATA_GPA + i * 0x400 + (i % 5), 256));
  const gpaOffset = new Map(segs.map((s, i) => [s.addr, i * 256]));
  let marks = 0;
  const observer = new RecordingObserver((gpa, len) => {
    if (gpa === STATUS_GPA) return;
    const at = gpaOffset.get(gpa)!;
    assert.deepEqual(h.get(gpa, len), data.subarray(at, at + len), `0x${gpa.toString(16)}`);
    marks++;
  });
  h.prepare(BlkRequestType.IN, 0);
  h.submit([r(HEADER_GPA, 16), ...segs, w(STATUS_GPA, 1)], observer);
  assert.equal(h.status(), BlkStatus.OK);
  assert.equal(marks, segs.length);
});

// ---------------------------------------------------------------------------
// Engine errors.

Deno.test(
  "-EAGAIN is resubmitted; success on the retry completes the request normally",
  withHarness({ engine: "deferred", kind: "file" }, (h) => {
    const engine = h.deferred!;
    const data = pattern(SECTOR_SIZE, 25);
    h.fillDisk(0, data);
    let calls = 0;
    engine.intercept = () => calls++ === 0 ? -EAGAIN : undefined;
    assert.deepEqual(h.read(0, [w(DATA_GPA, SECTOR_SIZE)]), [513, BlkStatus.OK]);
    assert.deepEqual(h.get(DATA_GPA, SECTOR_SIZE), data);
    assert.deepEqual(engine.log.map((o) => o.op), ["readv", "readv"]);
    assert.equal(h.device.shared.counters().errors, 0n);
  }),
);

Deno.test(
  "-EAGAIN forever fails the request with IOERR after a bounded number of retries",
  withHarness({ engine: "deferred" }, (h) => {
    const engine = h.deferred!;
    engine.intercept = () => -EAGAIN;
    h.put(DATA_GPA, pattern(SECTOR_SIZE, 26));
    assert.deepEqual(h.write(0, [r(DATA_GPA, SECTOR_SIZE)]), [1, BlkStatus.IOERR]);
    assert.equal(engine.log.length, 17);
    assert.equal(h.device.shared.counters().errors, 1n);
  }),
);

Deno.test(
  "-EIO on a read: IOERR, no data page marked, only the status byte",
  withHarness({ engine: "deferred" }, (h) => {
    h.deferred!.intercept = (op) => op.op === "readv" ? -EIO : undefined;
    const rec = new RecordingObserver();
    h.prepare(BlkRequestType.IN, 0);
    h.put(DATA_GPA, new Uint8Array(SECTOR_SIZE).fill(0x77));
    assert.equal(h.submit([r(HEADER_GPA, 16), w(DATA_GPA, SECTOR_SIZE), w(STATUS_GPA, 1)], rec), 1);
    assert.equal(h.status(), BlkStatus.IOERR);
    assert.deepEqual(rec.ranges, [[STATUS_GPA, 1]]);
    const c = h.device.shared.counters();
    assert.equal(c.errors, 1n);
    assert.equal(c.reads, 0n);
  }),
);

Deno.test(
  "-ENOSPC on a write and -EIO on a FLUSH's fdatasync give IOERR",
  withHarness({ engine: "deferred" }, (h) => {
    h.deferred!.intercept = (op) =>
      op.op === "writev" ? -ENOSPC : op.op === "fsync" ? -EIO : undefined;
    h.put(DATA_GPA, pattern(SECTOR_SIZE, 27));
    assert.deepEqual(h.write(0, [r(DATA_GPA, SECTOR_SIZE)]), [1, BlkStatus.IOERR]);
    assert.deepEqual(h.flush(), [1, BlkStatus.IOERR]);
    const c = h.device.shared.counters();
    assert.equal(c.errors, 2n);
    assert.equal(c.writes, 0n);
    assert.equal(c.flushes, 0n);
  }),
);

Deno.test(
  "a short read reported by the engine: IOERR, and only the bytes that arrived are marked",
  withHarness({ engine: "deferred", kind: "file" }, (h) => {
    h.fillDisk(0, pattern(SECTOR_SIZE, 28));
    // The engine reports 300 of 512 bytes.
    h.deferred!.intercept = (op) => {
      if (op.op !== "readv") return undefined;
      return 300;
    };
    const rec = new RecordingObserver();
    h.prepare(BlkRequestType.IN, 0);
    assert.equal(
      h.submit(
        [r(HEADER_GPA, 16), w(DATA_GPA, 200), w(DATA_GPA + 0x1000, 312), w(STATUS_GPA, 1)],
        rec,
      ),
      1,
    );
    assert.equal(h.status(), BlkStatus.IOERR);
    assert.deepEqual(rec.ranges, [[DATA_GPA, 200], [DATA_GPA + 0x1000, 100], [STATUS_GPA, 1]]);
  }),
);

engineTest(
  "a read past the end of a file that shrank is a short read: IOERR",
  { kind: "file" },
  (h) => {
    const data = pattern(4 * SECTOR_SIZE, 29);
    h.fillDisk(0, data);
    ftruncate(h.device.shared.backingFd, 3 * SECTOR_SIZE);
    const rec = new RecordingObserver();
    h.prepare(BlkRequestType.IN, 0);
    h.put(DATA_GPA, new Uint8Array(4 * SECTOR_SIZE));
    assert.equal(
      h.submit([r(HEADER_GPA, 16), w(DATA_GPA, 4 * SECTOR_SIZE), w(STATUS_GPA, 1)], rec),
      1,
    );
    assert.equal(h.status(), BlkStatus.IOERR);
    // The three sectors that were there arrived and are marked; nothing beyond.
    assert.deepEqual(h.get(DATA_GPA, 3 * SECTOR_SIZE), data.subarray(0, 3 * SECTOR_SIZE));
    assert.deepEqual(rec.ranges, [[DATA_GPA, 3 * SECTOR_SIZE], [STATUS_GPA, 1]]);
    assert.equal(h.device.shared.counters().errors, 1n);
  },
);

Deno.test(
  "fallocate EOPNOTSUPP: DISCARD still succeeds, WRITE_ZEROES writes zeroes instead",
  withHarness({ engine: "deferred", kind: "file" }, (h) => {
    const engine = h.deferred!;
    engine.intercept = (op) => op.op === "fallocate" ? -EOPNOTSUPP : undefined;
    const data = pattern(3000 * SECTOR_SIZE, 30);
    h.fillDisk(0, data);
    assert.deepEqual(
      h.discard(BlkRequestType.DISCARD, [{ sector: 0, sectors: 8, flags: 0 }]),
      [1, BlkStatus.OK],
    );
    assert.deepEqual(h.disk(0, data.length), data, "discard is a hint: the data may stay");
    // 2,500 sectors (1.2 MiB): two writes of zeroes; with UNMAP both fallocate modes are tried.
    assert.deepEqual(
      h.discard(BlkRequestType.WRITE_ZEROES, [
        { sector: 10, sectors: 2500, flags: WRITE_ZEROES_FLAG_UNMAP },
        { sector: 2600, sectors: 4, flags: 0 },
      ]),
      [1, BlkStatus.OK],
    );
    const expected = data.slice();
    expected.fill(0, 10 * SECTOR_SIZE, 2510 * SECTOR_SIZE);
    expected.fill(0, 2600 * SECTOR_SIZE, 2604 * SECTOR_SIZE);
    assert.deepEqual(h.disk(0, data.length), expected);
    assert.deepEqual(
      engine.log.map((o) => [o.op, o.mode, o.offset, o.length]),
      [
        ["fallocate", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 8 * SECTOR_SIZE],
        ["fallocate", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10 * SECTOR_SIZE, 2500 * 512],
        ["fallocate", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 10 * SECTOR_SIZE, 2500 * 512],
        ["writev", 0, 10 * SECTOR_SIZE, 1 << 20],
        ["writev", 0, 10 * SECTOR_SIZE + (1 << 20), 2500 * 512 - (1 << 20)],
        ["fallocate", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 2600 * SECTOR_SIZE, 2048],
        ["writev", 0, 2600 * SECTOR_SIZE, 2048],
      ],
    );
    // Another fallocate error fails the request.
    engine.intercept = (op) => op.op === "fallocate" ? -EIO : undefined;
    assert.deepEqual(
      h.discard(BlkRequestType.DISCARD, [{ sector: 0, sectors: 8, flags: 0 }]),
      [1, BlkStatus.IOERR],
    );
  }),
);

// ---------------------------------------------------------------------------
// --cache none: O_DIRECT with bounce buffers.

/** Why O_DIRECT cannot be tested for real here (in /var/tmp), or undefined. */
const DIRECT_UNAVAILABLE = (() => {
  const path = Deno.makeTempFileSync({ dir: "/var/tmp", prefix: "vhostd-dio-probe-" });
  try {
    Deno.truncateSync(path, 4096);
    const backing = openBacking({ kind: "file", path, readOnly: false, cache: "none" });
    closeBacking(backing);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    Deno.removeSync(path);
  }
})();

/** Registers a real O_DIRECT test per real engine (ignored, with the reason, where impossible). */
function directTest(name: string, opts: HarnessOptions, body: (h: Harness) => void): void {
  for (const engine of REAL_ENGINES) {
    const why = DIRECT_UNAVAILABLE ??
      (engine === "io_uring" && URING_UNAVAILABLE ? `io_uring: ${URING_UNAVAILABLE}` : undefined);
    Deno.test({
      name: `[${engine}] O_DIRECT: ${name}${why ? ` (not possible here: ${why})` : ""}`,
      ignore: why !== undefined,
      fn: withHarness({ ...opts, engine, cacheNone: true }, body),
    });
  }
}

/** True when host address `address` lies inside the harness's guest memory. */
function inGuest(h: Harness, address: number): boolean {
  const region = h.memory.regions[0];
  return address >= region.hostAddr && address < region.hostAddr + region.size;
}

directTest("aligned guest buffers go straight to the file", {}, (h) => {
  assert.ok(h.device.backing.direct, "backing not opened with O_DIRECT");
  assert.match(h.device.describe(), /cache none \(O_DIRECT\)/);
  const data = pattern(8192, 40);
  h.put(DATA_GPA, data);
  assert.deepEqual(h.write(16, [r(DATA_GPA, 8192)]), [1, BlkStatus.OK]);
  assert.deepEqual(h.read(16, [w(DATA_GPA + 0x10000, 4096), w(DATA_GPA + 0x20000, 4096)]), [
    8193,
    BlkStatus.OK,
  ]);
  assert.deepEqual(h.get(DATA_GPA + 0x10000, 4096), data.subarray(0, 4096));
  assert.deepEqual(h.get(DATA_GPA + 0x20000, 4096), data.subarray(4096));
  assert.deepEqual(h.disk(16 * SECTOR_SIZE, 8192), data);
  for (const op of h.ops) {
    for (const [address] of op.iovecs) assert.ok(inGuest(h, address), "bounced an aligned buffer");
  }
});

directTest("misaligned guest buffers go through aligned bounce buffers", {}, (h) => {
  const { memAlign } = h.device.backing.direct!;
  const data = pattern(4096, 41);
  // Address off by one, a length that is not a multiple of the alignment, and data that
  // follows the header in the same descriptor.
  h.put(DATA_GPA + 1, data.subarray(0, 1000));
  h.put(DATA_GPA + 0x3000, data.subarray(1000, 4096));
  assert.deepEqual(h.write(8, [r(DATA_GPA + 1, 1000), r(DATA_GPA + 0x3000, 3096)]), [
    1,
    BlkStatus.OK,
  ]);
  assert.deepEqual(h.disk(8 * SECTOR_SIZE, 4096), data);

  const header = requestHeader(BlkRequestType.OUT, 40);
  const sector = pattern(SECTOR_SIZE, 42);
  h.put(0x6000, header);
  h.put(0x6000 + 16, sector);
  h.put(STATUS_GPA, Uint8Array.of(STATUS_UNSET));
  assert.equal(h.submit([r(0x6000, 16 + SECTOR_SIZE), w(STATUS_GPA, 1)]), 1);
  assert.equal(h.status(), BlkStatus.OK);
  assert.deepEqual(h.disk(40 * SECTOR_SIZE, SECTOR_SIZE), sector);

  const rec = new RecordingObserver();
  const segs = [w(DATA_GPA + 0x8003, 700), w(DATA_GPA + 0x9000, 3396)];
  h.prepare(BlkRequestType.IN, 8);
  assert.equal(h.submit([r(HEADER_GPA, 16), ...segs, w(STATUS_GPA, 1)], rec), 4097);
  assert.equal(h.status(), BlkStatus.OK);
  assert.deepEqual(h.get(segs[0].addr, 700), data.subarray(0, 700));
  assert.deepEqual(h.get(segs[1].addr, 3396), data.subarray(700));
  assert.deepEqual(rec.ranges, [[segs[0].addr, 700], [segs[1].addr, 3396], [STATUS_GPA, 1]]);

  for (const op of h.ops) {
    assert.equal(op.iovecs.length, 1);
    const [address, length] = op.iovecs[0];
    assert.ok(!inGuest(h, address), "a misaligned guest buffer reached O_DIRECT");
    assert.equal(address % Math.max(memAlign, 4096), 0);
    assert.equal(length % SECTOR_SIZE, 0);
  }
});

directTest("a large misaligned transfer moves in several bounce-buffer pieces", {}, (h) => {
  const length = 600 * 1024;
  const data = pattern(length, 43);
  h.put(DATA_GPA + 3, data);
  assert.deepEqual(h.write(100, [r(DATA_GPA + 3, length)]), [1, BlkStatus.OK]);
  assert.deepEqual(h.disk(100 * SECTOR_SIZE, length), data);
  assert.deepEqual(h.ops.map((o) => [o.op, o.offset, o.iovecs[0][1]]), [
    ["writev", 100 * SECTOR_SIZE, 256 * 1024],
    ["writev", 100 * SECTOR_SIZE + 256 * 1024, 256 * 1024],
    ["writev", 100 * SECTOR_SIZE + 512 * 1024, 88 * 1024],
  ]);
  const readAt = DATA_GPA + 0x100005;
  h.put(readAt, new Uint8Array(length));
  assert.deepEqual(h.read(100, [w(readAt, length)]), [length + 1, BlkStatus.OK]);
  assert.deepEqual(h.get(readAt, length), data);
});

directTest("write-through writes carry dsync under O_DIRECT too", { writeback: false }, (h) => {
  h.put(DATA_GPA, pattern(4096, 44));
  h.put(DATA_GPA + 0x2001, pattern(512, 45));
  assert.deepEqual(h.write(0, [r(DATA_GPA, 4096)]), [1, BlkStatus.OK]);
  assert.deepEqual(h.write(8, [r(DATA_GPA + 0x2001, 512)]), [1, BlkStatus.OK]);
  assert.deepEqual(h.ops.map((o) => [o.op, o.dsync]), [["writev", true], ["writev", true]]);
  assert.deepEqual(h.disk(8 * SECTOR_SIZE, 512), pattern(512, 45));
});

Deno.test(
  "O_DIRECT alignment rules (fake 4 KiB alignment, checked by the engine): bounce and buffered fd",
  () => {
    // The backing fd is not really O_DIRECT here: the deferred engine checks what a 4 KiB
    // O_DIRECT file would refuse, and which fd each operation went to.
    let buffered = -1;
    const path = Deno.makeTempFileSync({ prefix: "vhostd-blk-test-", suffix: ".img" });
    Deno.truncateSync(path, DISK_SIZE);
    const probe = openBacking({ kind: "file", path, readOnly: false });
    buffered = dupFd(probe.fd);
    closeBacking(probe);
    const h = new Harness({
      engine: "deferred",
      kind: "ram",
      direct: { memAlign: 4096, offsetAlign: 4096, bufferedFd: buffered },
    });
    try {
      const direct = h.device.shared.backingFd;
      const violations: string[] = [];
      h.deferred!.intercept = (op) => {
        if (op.fd !== direct || (op.op !== "readv" && op.op !== "writev")) return undefined;
        if (op.offset % 4096 !== 0) violations.push(`offset ${op.offset}`);
        for (const [address, length] of op.iovecs) {
          if (address % 4096 !== 0 || length % 4096 !== 0) {
            violations.push(`iovec 0x${address.toString(16)}+${length}`);
          }
        }
        return undefined;
      };
      const data = pattern(8192, 46);
      h.put(DATA_GPA, data);
      h.put(DATA_GPA + 0x10200, data);
      // Aligned everywhere: straight from guest memory.
      assert.deepEqual(h.write(8, [r(DATA_GPA, 8192)]), [1, BlkStatus.OK]);
      // Guest buffer at a 512-byte boundary only: bounced.
      assert.deepEqual(h.write(24, [r(DATA_GPA + 0x10200, 8192)]), [1, BlkStatus.OK]);
      // Buffers of 512 and 3584 bytes: lengths not multiples of 4096, bounced.
      assert.deepEqual(h.write(40, [r(DATA_GPA, 512), r(DATA_GPA + 0x10200, 3584)]), [
        1,
        BlkStatus.OK,
      ]);
      // File offset (sector 1) not a multiple of 4096: the buffered fd.
      assert.deepEqual(h.write(1, [r(DATA_GPA, 512)]), [1, BlkStatus.OK]);
      assert.deepEqual(h.read(9, [w(DATA_GPA + 0x20000, 1024)]), [1025, BlkStatus.OK]);
      assert.deepEqual(violations, []);
      const ops = h.deferred!.log;
      assert.deepEqual(ops.map((o) => o.fd === buffered ? "buffered" : "direct"), [
        "direct",
        "direct",
        "direct",
        "buffered",
        "buffered",
      ]);
      assert.ok(inGuest(h, ops[0].iovecs[0][0]));
      assert.ok(!inGuest(h, ops[1].iovecs[0][0]));
      assert.ok(!inGuest(h, ops[2].iovecs[0][0]));
      assert.ok(inGuest(h, ops[3].iovecs[0][0]), "the buffered fd needs no bounce");
      assert.deepEqual(h.disk(24 * SECTOR_SIZE, 8192), data);
    } finally {
      h.close();
      Deno.removeSync(path);
    }
  },
);
