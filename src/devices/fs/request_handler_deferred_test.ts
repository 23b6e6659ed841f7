/**
 * The fs data half on an engine whose operations wait for the test: READ,
 * WRITE and FSYNC complete later, other requests go on meanwhile, and no
 * handle fd is closed under an operation in flight.
 */

import assert from "node:assert/strict";
import { O_RDWR } from "../../../ffi/mod.ts";
import { setLogLevel } from "../../log.ts";
import { arrayBufferRegion, GuestMemory, type WriteObserver } from "../../memory/guest_memory.ts";
import { DescriptorChain } from "../../virtqueue/descriptor_chain.ts";
import { DeferredEngine, RecordingContext } from "../../../tests/support/engine_doubles.ts";
import { DEFERRED } from "../device.ts";
import {
  decodeEntryOut,
  decodeOpenOut,
  decodeOutHeader,
  decodeWriteOut,
  encodeRequest,
  type FuseArgsInputByOpcode,
  type FuseDecodableOpcode,
  FuseFsyncFlag,
  FuseInitFlag,
  FuseOpcode,
  FuseWriteFlag,
} from "./fuse/mod.ts";
import { FsRequestHandler } from "./request_handler.ts";
import { type FsOptions, PassthroughFs } from "./passthrough/mod.ts";

setLogLevel("error");

const SLOT = 0x1_0000;
const REPLY_AT = 0x8000;
const enc = new TextEncoder();

class Observer implements WriteObserver {
  ranges: [number, number][] = [];
  markWritten(gpa: number, len: number): void {
    this.ranges.push([gpa, len]);
  }
  /** True when some marked range overlaps [gpa, gpa + len). */
  touched(gpa: number, len: number): boolean {
    return this.ranges.some(([a, l]) => a < gpa + len && gpa < a + l);
  }
}

/** A handler over a real directory, an engine that holds operations, and one chain per slot. */
class DeferredHarness implements Disposable {
  readonly dir = Deno.makeTempDirSync({ prefix: "vhostd-fs-deferred-" });
  readonly memory = new GuestMemory([arrayBufferRegion(0, 64 * SLOT)]);
  readonly observer = new Observer();
  readonly engine = new DeferredEngine();
  readonly context = new RecordingContext();
  readonly handler: FsRequestHandler;
  #unique = 1n;
  #slot = 0;

  constructor(makeFs: (options: FsOptions) => PassthroughFs = (o) => new PassthroughFs(o)) {
    this.memory.writeObserver = this.observer;
    this.handler = new FsRequestHandler(
      { sharedDir: this.dir, readOnly: false, migrationOnError: "abort" },
      makeFs,
      { aio: "io_uring", openEngine: () => this.engine },
    );
    this.handler.attach(this.context);
  }

  [Symbol.dispose](): void {
    this.engine.runAll();
    this.handler.close();
    Deno.removeSync(this.dir, { recursive: true });
  }

  /** Puts a request in the next slot; returns its chain, reply address and handle() result. */
  send<K extends FuseDecodableOpcode>(
    opcode: K,
    args: FuseArgsInputByOpcode[K],
    nodeid = 1n,
    replySize = 4096,
  ): { chain: DescriptorChain; reply: number; result: number | typeof DEFERRED } {
    const head = this.#slot++;
    const base = head * SLOT;
    const bytes = encodeRequest(opcode, {
      unique: this.#unique++,
      nodeid,
      uid: 0,
      gid: 0,
      pid: 1,
    }, args);
    this.memory.regions[0].bytes.set(bytes, base);
    const reply = base + REPLY_AT;
    const chain = new DescriptorChain(head, [
      { addr: base, len: bytes.length, writable: false },
      { addr: reply, len: replySize, writable: true },
    ], undefined);
    return { chain, reply, result: this.handler.handle(chain, this.memory, 1) };
  }

  /** The reply of a request answered at once: error and payload. */
  now<K extends FuseDecodableOpcode>(
    opcode: K,
    args: FuseArgsInputByOpcode[K],
    nodeid = 1n,
  ): { error: number; payload: Uint8Array } {
    const sent = this.send(opcode, args, nodeid);
    assert.equal(typeof sent.result, "number", `${opcode} is answered at once`);
    return this.replyAt(sent.reply);
  }

  replyAt(gpa: number): { error: number; payload: Uint8Array } {
    const bytes = this.memory.regions[0].bytes;
    const header = decodeOutHeader(bytes.subarray(gpa, gpa + 16));
    return {
      error: header.error === 0 ? 0 : -header.error,
      payload: bytes.slice(gpa + 16, gpa + header.len),
    };
  }

  /** INIT, then LOOKUP and OPEN of `name` (which must exist); returns the handle. */
  open(name: string): bigint {
    if (!this.handler.session.initialized) {
      const init = this.now(FuseOpcode.INIT, {
        major: 7,
        minor: 37,
        maxReadahead: 1 << 20,
        flags: FuseInitFlag.ASYNC_READ,
        flags2: 0,
      });
      assert.equal(init.error, 0);
    }
    const looked = this.now(FuseOpcode.LOOKUP, { name: enc.encode(name) });
    assert.equal(looked.error, 0);
    const nodeid = decodeEntryOut(looked.payload).nodeid;
    const opened = this.now(FuseOpcode.OPEN, { flags: O_RDWR, openFlags: 0 }, nodeid);
    assert.equal(opened.error, 0);
    return decodeOpenOut(opened.payload).fh;
  }

  /** READ of `size` bytes at `offset` of handle `fh`. */
  read(fh: bigint, offset: bigint, size: number) {
    return this.send(FuseOpcode.READ, { fh, offset, size, readFlags: 0, lockOwner: 0n, flags: 0 });
  }

  /** WRITE of `data` at `offset` of handle `fh`. */
  write(fh: bigint, offset: bigint, data: Uint8Array, writeFlags = 0) {
    return this.send(FuseOpcode.WRITE, { fh, offset, writeFlags, lockOwner: 0n, flags: 0, data });
  }

  completed(head: number): number | undefined {
    return this.context.completions.find((c) => c.head === head)?.written;
  }
}

/**
 * The file `fd` names now, or undefined when it is closed. Test modules run
 * in parallel in one process, so a closed number may be reused at once: the
 * tests compare what the number names, not whether it is open.
 */
function fileOf(fd: number): string | undefined {
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

Deno.test("READ completes later; other requests are answered meanwhile; pages are marked on landing", () => {
  using h = new DeferredHarness();
  Deno.writeTextFileSync(`${h.dir}/a`, "hello, deferred world");
  const fh = h.open("a");
  const read = h.read(fh, 7n, 8);
  assert.equal(read.result, DEFERRED);
  assert.equal(h.engine.held.length + h.engine.log.length > 0, true);
  assert.equal(h.completed(read.chain.head), undefined, "nothing completed before the engine");
  const dataAt = read.reply + 16;
  assert.ok(!h.observer.touched(dataAt, 8), "no page marked before the data landed");
  // The Worker goes on: a GETATTR is answered while the READ is in the kernel.
  assert.equal(h.now(FuseOpcode.GETATTR, { getattrFlags: 0, fh: 0n }).error, 0);
  h.handler.submitQueued();
  assert.equal(h.engine.held.length, 1);
  assert.equal(h.engine.held[0].op, "readv");
  assert.equal(h.engine.runAll(), 1);
  assert.equal(h.completed(read.chain.head), 16 + 8);
  const reply = h.replyAt(read.reply);
  assert.equal(reply.error, 0);
  assert.equal(new TextDecoder().decode(reply.payload), "deferred");
  assert.ok(h.observer.touched(dataAt, 8), "the data's pages are marked once it landed");
  assert.deepEqual(h.context.doubles, []);
});

Deno.test("WRITE and FSYNC complete later with their replies; a failed one gets -errno", () => {
  using h = new DeferredHarness();
  Deno.writeTextFileSync(`${h.dir}/b`, "");
  const fh = h.open("b");
  const write = h.write(fh, 0n, enc.encode("async bytes"));
  const fsync = h.send(FuseOpcode.FSYNC, { fh, fsyncFlags: FuseFsyncFlag.FDATASYNC });
  assert.equal(write.result, DEFERRED);
  assert.equal(fsync.result, DEFERRED);
  h.handler.submitQueued();
  assert.deepEqual(h.engine.held.map((op) => op.op), ["writev", "fsync"]);
  assert.equal(h.engine.held[1].dataOnly, true);
  // Complete out of order, the fsync failing.
  h.engine.held[1].fake(-5);
  h.engine.held[0].run();
  assert.equal(h.replyAt(fsync.reply).error, 5);
  assert.equal(h.completed(fsync.chain.head), 16);
  const written = h.replyAt(write.reply);
  assert.equal(written.error, 0);
  assert.equal(decodeWriteOut(written.payload).size, 11);
  assert.equal(h.completed(write.chain.head), 16 + 8);
  assert.equal(Deno.readTextFileSync(`${h.dir}/b`), "async bytes");
});

Deno.test("a WRITE that must clear setuid/setgid runs at once", () => {
  using h = new DeferredHarness();
  Deno.writeTextFileSync(`${h.dir}/c`, "");
  const fh = h.open("c");
  const write = h.write(fh, 0n, enc.encode("now"), FuseWriteFlag.KILL_SUIDGID);
  assert.equal(write.result, 16 + 8);
  assert.equal(h.engine.log.length, 0);
  assert.equal(Deno.readTextFileSync(`${h.dir}/c`), "now");
});

Deno.test("RELEASE of a handle with a READ in flight closes its fd only after the READ", () => {
  using h = new DeferredHarness();
  Deno.writeTextFileSync(`${h.dir}/d`, "0123456789");
  const fh = h.open("d");
  const read = h.read(fh, 0n, 10);
  assert.equal(read.result, DEFERRED);
  h.handler.submitQueued();
  const fd = h.engine.held[0].fd;
  // RELEASE is answered at once, but the fd the READ uses stays open.
  assert.equal(
    h.now(FuseOpcode.RELEASE, { fh, flags: 0, releaseFlags: 0, lockOwner: 0n }).error,
    0,
  );
  assert.equal(fileOf(fd), `${h.dir}/d`, "the handle's fd stays open while its READ is in flight");
  h.engine.runAll();
  assert.equal(new TextDecoder().decode(h.replyAt(read.reply).payload), "0123456789");
  assert.notEqual(fileOf(fd), `${h.dir}/d`, "closed once the READ completed");
  // The handle is gone for the guest.
  const again = h.read(fh, 0n, 1);
  assert.equal(typeof again.result, "number");
  assert.equal(h.replyAt(again.reply).error, 9 /* EBADF */);
});

Deno.test("DESTROY waits for the I/O in flight before it closes every handle", () => {
  using h = new DeferredHarness();
  Deno.writeTextFileSync(`${h.dir}/e`, "");
  const fh = h.open("e");
  const write = h.write(fh, 0n, enc.encode("before destroy"));
  assert.equal(write.result, DEFERRED);
  const destroy = h.send(
    FuseOpcode.DESTROY,
    {} as FuseArgsInputByOpcode[typeof FuseOpcode.DESTROY],
  );
  assert.equal(destroy.result, DEFERRED, "DESTROY waits");
  h.handler.submitQueued();
  const fd = h.engine.held[0].fd;
  assert.equal(fileOf(fd), `${h.dir}/e`);
  assert.equal(h.completed(destroy.chain.head), undefined);
  h.engine.runAll();
  assert.equal(h.completed(destroy.chain.head), 16, "DESTROY answered after the write");
  assert.equal(h.replyAt(destroy.reply).error, 0);
  assert.notEqual(fileOf(fd), `${h.dir}/e`, "DESTROY closed the handle");
  assert.equal(Deno.readTextFileSync(`${h.dir}/e`), "before destroy");
  assert.equal(h.handler.session.initialized, false);
});

/** A core whose io_uring WRITEs of every handle go to `directFd` until it is dropped. */
class DirectWriterFs extends PassthroughFs {
  directFd = -1;
  readonly dropped: bigint[] = [];
  override asyncWriteFd(fh: bigint): number {
    return this.directFd >= 0 ? this.directFd : super.asyncWriteFd(fh);
  }
  override dropDirectWriter(fh: bigint): void {
    this.dropped.push(fh);
    this.directFd = -1;
    super.dropDirectWriter(fh);
  }
}

Deno.test("a WRITE its O_DIRECT descriptor refuses with EINVAL is written through the handle's fd", () => {
  let fs: DirectWriterFs | undefined;
  using h = new DeferredHarness((options) => fs = new DirectWriterFs(options));
  Deno.writeTextFileSync(`${h.dir}/f`, "");
  const fh = h.open("f");
  const plainFd = fs!.asyncWriteFd(fh);
  fs!.directFd = 1_000_000; // a number the engine never really writes to: the test answers
  const write = h.write(fh, 0n, enc.encode("aligned or not"));
  assert.equal(write.result, DEFERRED);
  h.handler.submitQueued();
  assert.equal(h.engine.held.length, 1);
  assert.equal(h.engine.held[0].fd, 1_000_000, "the first try goes to the direct descriptor");
  h.engine.held[0].fake(-22 /* EINVAL: the backing wants aligned direct I/O */);
  assert.equal(h.completed(write.chain.head), undefined, "not answered with the EINVAL");
  assert.deepEqual(fs!.dropped, [fh]);
  h.handler.submitQueued();
  assert.equal(h.engine.held.length, 1);
  assert.equal(h.engine.held[0].fd, plainFd, "written again through the handle's fd");
  h.engine.runAll();
  const written = h.replyAt(write.reply);
  assert.equal(written.error, 0);
  assert.equal(decodeWriteOut(written.payload).size, 14);
  assert.equal(Deno.readTextFileSync(`${h.dir}/f`), "aligned or not");
  // Later writes go to the handle's fd at once.
  const next = h.write(fh, 14n, enc.encode("!"));
  h.handler.submitQueued();
  assert.equal(h.engine.held[0].fd, plainFd);
  h.engine.runAll();
  assert.equal(h.replyAt(next.reply).error, 0);
});
