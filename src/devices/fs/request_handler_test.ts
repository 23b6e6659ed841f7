import assert from "node:assert/strict";
import {
  closeQuietly,
  EBADF,
  EEXIST,
  EFBIG,
  EINVAL,
  EIO,
  ENOENT,
  ENOSYS,
  EPROTO,
  memfdCreate,
  pread,
  pwrite,
} from "../../../ffi/mod.ts";
import { setLogLevel } from "../../log.ts";
import { arrayBufferRegion, GuestMemory, type WriteObserver } from "../../memory/guest_memory.ts";
import { DescriptorChain, type Segment } from "../../virtqueue/descriptor_chain.ts";
import {
  decodeAttrOut,
  decodeCreateOut,
  decodeEntryOut,
  decodeInitOut,
  decodeLseekOut,
  decodeOpenOut,
  decodeOutHeader,
  decodeStatfsOut,
  decodeWriteOut,
  encodeAttrOut,
  encodeCreateOut,
  encodeEntryOut,
  encodeGroupsExtension,
  encodeInHeader,
  encodeRequest,
  FUSE_KERNEL_MINOR_VERSION,
  type FuseArgsInputByOpcode,
  type FuseAttr,
  type FuseDecodableOpcode,
  FuseGetattrFlag,
  type FuseInitArgs,
  FuseInitFlag,
  FuseOpcode,
  FuseOpenInFlag,
  type FuseSetattrArgs,
  FuseWriteFlag,
  splitReply,
} from "./fuse/mod.ts";
import type { FileSystem } from "./core_dispatch.ts";
import { FsRequestHandler } from "./request_handler.ts";
import { MAX_REQUEST_BYTES } from "./request_shape.ts";
import {
  type AttrResult as FsAttr,
  type Caller,
  type CreateArgs,
  entryOut,
  type EntryResult as FsEntry,
  FsError,
  type FsInitResult,
  type FsOptions,
  type FsSnapshot,
  type OpenResult as FsOpened,
  type StatfsResult as FsStatfs,
} from "./passthrough/mod.ts";

// Failed requests are the point of many tests here: keep their warnings out of the output.
setLogLevel("error");

const MEM_SIZE = 4 << 20;
const REQUEST_GPA = 0x1000;
const REPLY_GPA = 0x20_0000;
const enc = new TextEncoder();

const ATTR: FuseAttr = {
  ino: 42n,
  size: 5n,
  blocks: 1n,
  atime: 1n,
  mtime: 2n,
  ctime: 3n,
  atimensec: 4,
  mtimensec: 5,
  ctimensec: 6,
  mode: 0o100644,
  nlink: 1,
  uid: 1000,
  gid: 1000,
  rdev: 0,
  blksize: 4096,
};

function entry(nodeid: bigint): FsEntry {
  return {
    nodeid,
    generation: 7n,
    attr: { ...ATTR, ino: nodeid + 100n },
    entryTimeoutSec: 1.5,
    attrTimeoutSec: 2,
  };
}

/** An in-memory stand-in for PassthroughFs: names in one flat directory, files in memfds. */
class FakeFs implements FileSystem {
  readonly calls: { op: string; args: unknown[] }[] = [];
  readonly names = new Map<string, bigint>();
  readonly handles = new Map<bigint, number>();
  nextNode = 2n;
  nextFh = 10n;
  snapshotValue: Record<string, unknown> = { inodes: [] };
  restoreResult: { errors: string[] } = { errors: [] };
  restoreThrows: Error | undefined;
  throwNext: unknown;
  readdirPayload = new Uint8Array(0);
  destroyed = 0;
  closed = 0;

  constructor(readonly options: FsOptions) {}

  #record(op: string, ...args: unknown[]): void {
    this.calls.push({ op, args });
    if (this.throwNext !== undefined) {
      const e = this.throwNext;
      this.throwNext = undefined;
      throw e;
    }
  }

  #new(name: Uint8Array): FsEntry {
    const key = new TextDecoder().decode(name);
    if (this.names.has(key)) throw new FsError(EEXIST);
    const nodeid = this.nextNode++;
    this.names.set(key, nodeid);
    return entry(nodeid);
  }

  #handle(fh: bigint): number {
    const fd = this.handles.get(fh);
    if (fd === undefined) throw new FsError(EBADF);
    return fd;
  }

  init(args: FuseInitArgs): FsInitResult {
    this.#record("init", args);
    return {
      flags: args.flags & (FuseInitFlag.ASYNC_READ | FuseInitFlag.DO_READDIRPLUS),
      flags2: 0,
      maxWrite: 1 << 20,
      maxReadahead: Math.min(args.maxReadahead, 1 << 17),
      maxPages: 256,
      timeGran: 1,
      minor: Math.min(args.minor, FUSE_KERNEL_MINOR_VERSION),
    };
  }
  destroy(): void {
    this.destroyed++;
    this.#record("destroy");
  }
  lookup(parent: bigint, name: Uint8Array): FsEntry {
    this.#record("lookup", parent, name.slice());
    const nodeid = this.names.get(new TextDecoder().decode(name));
    if (nodeid === undefined) throw new FsError(ENOENT);
    return entry(nodeid);
  }
  forget(nodeid: bigint, nlookup: bigint): void {
    this.#record("forget", nodeid, nlookup);
  }
  batchForget(items: { nodeid: bigint; nlookup: bigint }[]): void {
    this.#record("batchForget", items);
  }
  getattr(nodeid: bigint, fh?: bigint): FsAttr {
    this.#record("getattr", nodeid, fh);
    return { attr: ATTR, attrTimeoutSec: 0.25 };
  }

  lookupInto(parent: bigint, name: Uint8Array, target: Uint8Array, at: number): void {
    encodeEntryOut(entryOut(this.lookup(parent, name)), target, at);
  }
  getattrInto(nodeid: bigint, fh: bigint | undefined, target: Uint8Array, at: number): void {
    this.#record("getattr", nodeid, fh);
    encodeAttrOut({ attrValid: 0n, attrValidNsec: 250_000_000, attr: ATTR }, target, at);
  }
  setattr(nodeid: bigint, args: FuseSetattrArgs, caller?: Caller): FsAttr {
    this.#record("setattr", nodeid, args, caller);
    return { attr: { ...ATTR, mode: 0o100000 | args.mode }, attrTimeoutSec: 1 };
  }
  readlink(nodeid: bigint): Uint8Array {
    this.#record("readlink", nodeid);
    return enc.encode("target/of/link");
  }
  symlink(
    parent: bigint,
    name: Uint8Array,
    target: Uint8Array,
    uid: number,
    gid: number,
    groups?: readonly number[],
  ) {
    this.#record("symlink", parent, name.slice(), target.slice(), uid, gid, groups);
    return this.#new(name);
  }
  mknod(
    parent: bigint,
    name: Uint8Array,
    mode: number,
    rdev: number,
    umask: number,
    uid: number,
    gid: number,
    groups?: readonly number[],
  ): FsEntry {
    this.#record("mknod", parent, name.slice(), mode, rdev, umask, uid, gid, groups);
    return this.#new(name);
  }
  mkdir(
    parent: bigint,
    name: Uint8Array,
    mode: number,
    umask: number,
    uid: number,
    gid: number,
    groups?: readonly number[],
  ) {
    this.#record("mkdir", parent, name.slice(), mode, umask, uid, gid, groups);
    return this.#new(name);
  }
  unlink(parent: bigint, name: Uint8Array, caller?: Caller): void {
    this.#record("unlink", parent, name.slice(), caller);
  }
  rmdir(parent: bigint, name: Uint8Array, caller?: Caller): void {
    this.#record("rmdir", parent, name.slice(), caller);
  }
  rename(
    parent: bigint,
    name: Uint8Array,
    newParent: bigint,
    newName: Uint8Array,
    flags: number,
    caller?: Caller,
  ) {
    this.#record("rename", parent, name.slice(), newParent, newName.slice(), flags, caller);
  }
  link(nodeid: bigint, newParent: bigint, newName: Uint8Array, caller?: Caller): FsEntry {
    this.#record("link", nodeid, newParent, newName.slice(), caller);
    return entry(nodeid);
  }
  open(nodeid: bigint, flags: number, caller?: Caller, killSuidgid?: boolean): FsOpened {
    this.#record("open", nodeid, flags, caller, killSuidgid);
    return this.#openHandle();
  }
  #openHandle(): FsOpened {
    const fh = this.nextFh++;
    this.handles.set(fh, memfdCreate("fake-fs-file"));
    return { fh, openFlags: 2 };
  }
  create(
    parent: bigint,
    name: Uint8Array,
    flags: number,
    mode: number,
    umask: number,
    uid: number,
    gid: number,
    groups?: readonly number[],
    killSuidgid?: boolean,
  ) {
    this.#record("create", parent, name.slice(), flags, mode, umask, uid, gid, groups, killSuidgid);
    return { entry: this.#new(name), open: this.#openHandle() };
  }
  createInto(
    parent: bigint,
    args: CreateArgs,
    caller: Caller,
    killSuidgid: boolean,
    target: Uint8Array,
    at: number,
  ): void {
    const { name, flags, mode, umask } = args;
    const { uid, gid, groups } = caller;
    const made = this.create(parent, name, flags, mode, umask, uid, gid, groups, killSuidgid);
    encodeCreateOut(entryOut(made.entry), made.open, target, at);
  }
  readFd(fh: bigint): number {
    this.#record("readFd", fh);
    return this.#handle(fh);
  }
  /** A second descriptor for io_uring writes, when the test gives one (`directWriters`). */
  readonly directWriters = new Map<bigint, number>();
  asyncWriteFd(fh: bigint): number {
    this.#record("asyncWriteFd", fh);
    return this.directWriters.get(fh) ?? this.#handle(fh);
  }
  dropDirectWriter(fh: bigint): void {
    this.#record("dropDirectWriter", fh);
    this.directWriters.delete(fh);
  }
  write<T>(fh: bigint, killSuidgid: boolean, transfer: (fd: number) => T): T {
    this.#record("write", fh, killSuidgid);
    return transfer(this.#handle(fh));
  }
  statfs(nodeid: bigint): FsStatfs {
    this.#record("statfs", nodeid);
    return {
      blocks: 1000n,
      bfree: 500n,
      bavail: 400,
      files: 100,
      ffree: 50n,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }
  release(fh: bigint): void {
    this.#record("release", fh);
    closeQuietly(this.#handle(fh));
    this.handles.delete(fh);
  }
  flush(fh: bigint): void {
    this.#record("flush", fh);
  }
  fsync(fh: bigint, datasync: boolean): void {
    this.#record("fsync", fh, datasync);
  }
  opendir(nodeid: bigint, flags: number): FsOpened {
    this.#record("opendir", nodeid, flags);
    return { fh: 99n, openFlags: 0 };
  }
  readdir(nodeid: bigint, fh: bigint, offset: bigint, size: number, plus: boolean): Uint8Array {
    this.#record("readdir", nodeid, fh, offset, size, plus);
    return this.readdirPayload.subarray(0, size);
  }
  releasedir(fh: bigint): void {
    this.#record("releasedir", fh);
  }
  fsyncdir(fh: bigint, datasync: boolean): void {
    this.#record("fsyncdir", fh, datasync);
  }
  access(nodeid: bigint, mask: number): void {
    this.#record("access", nodeid, mask);
  }
  fallocate(fh: bigint, mode: number, offset: bigint, length: bigint): void {
    this.#record("fallocate", fh, mode, offset, length);
  }
  lseek(fh: bigint, offset: bigint, whence: number): bigint {
    this.#record("lseek", fh, offset, whence);
    return offset + 1n;
  }
  // Extended attributes are off in these tests, as by default: the core answers ENOSYS.
  getxattr(nodeid: bigint, name: Uint8Array, size: number): never {
    this.#record("getxattr", nodeid, name.slice(), size);
    throw new FsError(ENOSYS);
  }
  listxattr(nodeid: bigint, size: number): never {
    this.#record("listxattr", nodeid, size);
    throw new FsError(ENOSYS);
  }
  setxattr(nodeid: bigint, name: Uint8Array, value: Uint8Array): never {
    this.#record("setxattr", nodeid, name.slice(), value.slice());
    throw new FsError(ENOSYS);
  }
  removexattr(nodeid: bigint, name: Uint8Array): never {
    this.#record("removexattr", nodeid, name.slice());
    throw new FsError(ENOSYS);
  }
  snapshot(): FsSnapshot {
    this.#record("snapshot");
    // The handler treats the core's snapshot as opaque JSON.
    return this.snapshotValue as unknown as FsSnapshot;
  }
  restore(snapshot: FsSnapshot): { errors: string[] } {
    this.#record("restore", snapshot);
    if (this.restoreThrows) throw this.restoreThrows;
    return this.restoreResult;
  }
  close(): void {
    this.closed++;
    for (const fd of this.handles.values()) closeQuietly(fd);
    this.handles.clear();
  }
  last(op: string): unknown[] {
    const call = this.calls.findLast((c) => c.op === op);
    assert.ok(call, `${op} was not called`);
    return call.args;
  }
}

class RecordingObserver implements WriteObserver {
  ranges: [number, number][] = [];
  markWritten(gpa: number, len: number): void {
    this.ranges.push([gpa, len]);
  }
}

interface Sent {
  /** Used length the handler returned. */
  used: number;
  /** The writable area after the request. */
  reply: Uint8Array;
}

class Harness implements Disposable {
  readonly memory = new GuestMemory([arrayBufferRegion(0, MEM_SIZE)]);
  readonly created: FakeFs[] = [];
  readonly handler: FsRequestHandler;
  /** Applied to every core the handler creates from now on. */
  configure: (fs: FakeFs) => void = () => {};
  unique = 1n;

  constructor(options: Partial<FsOptions> = {}) {
    this.handler = new FsRequestHandler(
      { sharedDir: "/nonexistent", readOnly: false, migrationOnError: "abort", ...options },
      (opts) => {
        const fs = new FakeFs(opts);
        this.configure(fs);
        this.created.push(fs);
        return fs;
      },
    );
  }

  [Symbol.dispose](): void {
    for (const fs of this.created) fs.close();
  }

  get fs(): FakeFs {
    return this.created[this.created.length - 1];
  }

  /**
   * Puts `request` into readable segments of the given sizes (the rest in
   * one more) and offers writable segments of `writable` sizes.
   */
  sendRaw(
    request: Uint8Array,
    writable: number[] = [4096],
    readable: number[] = [],
    error?: string,
  ): Sent {
    const bytes = this.memory.regions[0].bytes;
    bytes.set(request, REQUEST_GPA);
    const segments: Segment[] = [];
    let at = 0;
    for (const len of readable) {
      if (at >= request.length) break;
      const n = Math.min(len, request.length - at);
      segments.push({ addr: REQUEST_GPA + at, len: n, writable: false });
      at += n;
    }
    if (at < request.length) {
      segments.push({ addr: REQUEST_GPA + at, len: request.length - at, writable: false });
    }
    const total = writable.reduce((a, b) => a + b, 0);
    bytes.fill(0xee, REPLY_GPA, REPLY_GPA + total);
    // Writable segments in reverse address order: the handler must follow the chain, not memory.
    let end = REPLY_GPA + total;
    const writableSegments: Segment[] = [];
    for (const len of writable) {
      end -= len;
      writableSegments.push({ addr: end, len, writable: true });
    }
    segments.push(...writableSegments);
    const chain = new DescriptorChain(3, segments, error);
    const used = this.handler.handle(chain, this.memory, 1);
    if (typeof used !== "number") throw new Error("a handler without an engine deferred a request");
    // Reassemble the writable area in chain order.
    const reply = new Uint8Array(total);
    let off = 0;
    for (const seg of writableSegments) {
      reply.set(bytes.subarray(seg.addr, seg.addr + seg.len), off);
      off += seg.len;
    }
    return { used, reply };
  }

  send<K extends FuseDecodableOpcode>(
    opcode: K,
    args: FuseArgsInputByOpcode[K],
    options: { nodeid?: bigint; writable?: number[]; readable?: number[]; uid?: number } = {},
  ): Sent & { unique: bigint } {
    const unique = this.unique++;
    const request = encodeRequest(opcode, {
      unique,
      nodeid: options.nodeid ?? 1n,
      uid: options.uid ?? 1000,
      gid: 100,
      pid: 5,
    }, args);
    return { ...this.sendRaw(request, options.writable, options.readable), unique };
  }

  /** Sends and returns the error (positive errno, 0 for success) and payload, checking framing. */
  call<K extends FuseDecodableOpcode>(
    opcode: K,
    args: FuseArgsInputByOpcode[K],
    options: { nodeid?: bigint; writable?: number[]; readable?: number[]; uid?: number } = {},
  ): { error: number; payload: Uint8Array } {
    const sent = this.send(opcode, args, options);
    const { header, payload } = splitReply(sent.reply);
    assert.equal(header.unique, sent.unique, "reply echoes unique");
    assert.equal(sent.used, header.len, "used length is the reply length");
    return { error: header.error === 0 ? 0 : -header.error, payload: payload.slice() };
  }

  init(flags = FuseInitFlag.ASYNC_READ | FuseInitFlag.DO_READDIRPLUS | FuseInitFlag.INIT_EXT) {
    return this.call(FuseOpcode.INIT, {
      major: 7,
      minor: 37,
      maxReadahead: 1 << 20,
      flags,
      flags2: 0,
    });
  }
}

function initedHarness(options: Partial<FsOptions> = {}): Harness {
  const h = new Harness(options);
  assert.equal(h.init().error, 0);
  return h;
}

Deno.test("INIT negotiates through the core and answers fuse_init_out", () => {
  using h = new Harness();
  const { error, payload } = h.init();
  assert.equal(error, 0);
  const out = decodeInitOut(payload);
  assert.equal(out.major, 7);
  assert.equal(out.minor, 37);
  assert.equal(out.maxWrite, 1 << 20);
  assert.equal(out.maxReadahead, 1 << 17);
  assert.equal(out.maxPages, 256);
  // The core's flags, plus INIT_EXT because the guest offered it.
  assert.equal(
    out.flags,
    FuseInitFlag.ASYNC_READ | FuseInitFlag.DO_READDIRPLUS | FuseInitFlag.INIT_EXT,
  );
  assert.ok(out.maxBackground > 0 && out.congestionThreshold <= out.maxBackground);
  assert.equal(h.handler.session.initialized, true);
});

Deno.test("requests before INIT fail with EIO; FORGET is still taken", () => {
  using h = new Harness();
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: enc.encode("a") }).error, EIO);
  assert.equal(h.send(FuseOpcode.FORGET, { nlookup: 1n }, { nodeid: 5n }).used, 0);
  assert.deepEqual(h.fs.last("forget"), [5n, 1n]);
});

Deno.test("INIT with major 6 is EPROTO; major 8 gets our version and no session", () => {
  using h = new Harness();
  const old = h.call(FuseOpcode.INIT, {
    major: 6,
    minor: 1,
    maxReadahead: 0,
    flags: 0,
    flags2: 0,
  });
  assert.equal(old.error, EPROTO);
  const newer = h.call(FuseOpcode.INIT, {
    major: 8,
    minor: 0,
    maxReadahead: 0,
    flags: 0,
    flags2: 0,
  });
  assert.equal(newer.error, 0);
  const out = decodeInitOut(newer.payload);
  assert.equal(out.major, 7);
  assert.equal(out.minor, FUSE_KERNEL_MINOR_VERSION);
  assert.equal(h.handler.session.initialized, false);
  assert.equal(h.fs.calls.filter((c) => c.op === "init").length, 0);
});

Deno.test("a second INIT starts a new session (the core forgets the old one)", () => {
  using h = initedHarness();
  assert.equal(h.fs.destroyed, 0);
  assert.equal(h.init().error, 0);
  assert.equal(h.fs.destroyed, 1);
});

Deno.test("DESTROY ends the session: requests fail until the next INIT", () => {
  using h = initedHarness();
  h.fs.names.set("x", 9n);
  assert.equal(h.call(FuseOpcode.DESTROY, {}).error, 0);
  assert.equal(h.fs.destroyed, 1);
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: enc.encode("x") }).error, EIO);
  assert.equal(h.init().error, 0);
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: enc.encode("x") }).error, 0);
});

Deno.test("LOOKUP: entry_out with timeouts split into seconds and nanoseconds", () => {
  using h = initedHarness();
  h.fs.names.set("file", 12n);
  const { error, payload } = h.call(FuseOpcode.LOOKUP, { name: enc.encode("file") }, {
    nodeid: 3n,
  });
  assert.equal(error, 0);
  const out = decodeEntryOut(payload);
  assert.equal(out.nodeid, 12n);
  assert.equal(out.generation, 7n);
  assert.equal(out.entryValid, 1n);
  assert.equal(out.entryValidNsec, 500_000_000);
  assert.equal(out.attrValid, 2n);
  assert.equal(out.attr.ino, 112n);
  assert.equal(out.attr.mode, 0o100644);
  assert.deepEqual(h.fs.last("lookup"), [3n, enc.encode("file")]);
});

Deno.test("core errors become -errno with a 16-byte reply", () => {
  using h = initedHarness();
  const sent = h.send(FuseOpcode.LOOKUP, { name: enc.encode("missing") });
  assert.equal(sent.used, 16);
  const header = decodeOutHeader(sent.reply);
  assert.equal(header.len, 16);
  assert.equal(header.error, -ENOENT);
  assert.equal(header.unique, sent.unique);
});

Deno.test("unsupported and unknown opcodes get ENOSYS", () => {
  using h = initedHarness();
  assert.equal(
    h.call(FuseOpcode.GETXATTR, { size: 0, name: enc.encode("user.x") }).error,
    ENOSYS,
  );
  assert.equal(h.call(FuseOpcode.SYNCFS, {}).error, ENOSYS);
  assert.equal(
    h.call(FuseOpcode.COPY_FILE_RANGE, {
      fhIn: 1n,
      offIn: 0n,
      nodeidOut: 1n,
      fhOut: 1n,
      offOut: 0n,
      len: 1n,
      flags: 0n,
    }).error,
    ENOSYS,
  );
  for (const opcode of [FuseOpcode.IOCTL, FuseOpcode.TMPFILE, 7, 999, 0xffff_ffff]) {
    const request = encodeInHeader({ unique: 77n, nodeid: 1n }, opcode, 40);
    const sent = h.sendRaw(request);
    const header = decodeOutHeader(sent.reply);
    assert.equal(header.error, -ENOSYS, `opcode ${opcode}`);
    assert.equal(header.unique, 77n);
  }
});

Deno.test("malformed requests: short header, len mismatch, bad names; the next request works", () => {
  using h = initedHarness();
  h.fs.names.set("ok", 5n);
  const good = encodeRequest(FuseOpcode.LOOKUP, { unique: 900n, nodeid: 1n }, {
    name: enc.encode("ok"),
  });
  // 20 bytes: unique is there, the rest of the header is not.
  const short = h.sendRaw(good.subarray(0, 20));
  assert.equal(short.used, 16);
  assert.deepEqual(
    { ...decodeOutHeader(short.reply) },
    { len: 16, error: -EINVAL, unique: 900n },
  );
  // Fewer than 16 bytes: still an answer, with unique 0.
  assert.equal(decodeOutHeader(h.sendRaw(good.subarray(0, 6)).reply).error, -EINVAL);
  // len larger than what was sent, and smaller than the header.
  for (const len of [good.length + 1, 39, 0]) {
    const bad = good.slice();
    new DataView(bad.buffer).setUint32(0, len, true);
    assert.equal(decodeOutHeader(h.sendRaw(bad).reply).error, -EINVAL, `len ${len}`);
  }
  // A len beyond the request size limit is refused before anything is copied.
  const huge = good.slice();
  new DataView(huge.buffer).setUint32(0, MAX_REQUEST_BYTES + 1, true);
  assert.equal(decodeOutHeader(h.sendRaw(huge).reply).error, -EINVAL);
  // Names without NUL, with a slash, empty.
  const noNul = good.slice(0, good.length - 1);
  new DataView(noNul.buffer).setUint32(0, noNul.length, true);
  assert.equal(decodeOutHeader(h.sendRaw(noNul).reply).error, -EINVAL);
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: enc.encode("a/b") }).error, EINVAL);
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: new Uint8Array(0) }).error, EINVAL);
  // GETATTR with a short body.
  const getattr = encodeRequest(FuseOpcode.GETATTR, { unique: 5n, nodeid: 1n }, {
    getattrFlags: 0,
    fh: 0n,
  });
  const cut = getattr.slice(0, getattr.length - 4);
  new DataView(cut.buffer).setUint32(0, cut.length, true);
  assert.equal(decodeOutHeader(h.sendRaw(cut).reply).error, -EINVAL);
  // None of that disturbed the session.
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: enc.encode("ok") }).error, 0);
});

Deno.test("a request split across many readable segments is reassembled", () => {
  using h = initedHarness();
  h.fs.names.set("long-name-for-splitting", 6n);
  const { error, payload } = h.call(
    FuseOpcode.LOOKUP,
    { name: enc.encode("long-name-for-splitting") },
    { readable: [1, 7, 13, 2, 30, 5] },
  );
  assert.equal(error, 0);
  assert.equal(decodeEntryOut(payload).nodeid, 6n);
});

Deno.test("a chain marked broken gets EIO; no writable space gets used length 0", () => {
  using h = initedHarness();
  h.fs.names.set("ok", 5n);
  const request = encodeRequest(FuseOpcode.LOOKUP, { unique: 31n, nodeid: 1n }, {
    name: enc.encode("ok"),
  });
  const broken = h.sendRaw(request, [4096], [], "descriptor loop");
  assert.deepEqual({ ...decodeOutHeader(broken.reply) }, { len: 16, error: -EIO, unique: 31n });
  assert.equal(h.sendRaw(request, []).used, 0);
  assert.equal(h.sendRaw(request, [10]).used, 0);
  // A reply that does not fit (entry_out needs 144 bytes) becomes EIO.
  const small = h.sendRaw(request, [40]);
  assert.equal(small.used, 16);
  assert.equal(decodeOutHeader(small.reply).error, -EIO);
});

Deno.test("the reply is written across several writable segments", () => {
  using h = initedHarness();
  h.fs.names.set("f", 8n);
  const { error, payload } = h.call(FuseOpcode.LOOKUP, { name: enc.encode("f") }, {
    writable: [3, 13, 50, 200],
  });
  assert.equal(error, 0);
  assert.equal(decodeEntryOut(payload).nodeid, 8n);
});

Deno.test("errors outside 1..511 and unexpected exceptions become EIO", () => {
  using h = initedHarness();
  for (const thrown of [new FsError(0), new FsError(600), new FsError(-2), new TypeError("bug")]) {
    h.fs.throwNext = thrown;
    assert.equal(h.call(FuseOpcode.GETATTR, { getattrFlags: 0, fh: 0n }).error, EIO);
  }
  h.fs.throwNext = new FsError(EEXIST);
  assert.equal(h.call(FuseOpcode.GETATTR, { getattrFlags: 0, fh: 0n }).error, EEXIST);
});

Deno.test("LOOKUP and UNLINK: short names in place, long names and extensions the general way, alike", () => {
  using h = initedHarness();
  const long = "n".repeat(60); // past the head buffer: the general path
  for (const name of ["a", long]) {
    h.fs.names.set(name, 42n);
    for (const extend of [false, true]) {
      const lookup = encodeRequest(FuseOpcode.LOOKUP, { unique: 92n, nodeid: 3n }, {
        name: enc.encode(name),
      });
      const sent = h.sendRaw(extend ? withExtension(lookup, encodeGroupsExtension([3])) : lookup);
      assert.equal(decodeOutHeader(sent.reply).unique, 92n);
      assert.equal(decodeEntryOut(sent.reply.subarray(16, sent.used)).nodeid, 42n, name);
      assert.deepEqual(h.fs.last("lookup"), [3n, enc.encode(name)]);
      const unlink = encodeRequest(FuseOpcode.UNLINK, { unique: 93n, nodeid: 3n, uid: 5, gid: 6 }, {
        name: enc.encode(name),
      });
      const removed = h.sendRaw(
        extend ? withExtension(unlink, encodeGroupsExtension([3])) : unlink,
      );
      assert.deepEqual(decodeOutHeader(removed.reply), { len: 16, error: 0, unique: 93n });
      assert.deepEqual(h.fs.last("unlink"), [3n, enc.encode(name), {
        uid: 5,
        gid: 6,
        groups: extend ? [3] : undefined,
      }]);
    }
  }
  // A name the decoder refuses is refused on both paths, the core not called.
  const calls = h.fs.calls.length;
  for (const opcode of [FuseOpcode.LOOKUP, FuseOpcode.UNLINK]) {
    const bad = encodeRequest(opcode, { unique: 94n, nodeid: 3n }, { name: enc.encode("x") });
    bad[bad.length - 2] = 0x2f; // "/" instead of "x"
    assert.equal(decodeOutHeader(h.sendRaw(bad).reply).error, -EINVAL);
    assert.equal(
      decodeOutHeader(h.sendRaw(withExtension(bad, encodeGroupsExtension([3]))).reply).error,
      -EINVAL,
    );
  }
  assert.equal(h.fs.calls.length, calls);
  // An unknown name: the core's ENOENT, answered.
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: enc.encode("missing") }).error, ENOENT);
});

Deno.test("FORGET and RELEASE with an extension (the general path) do what the plain ones do", () => {
  using h = initedHarness();
  const forget = encodeRequest(FuseOpcode.FORGET, { unique: 90n, nodeid: 7n }, { nlookup: 2n });
  for (const request of [forget, withExtension(forget, encodeGroupsExtension([3]))]) {
    const calls = h.fs.calls.length;
    assert.equal(h.sendRaw(request).used, 0, "no reply");
    assert.equal(h.fs.calls.length, calls + 1);
    assert.deepEqual(h.fs.last("forget"), [7n, 2n]);
  }
  const args = { flags: 0, releaseFlags: 0, lockOwner: 0n };
  for (const extend of [false, true]) {
    const { fh } = decodeOpenOut(h.call(FuseOpcode.OPEN, { flags: 0, openFlags: 0 }).payload);
    const release = encodeRequest(FuseOpcode.RELEASE, { unique: 91n, nodeid: 2n }, { ...args, fh });
    const sent = h.sendRaw(extend ? withExtension(release, encodeGroupsExtension([3])) : release);
    assert.deepEqual(decodeOutHeader(sent.reply), { len: 16, error: 0, unique: 91n });
    assert.deepEqual(h.fs.last("release"), [fh]);
    assert.ok(!h.fs.handles.has(fh), "closed");
    // Released already: the core's EBADF, answered.
    const again = h.sendRaw(extend ? withExtension(release, encodeGroupsExtension([3])) : release);
    assert.equal(decodeOutHeader(again.reply).error, -EBADF);
  }
});

Deno.test("FORGET, BATCH_FORGET and INTERRUPT are never answered, even when malformed", () => {
  using h = initedHarness();
  const forget = h.send(FuseOpcode.FORGET, { nlookup: 3n }, { nodeid: 9n });
  assert.equal(forget.used, 0);
  assert.ok(forget.reply.every((b) => b === 0xee), "nothing written");
  assert.deepEqual(h.fs.last("forget"), [9n, 3n]);
  const batch = h.send(FuseOpcode.BATCH_FORGET, {
    entries: [{ nodeid: 4n, nlookup: 1n }, { nodeid: 5n, nlookup: 2n }],
  });
  assert.equal(batch.used, 0);
  assert.deepEqual(h.fs.last("batchForget"), [[{ nodeid: 4n, nlookup: 1n }, {
    nodeid: 5n,
    nlookup: 2n,
  }]]);
  assert.equal(h.send(FuseOpcode.INTERRUPT, { unique: 3n }).used, 0);
  // BATCH_FORGET whose count promises more entries than present.
  const bad = encodeRequest(FuseOpcode.BATCH_FORGET, { unique: 1n, nodeid: 0n }, {
    entries: [{ nodeid: 4n, nlookup: 1n }],
  });
  new DataView(bad.buffer).setUint32(40, 1000, true);
  const sent = h.sendRaw(bad);
  assert.equal(sent.used, 0);
  assert.ok(sent.reply.every((b) => b === 0xee));
});

Deno.test("GETATTR passes the fh only with GETATTR_FH; attr_out carries the timeout", () => {
  using h = initedHarness();
  const plain = h.call(FuseOpcode.GETATTR, { getattrFlags: 0, fh: 55n }, { nodeid: 4n });
  assert.deepEqual(h.fs.last("getattr"), [4n, undefined]);
  const out = decodeAttrOut(plain.payload);
  assert.equal(out.attrValid, 0n);
  assert.equal(out.attrValidNsec, 250_000_000);
  assert.equal(out.attr.size, 5n);
  h.call(FuseOpcode.GETATTR, { getattrFlags: FuseGetattrFlag.FH, fh: 55n }, { nodeid: 4n });
  assert.deepEqual(h.fs.last("getattr"), [4n, 55n]);
  // With an extension (the general path): the same call and the same reply.
  const request = encodeRequest(FuseOpcode.GETATTR, { unique: 80n, nodeid: 6n }, {
    getattrFlags: FuseGetattrFlag.FH,
    fh: 56n,
  });
  const extended = h.sendRaw(withExtension(request, encodeGroupsExtension([3])));
  assert.deepEqual(h.fs.last("getattr"), [6n, 56n]);
  assert.equal(decodeOutHeader(extended.reply).unique, 80n);
  assert.deepEqual(
    decodeAttrOut(extended.reply.subarray(16, extended.used)),
    decodeAttrOut(plain.payload),
  );
  // Padded past fuse_getattr_in: refused, the core not called.
  const padded = new Uint8Array(request.length + 8);
  padded.set(request);
  new DataView(padded.buffer).setUint32(0, padded.length, true);
  const calls = h.fs.calls.length;
  assert.equal(decodeOutHeader(h.sendRaw(padded).reply).error, -EINVAL);
  assert.equal(h.fs.calls.length, calls);
});

Deno.test("name operations pass parent, names, mode, umask and the caller's uid/gid", () => {
  using h = initedHarness();
  const mkdir = h.call(FuseOpcode.MKDIR, { mode: 0o755, umask: 0o22, name: enc.encode("d") }, {
    nodeid: 1n,
    uid: 1234,
  });
  assert.equal(mkdir.error, 0);
  assert.deepEqual(h.fs.last("mkdir"), [1n, enc.encode("d"), 0o755, 0o22, 1234, 100, undefined]);
  assert.equal(
    h.call(FuseOpcode.MKDIR, { mode: 0o755, umask: 0, name: enc.encode("d") }).error,
    EEXIST,
  );
  h.call(FuseOpcode.MKNOD, { mode: 0o10644, rdev: 0, umask: 0o2, name: enc.encode("fifo") }, {
    uid: 7,
  });
  assert.deepEqual(h.fs.last("mknod"), [
    1n,
    enc.encode("fifo"),
    0o10644,
    0,
    0o2,
    7,
    100,
    undefined,
  ]);
  h.call(FuseOpcode.SYMLINK, { name: enc.encode("ln"), target: enc.encode("../x/y") }, {
    nodeid: 3n,
  });
  assert.deepEqual(h.fs.last("symlink"), [
    3n,
    enc.encode("ln"),
    enc.encode("../x/y"),
    1000,
    100,
    undefined,
  ]);
  const created = h.call(FuseOpcode.CREATE, {
    flags: 0o102,
    mode: 0o600,
    umask: 0o77,
    openFlags: 0,
    name: enc.encode("new"),
  });
  assert.equal(created.error, 0);
  const { entry: e, open } = decodeCreateOut(created.payload);
  assert.equal(e.nodeid, h.fs.names.get("new"));
  assert.equal(open.fh, 10n);
  assert.equal(open.openFlags, 2);
  assert.deepEqual(h.fs.last("create"), [
    1n,
    enc.encode("new"),
    0o102,
    0o600,
    0o77,
    1000,
    100,
    undefined,
    false,
  ]);
  assert.equal(h.call(FuseOpcode.UNLINK, { name: enc.encode("new") }, { nodeid: 2n }).error, 0);
  const caller = { uid: 1000, gid: 100, groups: undefined };
  assert.deepEqual(h.fs.last("unlink"), [2n, enc.encode("new"), caller]);
  assert.equal(h.call(FuseOpcode.RMDIR, { name: enc.encode("d") }).error, 0);
  assert.deepEqual(h.fs.last("rmdir"), [1n, enc.encode("d"), caller]);
});

/** `request` with `extension` appended and counted in len and total_extlen. */
function withExtension(request: Uint8Array, extension: Uint8Array, extlen = extension.length / 8) {
  const out = new Uint8Array(request.length + extension.length);
  out.set(request);
  out.set(extension, request.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, out.length, true);
  view.setUint16(36, extlen, true);
  return out;
}

Deno.test("a request extension's groups reach the core; a bad extension is EINVAL", () => {
  using h = initedHarness();
  const mkdir = encodeRequest(FuseOpcode.MKDIR, { unique: 70n, nodeid: 1n, uid: 1000, gid: 100 }, {
    mode: 0o755,
    umask: 0,
    name: enc.encode("team"),
  });
  const sent = h.sendRaw(withExtension(mkdir, encodeGroupsExtension([55])));
  assert.equal(decodeOutHeader(sent.reply).error, 0);
  assert.deepEqual(h.fs.last("mkdir"), [1n, enc.encode("team"), 0o755, 0, 1000, 100, [55]]);
  const create = encodeRequest(FuseOpcode.CREATE, { unique: 71n, nodeid: 1n, uid: 7, gid: 8 }, {
    flags: 0o1102,
    mode: 0o644,
    umask: 0,
    openFlags: FuseOpenInFlag.KILL_SUIDGID,
    name: enc.encode("f"),
  });
  assert.equal(
    decodeOutHeader(h.sendRaw(withExtension(create, encodeGroupsExtension([9]))).reply).error,
    0,
  );
  assert.deepEqual(h.fs.last("create"), [1n, enc.encode("f"), 0o1102, 0o644, 0, 7, 8, [9], true]);
  // total_extlen larger than the body, and an extension record of size 0.
  const tooLong = withExtension(mkdir, encodeGroupsExtension([1]), 40);
  assert.equal(decodeOutHeader(h.sendRaw(tooLong).reply).error, -EINVAL);
  const zeroSized = withExtension(mkdir, new Uint8Array(8));
  assert.equal(decodeOutHeader(h.sendRaw(zeroSized).reply).error, -EINVAL);
  // The handler keeps serving.
  assert.equal(
    h.call(FuseOpcode.OPEN, { flags: 0, openFlags: FuseOpenInFlag.KILL_SUIDGID }).error,
    0,
  );
  assert.deepEqual(h.fs.last("open"), [1n, 0, { uid: 1000, gid: 100, groups: undefined }, true]);
});

Deno.test("RENAME has flags 0, RENAME2 passes its flags; LINK is (old node, new parent, name)", () => {
  using h = initedHarness();
  h.call(FuseOpcode.RENAME, {
    newdir: 6n,
    oldname: enc.encode("a"),
    newname: enc.encode("b"),
  }, { nodeid: 5n });
  const caller = { uid: 1000, gid: 100, groups: undefined };
  assert.deepEqual(h.fs.last("rename"), [5n, enc.encode("a"), 6n, enc.encode("b"), 0, caller]);
  h.call(FuseOpcode.RENAME2, {
    newdir: 6n,
    flags: 1,
    oldname: enc.encode("c"),
    newname: enc.encode("d"),
  }, { nodeid: 5n });
  assert.deepEqual(h.fs.last("rename"), [5n, enc.encode("c"), 6n, enc.encode("d"), 1, caller]);
  const link = h.call(FuseOpcode.LINK, { oldnodeid: 9n, name: enc.encode("hard") }, {
    nodeid: 2n,
  });
  assert.equal(decodeEntryOut(link.payload).nodeid, 9n);
  assert.deepEqual(h.fs.last("link"), [9n, 2n, enc.encode("hard"), caller]);
});

Deno.test("the remaining operations reach the core with their arguments", () => {
  using h = initedHarness();
  const setattr = h.call(FuseOpcode.SETATTR, {
    valid: 1,
    fh: 0n,
    size: 0n,
    lockOwner: 0n,
    atime: 0n,
    mtime: 0n,
    ctime: 0n,
    atimensec: 0,
    mtimensec: 0,
    ctimensec: 0,
    mode: 0o600,
    uid: 0,
    gid: 0,
  }, { nodeid: 4n });
  assert.equal(decodeAttrOut(setattr.payload).attr.mode, 0o100600);
  assert.equal((h.fs.last("setattr")[1] as FuseSetattrArgs).mode, 0o600);
  const link = h.call(FuseOpcode.READLINK, {}, { nodeid: 4n });
  assert.equal(new TextDecoder().decode(link.payload), "target/of/link");
  const st = decodeStatfsOut(h.call(FuseOpcode.STATFS, {}).payload);
  assert.equal(st.blocks, 1000n);
  assert.equal(st.bavail, 400n);
  assert.equal(st.namelen, 255);
  const opened = decodeOpenOut(h.call(FuseOpcode.OPEN, { flags: 2, openFlags: 0 }).payload);
  assert.equal(opened.fh, 10n);
  const caller = { uid: 1000, gid: 100, groups: undefined };
  assert.deepEqual(h.fs.last("open"), [1n, 2, caller, false]);
  assert.deepEqual(h.fs.last("setattr")[2], caller);
  const dir = decodeOpenOut(h.call(FuseOpcode.OPENDIR, { flags: 0, openFlags: 0 }).payload);
  assert.equal(dir.fh, 99n);
  h.call(FuseOpcode.FSYNC, { fh: 10n, fsyncFlags: 1 });
  assert.deepEqual(h.fs.last("fsync"), [10n, true]);
  h.call(FuseOpcode.FSYNCDIR, { fh: 99n, fsyncFlags: 0 });
  assert.deepEqual(h.fs.last("fsyncdir"), [99n, false]);
  h.call(FuseOpcode.FLUSH, { fh: 10n, lockOwner: 1n });
  assert.deepEqual(h.fs.last("flush"), [10n]);
  h.call(FuseOpcode.ACCESS, { mask: 4 }, { nodeid: 3n });
  assert.deepEqual(h.fs.last("access"), [3n, 4]);
  h.call(FuseOpcode.FALLOCATE, { fh: 10n, offset: 4096n, length: 8192n, mode: 1 });
  assert.deepEqual(h.fs.last("fallocate"), [10n, 1, 4096n, 8192n]);
  const seek = h.call(FuseOpcode.LSEEK, { fh: 10n, offset: 99n, whence: 3 });
  assert.equal(decodeLseekOut(seek.payload).offset, 100n);
  assert.equal(
    h.call(FuseOpcode.RELEASEDIR, { fh: 99n, flags: 0, releaseFlags: 0, lockOwner: 0n }).error,
    0,
  );
  assert.equal(
    h.call(FuseOpcode.RELEASE, { fh: 10n, flags: 0, releaseFlags: 0, lockOwner: 0n }).error,
    0,
  );
  assert.equal(
    h.call(FuseOpcode.RELEASE, { fh: 10n, flags: 0, releaseFlags: 0, lockOwner: 0n }).error,
    EBADF,
  );
});

Deno.test("READDIR and READDIRPLUS ask for no more than fits the reply", () => {
  using h = initedHarness();
  h.fs.readdirPayload = new Uint8Array(5000).fill(7);
  const plus = h.call(FuseOpcode.READDIRPLUS, {
    fh: 99n,
    offset: 3n,
    size: 4096,
    readFlags: 0,
    lockOwner: 0n,
    flags: 0,
  }, { nodeid: 2n, writable: [16 + 1000] });
  assert.equal(plus.error, 0);
  assert.equal(plus.payload.length, 1000);
  assert.deepEqual(h.fs.last("readdir"), [2n, 99n, 3n, 1000, true]);
  h.call(FuseOpcode.READDIR, {
    fh: 99n,
    offset: 0n,
    size: 512,
    readFlags: 0,
    lockOwner: 0n,
    flags: 0,
  }, { nodeid: 2n, writable: [8192] });
  assert.deepEqual(h.fs.last("readdir"), [2n, 99n, 0n, 512, false]);
});

function writeArgs(fh: bigint, offset: bigint, data: Uint8Array, writeFlags = 0) {
  return { fh, offset, data, writeFlags, lockOwner: 0n, flags: 0 };
}

function readArgs(fh: bigint, offset: bigint, size: number) {
  return { fh, offset, size, readFlags: 0, lockOwner: 0n, flags: 0 };
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 131 + seed * 17 + (i >> 8)) & 0xff;
  return out;
}

Deno.test("WRITE goes from guest buffers to the file, across odd segment splits", () => {
  using h = initedHarness();
  const fh = decodeOpenOut(h.call(FuseOpcode.OPEN, { flags: 2, openFlags: 0 }).payload).fh;
  const fd = h.fs.handles.get(fh)!;
  const data = pattern(300_000, 1);
  // Header split at 30 and 50 bytes; data in uneven pieces.
  const sent = h.call(FuseOpcode.WRITE, writeArgs(fh, 4096n, data, FuseWriteFlag.KILL_SUIDGID), {
    readable: [30, 20, 30, 1, 99_999, 3, 150_000],
    writable: [5, 19],
  });
  assert.equal(sent.error, 0);
  assert.equal(decodeWriteOut(sent.payload).size, data.length);
  const back = new Uint8Array(data.length);
  assert.equal(pread(fd, back, 4096), data.length);
  assert.deepEqual(back, data);
  assert.deepEqual(h.fs.last("write"), [fh, true]);
  // A WRITE bigger than any copied request: the data is never copied into JS.
  const big = pattern(1 << 20, 2);
  const bigSent = h.call(FuseOpcode.WRITE, writeArgs(fh, 0n, big), {
    readable: [80, 1 << 19],
  });
  assert.equal(decodeWriteOut(bigSent.payload).size, big.length);
  const bigBack = new Uint8Array(big.length);
  pread(fd, bigBack, 0);
  assert.deepEqual(bigBack, big);
  // Without KILL_SUIDGID nothing is dropped: the handle's fd (readFd) takes the data directly.
  assert.deepEqual(h.fs.last("readFd"), [fh]);
  assert.equal(h.fs.calls.filter((c) => c.op === "write").length, 1);
});

Deno.test("WRITE with bad lengths, offsets or handles fails cleanly", () => {
  using h = initedHarness();
  const fh = decodeOpenOut(h.call(FuseOpcode.OPEN, { flags: 2, openFlags: 0 }).payload).fh;
  const good = encodeRequest(
    FuseOpcode.WRITE,
    { unique: 1n, nodeid: 2n },
    writeArgs(fh, 0n, pattern(100, 3)),
  );
  // size says 100 but len says 90.
  const lenBad = good.slice(0, 170);
  new DataView(lenBad.buffer).setUint32(0, 170, true);
  assert.equal(decodeOutHeader(h.sendRaw(lenBad).reply).error, -EINVAL);
  // len matches size but the chain is shorter.
  assert.equal(decodeOutHeader(h.sendRaw(good.subarray(0, 150)).reply).error, -EINVAL);
  // Shorter than the 80-byte header.
  assert.equal(decodeOutHeader(h.sendRaw(good.subarray(0, 60)).reply).error, -EINVAL);
  const file = new Uint8Array(1);
  assert.equal(pread(h.fs.handles.get(fh)!, file, 0), 0, "nothing was written");
  assert.equal(h.call(FuseOpcode.WRITE, writeArgs(fh, 1n << 63n, pattern(1, 1))).error, EINVAL);
  assert.equal(h.call(FuseOpcode.WRITE, writeArgs(fh, 1n << 60n, pattern(1, 1))).error, EFBIG);
  // The edge: the last byte would land at 2^53 (or the write starts there, even empty).
  const edge = (1n << 53n) - 1n;
  assert.equal(h.call(FuseOpcode.WRITE, writeArgs(fh, edge, pattern(1, 1))).error, EFBIG);
  assert.equal(h.call(FuseOpcode.WRITE, writeArgs(fh, 1n << 53n, pattern(0, 1))).error, EFBIG);
  assert.equal(
    h.call(FuseOpcode.WRITE, writeArgs(fh, edge - 4095n, pattern(4096, 1))).error,
    EFBIG,
  );
  assert.equal(h.call(FuseOpcode.WRITE, writeArgs(1234n, 0n, pattern(1, 1))).error, EBADF);
  // Zero-length write succeeds without touching the file.
  const zero = h.call(FuseOpcode.WRITE, writeArgs(fh, 0n, new Uint8Array(0)));
  assert.equal(zero.error, 0);
  assert.equal(decodeWriteOut(zero.payload).size, 0);
});

Deno.test("READ goes from the file into the guest buffers after the header, short at EOF", () => {
  using h = initedHarness();
  const observer = new RecordingObserver();
  h.memory.writeObserver = observer;
  const fh = decodeOpenOut(h.call(FuseOpcode.OPEN, { flags: 0, openFlags: 0 }).payload).fh;
  const fd = h.fs.handles.get(fh)!;
  const data = pattern(200_000, 4);
  pwrite(fd, data, 0);
  // The out header itself is split over the first two segments.
  const read = h.call(FuseOpcode.READ, readArgs(fh, 1000n, 100_000), {
    writable: [7, 9, 3, 60_000, 39_997, 5000],
  });
  assert.equal(read.error, 0);
  assert.deepEqual(read.payload, data.subarray(1000, 101_000));
  assert.ok(observer.ranges.length > 0, "guest writes were reported for dirty logging");
  const logged = observer.ranges.reduce((sum, [, len]) => sum + len, 0);
  assert.ok(logged >= 100_016, `logged ${logged} bytes`);
  // At the end of the file: what is left.
  const tail = h.call(FuseOpcode.READ, readArgs(fh, 199_990n, 4096));
  assert.deepEqual(tail.payload, data.subarray(199_990));
  // Past the end, and far past it.
  assert.equal(h.call(FuseOpcode.READ, readArgs(fh, 300_000n, 4096)).payload.length, 0);
  assert.equal(h.call(FuseOpcode.READ, readArgs(fh, 1n << 60n, 4096)).payload.length, 0);
  assert.equal(h.call(FuseOpcode.READ, readArgs(fh, 1n << 63n, 4096)).error, EINVAL);
  // Less room than asked for: what fits.
  const fit = h.call(FuseOpcode.READ, readArgs(fh, 0n, 4096), { writable: [16 + 100] });
  assert.deepEqual(fit.payload, data.subarray(0, 100));
  // No room for even the header: nothing written, no exception.
  assert.equal(h.send(FuseOpcode.READ, readArgs(fh, 0n, 10), { writable: [8] }).used, 0);
  assert.equal(h.call(FuseOpcode.READ, readArgs(77n, 0n, 10)).error, EBADF);
});

Deno.test("a READ of another shape (an extension, a wrong length, split segments) gets the same answers", () => {
  using h = initedHarness();
  const fh = decodeOpenOut(h.call(FuseOpcode.OPEN, { flags: 0, openFlags: 0 }).payload).fh;
  const data = pattern(10_000, 9);
  pwrite(h.fs.handles.get(fh)!, data, 0);
  const read = (offset: bigint, unique: bigint) =>
    encodeRequest(
      FuseOpcode.READ,
      { unique, nodeid: 1n, uid: 1000, gid: 100 },
      readArgs(fh, offset, 100),
    );
  const answer = (sent: { used: number; reply: Uint8Array }) => {
    const header = decodeOutHeader(sent.reply);
    return { error: header.error, unique: header.unique, payload: sent.reply.slice(16, sent.used) };
  };
  // With a groups extension: the data all the same, and the edges of the offset range.
  const cases: [bigint, number, number][] = [
    [1000n, 0, 100],
    [1n << 60n, 0, 0],
    [1n << 63n, -EINVAL, 0],
  ];
  for (const [offset, error, bytes] of cases) {
    const got = answer(h.sendRaw(withExtension(read(offset, 90n), encodeGroupsExtension([5]))));
    assert.equal(got.error, error, `offset ${offset}`);
    assert.equal(got.unique, 90n);
    assert.equal(got.payload.length, bytes);
  }
  const extended = answer(h.sendRaw(withExtension(read(1000n, 91n), encodeGroupsExtension([5]))));
  assert.deepEqual(extended.payload, data.subarray(1000, 1100));
  // Split into three readable pieces: read across them, the same reply.
  const split = answer(h.sendRaw(read(2000n, 92n), [4096], [7, 50]));
  assert.deepEqual(split.payload, data.subarray(2000, 2100));
  // Cut short or padded: fuse_read_in's length is checked, the request fails alone.
  const short = read(0n, 93n).slice(0, 79);
  new DataView(short.buffer).setUint32(0, 79, true);
  assert.equal(answer(h.sendRaw(short)).error, -EINVAL);
  const long = new Uint8Array(81);
  long.set(read(0n, 94n));
  new DataView(long.buffer).setUint32(0, 81, true);
  assert.equal(answer(h.sendRaw(long)).error, -EINVAL);
  assert.deepEqual(answer(h.sendRaw(read(3000n, 95n))).payload, data.subarray(3000, 3100));
});

const SESSION = { initialized: true, minor: 36, flags: FuseInitFlag.ASYNC_READ, flags2: 0 };

Deno.test("snapshot: the session and the core's snapshot, nothing changed", () => {
  using h = initedHarness();
  h.fs.snapshotValue = { inodes: [{ nodeid: "5" }] };
  const snap = h.handler.command({ op: "snapshot" }) as Record<string, unknown>;
  assert.deepEqual(snap, {
    session: {
      initialized: true,
      minor: 37,
      flags: FuseInitFlag.ASYNC_READ | FuseInitFlag.DO_READDIRPLUS | FuseInitFlag.INIT_EXT,
      flags2: 0,
    },
    fs: { inodes: [{ nodeid: "5" }] },
  });
  assert.equal(h.created.length, 1);
  assert.equal(h.fs.destroyed, 0);
  // The snapshot survives structured cloning (it crosses the Worker boundary).
  assert.deepEqual(structuredClone(snap), snap);
});

Deno.test("restore: a fresh core restores and is swapped in; the session needs no INIT", () => {
  using h = new Harness();
  const old = h.fs;
  h.configure = (fs) => fs.names.set("moved", 44n);
  const result = h.handler.command({ op: "restore", state: { session: SESSION, fs: { a: 1 } } });
  assert.deepEqual(result, { errors: [] });
  assert.equal(h.created.length, 2);
  assert.deepEqual(h.fs.last("restore"), [{ a: 1 }]);
  assert.equal(old.closed, 1, "the old core released its inodes and fds");
  assert.deepEqual({ ...h.handler.session }, SESSION);
  const found = h.call(FuseOpcode.LOOKUP, { name: enc.encode("moved") });
  assert.equal(found.error, 0);
  assert.equal(decodeEntryOut(found.payload).nodeid, 44n);
});

Deno.test("restore in abort mode: problems or an exception keep the old core and throw", () => {
  using h = initedHarness();
  const old = h.fs;
  old.names.set("still-here", 3n);
  h.configure = (fs) => fs.restoreResult = { errors: ["inode 7: a/b: ENOENT"] };
  assert.throws(
    () => h.handler.command({ op: "restore", state: { session: SESSION, fs: {} } }),
    /inode 7: a\/b: ENOENT/,
  );
  h.configure = (fs) => fs.restoreThrows = new Error("handle 3: file is gone");
  assert.throws(
    () => h.handler.command({ op: "restore", state: { session: SESSION, fs: {} } }),
    /handle 3: file is gone/,
  );
  assert.equal(h.created.length, 3);
  assert.equal(h.created[1].closed, 1, "the failed fresh cores were released");
  assert.equal(h.created[2].closed, 1);
  assert.equal(old.closed, 0);
  assert.equal(h.handler.session.minor, 37, "the session is unchanged");
  assert.equal(h.call(FuseOpcode.LOOKUP, { name: enc.encode("still-here") }).error, 0);
});

Deno.test("restore in guest-error mode accepts problems and reports them", () => {
  using h = new Harness({ migrationOnError: "guest-error" });
  h.configure = (fs) => fs.restoreResult = { errors: ["handle 3: file is gone"] };
  const result = h.handler.command({ op: "restore", state: { session: SESSION, fs: {} } });
  assert.deepEqual(result, { errors: ["handle 3: file is gone"] });
  assert.equal(h.created.length, 2);
  assert.equal(h.handler.session.initialized, true);
  assert.equal(h.fs.options.migrationOnError, "guest-error");
});

Deno.test("malformed commands and states are refused without touching the core", () => {
  using h = initedHarness();
  for (
    const bad of [
      undefined,
      "snapshot",
      { op: "explode" },
      { op: "restore" },
      { op: "restore", state: { session: SESSION } },
      { op: "restore", state: { session: { ...SESSION, minor: -1 }, fs: {} } },
      { op: "restore", state: { session: { ...SESSION, initialized: "yes" }, fs: {} } },
      { op: "restore", state: { session: SESSION, fs: [] } },
    ]
  ) {
    assert.throws(() => h.handler.command(bad), Error, JSON.stringify(bad));
  }
  assert.equal(h.created.length, 1);
});

Deno.test("replies assembled in the reused buffer carry exactly their own bytes, in turn", () => {
  using h = initedHarness();
  const expectReply = (sent: Sent & { unique: bigint }, body: Uint8Array) => {
    const len = 16 + body.byteLength;
    assert.equal(sent.used, len);
    assert.deepEqual(splitReply(sent.reply.subarray(0, len)).header, {
      len,
      error: 0,
      unique: sent.unique,
    });
    assert.deepEqual([...sent.reply.subarray(16, len)], [...body], "the body, byte for byte");
    assert.ok(sent.reply.subarray(len).every((b) => b === 0xee), "nothing written past the reply");
  };
  // Largest first: a long CREATE reply, then shorter ones that must not show its tail.
  const created = h.send(FuseOpcode.CREATE, {
    flags: 0o2,
    mode: 0o644,
    umask: 0,
    openFlags: 0,
    name: enc.encode("a-rather-long-name-for-the-reused-request-buffer"),
  });
  const createdEntry = entry(h.fs.names.get("a-rather-long-name-for-the-reused-request-buffer")!);
  expectReply(
    created,
    encodeCreateOut(entryOut(createdEntry), { fh: h.fs.nextFh - 1n, openFlags: 2 }),
  );
  h.fs.names.set("b", 9n);
  const looked = h.send(FuseOpcode.LOOKUP, { name: enc.encode("b") });
  assert.deepEqual(h.fs.last("lookup"), [1n, enc.encode("b")], "the short name alone");
  expectReply(looked, encodeEntryOut(entryOut(entry(9n))));
  const attr = h.send(FuseOpcode.GETATTR, { getattrFlags: 0, fh: 0n });
  expectReply(attr, encodeAttrOut({ attrValid: 0, attrValidNsec: 250_000_000, attr: ATTR }));
  expectReply(h.send(FuseOpcode.UNLINK, { name: enc.encode("b") }), new Uint8Array(0));
  const failed = h.send(FuseOpcode.LOOKUP, { name: enc.encode("missing") });
  assert.equal(failed.used, 16);
  assert.ok(failed.reply.subarray(16).every((b) => b === 0xee));
});

Deno.test("only the request queues are waited on: the high-priority queue's requests get no reply", () => {
  using h = new Harness();
  assert.equal(h.handler.driverWaits(0), false);
  assert.equal(h.handler.driverWaits(1), true);
  assert.equal(h.handler.driverWaits(4), true);
});
