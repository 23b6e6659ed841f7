/**
 * virtio-fs, data half: turns one descriptor chain (a FUSE request in the
 * device-readable part, room for the reply in the device-writable part)
 * into one call of the filesystem core. Runs inside the single queue Worker
 * (see fs_device.ts), which also holds the core's inode and handle tables.
 * This module frames and checks the request, keeps the FUSE session (INIT,
 * DESTROY), moves READ and WRITE data and writes the reply; which core
 * method answers which opcode is core_dispatch.ts, and what it knows of a
 * request before decoding it (opcodes served, limits, the offsets of the
 * fields it reads in place) request_shape.ts.
 *
 * Bulk data never passes through JS memory: WRITE is a pwritev straight
 * from the guest buffers after its 80-byte header, READ a preadv straight
 * into the guest buffers after the 16-byte reply header. Everything else is
 * copied (requests are small), decoded by the FUSE codecs, and answered
 * with `-errno` when it fails. Guest data never makes this module throw.
 *
 * With the io_uring engine, READ, WRITE and FSYNC complete later
 * (deferred_file_io.ts): the Worker goes on with the other requests of every
 * queue while they are in the kernel. A handle with I/O in flight stays open
 * until that I/O completed (its RELEASE closes it afterwards), and DESTROY
 * or a new INIT, which close every handle, wait for all of it: an fd number
 * is never closed, and so never reused for another file, under an
 * operation that still has to reach the kernel. Everything else runs at
 * once, in order.
 *
 * @module
 */

import {
  E2BIG,
  EFBIG,
  EINVAL,
  EIO,
  ENOSYS,
  EPOLLIN,
  EPROTO,
  SyscallError,
} from "../../../ffi/mod.ts";
import type { FileIoEngine, FileIoEngineKind } from "../../io/file_io_engine.ts";
import { openFileIoEngine } from "../../io/open_engine.ts";
import { GuestBufferError, GuestFileIo } from "../guest_file_io.ts";
import { DeferredFileIo } from "./deferred_file_io.ts";
import { RequestScratch } from "./request_scratch.ts";
import { RequestFailureLog } from "../request_failure_log.ts";
import { log } from "../../log.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { DescriptorChain, Segment } from "../../virtqueue/descriptor_chain.ts";
import {
  DEFERRED,
  type HandleResult,
  type QueueContext,
  type QueueHandler,
  type WorkerSetup,
} from "../device.ts";
import type { FsWorkerParams } from "./fs_device.ts";
import {
  callCore,
  EMPTY,
  type FileSystem,
  type FileSystemFactory,
  getattrReply,
  lookupReply,
  NO_REPLY,
  type ReplyBody,
} from "./core_dispatch.ts";
import {
  closesEveryHandle,
  FORGET_IN_NLOOKUP,
  FORGET_REQUEST_SIZE,
  GETATTR_IN_FH,
  GETATTR_IN_FLAGS,
  GETATTR_REQUEST_SIZE,
  hasNoReply,
  IN_HEADER,
  isPlain,
  MAX_REQUEST_BYTES,
  MAX_SETXATTR_REQUEST_BYTES,
  OFF_T_LIMIT_HIGH,
  PAST_END_HIGH,
  READ_IN_FH,
  READ_IN_OFFSET,
  READ_IN_SIZE,
  READ_REQUEST_SIZE,
  RELEASE_IN_FH,
  RELEASE_REQUEST_SIZE,
  SUPPORTED_OPCODES,
  WRITE_HEADER_SIZE,
  WRITE_IN_FH,
  WRITE_IN_OFFSET,
  WRITE_IN_SIZE,
  WRITE_IN_WRITE_FLAGS,
  XATTR_OPCODES,
} from "./request_shape.ts";
import {
  decodeFsWorkerCommand,
  type FsRestoreResult,
  type FuseSessionState,
  type MigrationOnError,
} from "./fs_state.ts";
import {
  decodeArgs,
  encodeInitOut,
  FUSE_IN_HEADER,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MAX_ERRNO,
  FUSE_OUT_HEADER,
  FUSE_WRITE_OUT,
  type FuseDecodeOptions,
  FuseFsyncFlag,
  type FuseInitArgs,
  FuseInitFlag,
  FuseInitFlag2,
  FuseOpcode,
  FuseProtocolError,
  type FuseRequestArgs,
  type FuseRequestExtensions,
  FuseWriteFlag,
  opcodeName,
  requestBody,
  splitExtensions,
  wellFormedLastName,
  writeOutHeader,
} from "./fuse/mod.ts";
import {
  type Caller,
  FsError,
  type FsOptions,
  type FsSnapshot,
  PassthroughFs,
  xattrServed,
} from "./passthrough/mod.ts";
import { HIPRIO_QUEUE } from "./fs_spec.ts";

/** Opens a file I/O engine of `kind` with room for `entries` operations; tests substitute their own. */
export type FsEngineOpener = (kind: FileIoEngineKind, entries: number) => FileIoEngine;

/** How the handler moves file data. */
export interface FsIoOptions {
  /** Engine of READ/WRITE/FSYNC once attached to a Worker; default "sync" (all at once). */
  aio?: FileIoEngineKind;
  /** Opens the engine in `attach` (default: openFileIoEngine). */
  openEngine?: FsEngineOpener;
}

/** Operations the io_uring engine holds in the kernel at once (more wait in its queue). */
const ENGINE_ENTRIES = 1024;

/** Replies up to this size are assembled in the reused reply buffer; longer ones get their own. */
const REPLY_SCRATCH_BYTES = 64 * 1024 + FUSE_OUT_HEADER.size;
/** Background requests the guest may queue (u16), and when it should consider us congested. */
const MAX_BACKGROUND = 64;
const CONGESTION_THRESHOLD = 48;
/** iovec entries per preadv/pwritev; longer chains take several calls. */
const IOV_CAPACITY = 1024;

/** A request that fails with `errno`; `reason` goes to the log when given. */
class RequestFailure extends Error {
  constructor(readonly errno: number, readonly reason?: string) {
    super(reason ?? `errno ${errno}`);
  }
}

/** The extensions of a request that has none (shared: nothing writes to it). */
const NO_EXTENSIONS: Readonly<FuseRequestExtensions> = Object.freeze({});

/**
 * The fuse_out_header of a success (error 0) of `len` bytes, `len` at least
 * the header's 16 and below 2^32: what writeOutHeader writes, without the
 * object and the checks a computed success length never needs.
 */
function putSuccessHeader(view: DataView, len: number, unique: bigint): void {
  view.setUint32(0, len, true);
  view.setInt32(4, 0, true);
  view.setBigUint64(8, unique, true);
}

/** Copies `part` to `at` in `reply` unless it was encoded in place there (see core_dispatch.ts). */
function placePart(reply: Uint8Array, part: Uint8Array, at: number): void {
  if (part.buffer !== reply.buffer || part.byteOffset !== reply.byteOffset + at) {
    reply.set(part, at);
  }
}

/** Handles virtio-fs requests for the queue Worker. */
export class FsRequestHandler implements QueueHandler {
  readonly #open: FileSystemFactory;
  readonly #options: FsOptions;
  readonly #xattrServed: boolean;
  readonly #io = new GuestFileIo(IOV_CAPACITY);
  /**
   * The first bytes of every request: in header, plus fuse_write_in for
   * WRITE; a request that fits is decoded from here (the same rule as for
   * `#request`: no view of it outlives its request).
   */
  readonly #head = new Uint8Array(WRITE_HEADER_SIZE);
  readonly #headView = new DataView(this.#head.buffer);
  readonly #outHeader = new Uint8Array(FUSE_OUT_HEADER.size);
  readonly #outHeaderView = new DataView(this.#outHeader.buffer);
  /**
   * The request being decoded (all of it but WRITE's data), and the reply
   * being assembled: reused by every request, because a fresh ArrayBuffer
   * each time was a malloc and a free per request. Nothing may keep a view
   * of either past its request (the core copies the names it keeps).
   */
  readonly #request = new RequestScratch(MAX_REQUEST_BYTES);
  readonly #replyScratch = new RequestScratch(REPLY_SCRATCH_BYTES);
  #fs: FileSystem;
  #session: FuseSessionState = { initialized: false, minor: 0, flags: 0, flags2: 0 };
  /** Names as views: every request is copied out of guest memory (into #request) first. */
  #decodeOptions: FuseDecodeOptions = { namesAsViews: true };
  readonly #failures = new RequestFailureLog();
  readonly #ioOptions: FsIoOptions;
  #context: QueueContext | undefined;
  #engine: FileIoEngine | undefined;
  #deferred: DeferredFileIo | undefined;
  /** Operations in flight per file handle: its fd must stay open until they completed. */
  readonly #pins = new Map<bigint, number>();
  /** Handles RELEASEd while pinned: closed when their last operation completes. */
  readonly #releaseWhenIdle = new Set<bigint>();
  /** DESTROY or INIT requests waiting for every deferred operation to complete. */
  readonly #whenIdle: (() => void)[] = [];

  /** Builds the handler and its filesystem core (throws when the shared directory is unusable). */
  constructor(options: FsOptions, open: FileSystemFactory, io: FsIoOptions = {}) {
    this.#options = options;
    this.#xattrServed = xattrServed(options);
    this.#open = open;
    this.#fs = open(options);
    this.#ioOptions = io;
  }

  /** The engine READ, WRITE and FSYNC go to once attached (undefined: they run at once). */
  get engine(): FileIoEngine | undefined {
    return this.#engine;
  }

  /**
   * With the io_uring engine: opens it (the sync path, with a warning, when
   * that fails here) and watches its completions in the Worker's loop.
   */
  attach(context: QueueContext): void {
    this.#context = context;
    const kind = this.#ioOptions.aio ?? "sync";
    if (kind === "sync") return;
    const open = this.#ioOptions.openEngine ??
      ((k: FileIoEngineKind, entries: number) => openFileIoEngine(k, { entries }));
    let engine: FileIoEngine;
    try {
      engine = open(kind, ENGINE_ENTRIES);
    } catch (e) {
      log.warn(
        `fs queue worker: cannot open the ${kind} engine (${
          e instanceof Error ? e.message : String(e)
        }); READ, WRITE and FSYNC run synchronously`,
      );
      return;
    }
    this.#engine = engine;
    this.#deferred = new DeferredFileIo(engine, IOV_CAPACITY);
    if (engine.completionFd !== undefined) {
      const ready = engine.hasCompletions ? () => engine.hasCompletions!() : undefined;
      context.watchFd(engine.completionFd, EPOLLIN, () => this.#reap(), ready);
    }
  }

  /**
   * Replies reach a waiting driver one by one, as virtiofsd sends them: the
   * guest works on the first while the rest of its batch is served, instead
   * of the two sides taking turns a batch at a time.
   */
  notifiesEachCompletion(): boolean {
    return true;
  }

  /** The high-priority queue's FORGET and INTERRUPT get no reply: nobody waits on it. */
  driverWaits(queueIndex: number): boolean {
    return queueIndex !== HIPRIO_QUEUE;
  }

  /** Hands the operations this round's requests queued to the kernel. */
  submitQueued(): void {
    this.#deferred?.submit();
  }

  /** Stops watching the engine and releases it (the Worker waited for every request). */
  close(): void {
    const engine = this.#engine;
    if (engine === undefined) return;
    if (engine.completionFd !== undefined) this.#context?.unwatchFd(engine.completionFd);
    this.#engine = undefined;
    this.#deferred = undefined;
    engine.close();
  }

  #reap(): void {
    try {
      this.#engine?.reap();
    } finally {
      this.submitQueued();
    }
  }

  /** The FUSE session (for tests and logs). */
  get session(): Readonly<FuseSessionState> {
    return this.#session;
  }

  /** Processes one request; returns the bytes written to the guest, or DEFERRED (READ, WRITE, FSYNC). */
  handle(chain: DescriptorChain, memory: GuestMemory, queueIndex: number): HandleResult {
    let unique = 0n;
    let opcode = 0;
    try {
      const got = chain.readFrom(memory, 0, this.#head);
      // The reply's unique is the only way a log line can be matched to a request.
      if (got >= 16) unique = this.#headView.getBigUint64(8, true);
      if (got >= 8) opcode = this.#headView.getUint32(4, true);
      if (chain.error !== undefined) throw new RequestFailure(EIO, chain.error);
      if (got < FUSE_IN_HEADER.size) {
        throw new FuseProtocolError(`request of ${got} bytes is shorter than fuse_in_header`);
      }
      if (
        !SUPPORTED_OPCODES.has(opcode) || (XATTR_OPCODES.has(opcode) && !this.#xattrServed)
      ) {
        throw new RequestFailure(ENOSYS);
      }
      if (!this.#session.initialized && opcode !== FuseOpcode.INIT && !hasNoReply(opcode)) {
        throw new RequestFailure(EIO, `${opcodeName(opcode)} before INIT`);
      }
      if (opcode === FuseOpcode.WRITE) return this.#write(chain, memory, got, unique, queueIndex);
      // The header's fields this path needs, read where they are (no header object per request).
      const headView = this.#headView;
      const len = headView.getUint32(IN_HEADER.len, true);
      const totalExtlen = headView.getUint16(IN_HEADER.totalExtlen, true);
      if (opcode === FuseOpcode.SETXATTR && len > MAX_SETXATTR_REQUEST_BYTES) {
        throw new RequestFailure(E2BIG);
      }
      if (len > MAX_REQUEST_BYTES && opcode !== FuseOpcode.SETXATTR) {
        throw new FuseProtocolError(`${opcodeName(opcode)} request of ${len} bytes`);
      }
      // READ, most of what a reading guest sends, is read where it lies: no body view, no
      // decoded object, no bigint offset. Any other shape (extensions, a wrong length, a
      // request cut short) takes the general path below, which answers it the same way.
      if (opcode === FuseOpcode.READ && isPlain(len, totalExtlen, got, READ_REQUEST_SIZE)) {
        return this.#read(
          chain,
          memory,
          queueIndex,
          unique,
          headView.getBigUint64(READ_IN_FH, true),
          headView.getUint32(READ_IN_OFFSET, true),
          headView.getUint32(READ_IN_OFFSET + 4, true),
          headView.getUint32(READ_IN_SIZE, true),
        );
      }
      const length = Math.min(len, chain.readableLength());
      // GETATTR, the other request a guest sends most, likewise (see getattrReply).
      if (opcode === FuseOpcode.GETATTR && isPlain(len, totalExtlen, got, GETATTR_REQUEST_SIZE)) {
        const reply = getattrReply(
          this.#fs,
          headView.getBigUint64(IN_HEADER.nodeid, true),
          headView.getUint32(GETATTR_IN_FLAGS, true),
          headView.getBigUint64(GETATTR_IN_FH, true),
          this.#replyScratch.unzeroed(),
        );
        return this.#reply(chain, memory, queueIndex, unique, reply);
      }
      // FORGET and RELEASE, which every file a guest is done with sends, likewise: one
      // number each, no body view, decoded object or caller.
      if (opcode === FuseOpcode.FORGET && isPlain(len, totalExtlen, got, FORGET_REQUEST_SIZE)) {
        const nodeid = headView.getBigUint64(IN_HEADER.nodeid, true);
        this.#fs.forget(nodeid, headView.getBigUint64(FORGET_IN_NLOOKUP, true));
        return 0;
      }
      if (opcode === FuseOpcode.RELEASE && isPlain(len, totalExtlen, got, RELEASE_REQUEST_SIZE)) {
        this.#release(headView.getBigUint64(RELEASE_IN_FH, true));
        return this.#reply(chain, memory, queueIndex, unique, EMPTY);
      }
      // LOOKUP and UNLINK of a name that fits in the head buffer (most names) likewise: the
      // name is a view of it; any other shape, or a name with a fault, goes the general way.
      if (
        (opcode === FuseOpcode.LOOKUP || opcode === FuseOpcode.UNLINK) && totalExtlen === 0 &&
        len === got
      ) {
        const name = wellFormedLastName(this.#head, FUSE_IN_HEADER.size, len);
        if (name !== undefined) {
          const parent = headView.getBigUint64(IN_HEADER.nodeid, true);
          if (opcode === FuseOpcode.LOOKUP) {
            const reply = lookupReply(this.#fs, parent, name, this.#replyScratch.unzeroed());
            return this.#reply(chain, memory, queueIndex, unique, reply);
          }
          this.#fs.unlink(parent, name, this.#caller(undefined));
          return this.#reply(chain, memory, queueIndex, unique, EMPTY);
        }
      }
      // Most requests fit in the bytes read already: decoded from there, not copied again.
      let body: Uint8Array;
      if (length <= got) {
        body = requestBody(len, this.#head, length);
      } else {
        const bytes = this.#request.zeroed(length);
        chain.readFrom(memory, 0, bytes);
        body = requestBody(len, bytes);
      }
      // Most requests carry no extension: no split and no extension object to make for them.
      let args = body;
      let extensions: Readonly<FuseRequestExtensions> = NO_EXTENSIONS;
      if (totalExtlen !== 0) {
        ({ args, extensions } = splitExtensions(body, totalExtlen));
      }
      const request = decodeArgs(opcode, args, this.#decodeOptions);
      if (request.opcode === FuseOpcode.READ) {
        const { fh, offset, size } = request.args;
        return this.#read(
          chain,
          memory,
          queueIndex,
          unique,
          fh,
          Number(offset & 0xffff_ffffn),
          Number(offset >> 32n),
          size,
        );
      }
      // The guest process the request is made for: operations that create or
      // change names, modes or contents run with its ids (when vhostd is root).
      const caller = this.#caller(extensions.groups);
      const nodeid = headView.getBigUint64(IN_HEADER.nodeid, true);
      if (request.opcode === FuseOpcode.FSYNC && this.#deferred !== undefined) {
        const { fh, fsyncFlags } = request.args;
        const fd = this.#fs.readFd(fh);
        this.#pin(fh);
        this.#deferred.fsync(fd, (fsyncFlags & FuseFsyncFlag.FDATASYNC) !== 0, (result) => {
          this.#completeLater(chain, memory, queueIndex, unique, fh, result, () => EMPTY);
        });
        return DEFERRED;
      }
      if (this.#pins.size > 0 && closesEveryHandle(request.opcode)) {
        // Every handle is about to close: not under an operation still in flight.
        // INIT's and DESTROY's arguments are numbers; the body is copied out of the scratch anyway.
        const kept = body.slice();
        this.#whenIdle.push(() => {
          this.#context!.complete(
            queueIndex,
            chain,
            this.#answer(
              chain,
              memory,
              queueIndex,
              unique,
              opcode,
              request,
              nodeid,
              caller,
              kept,
            ),
          );
        });
        return DEFERRED;
      }
      if (request.opcode === FuseOpcode.RELEASE) {
        this.#release(request.args.fh);
        return this.#reply(chain, memory, queueIndex, unique, EMPTY);
      }
      return this.#answer(
        chain,
        memory,
        queueIndex,
        unique,
        opcode,
        request,
        nodeid,
        caller,
        body,
      );
    } catch (e) {
      const errno = this.#errnoOf(e, queueIndex, chain, opcode);
      if (hasNoReply(opcode)) return 0;
      return this.#replyError(chain, memory, queueIndex, unique, errno);
    }
  }

  /** Runs a decoded request other than READ/WRITE through the core and writes its reply. */
  #answer(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    unique: bigint,
    opcode: number,
    request: FuseRequestArgs,
    nodeid: bigint,
    caller: Caller,
    body: Uint8Array,
  ): number {
    try {
      const reply = this.#callCore(request, nodeid, caller, chain, body);
      if (reply === NO_REPLY) return 0;
      return this.#reply(chain, memory, queueIndex, unique, reply);
    } catch (e) {
      const errno = this.#errnoOf(e, queueIndex, chain, opcode);
      if (hasNoReply(opcode)) return 0;
      return this.#replyError(chain, memory, queueIndex, unique, errno);
    }
  }

  /** The guest process the request in the head buffer is made for, with `groups` (FUSE_CREATE_SUPP_GROUP). */
  #caller(groups: readonly number[] | undefined): Caller {
    const head = this.#headView;
    return {
      uid: head.getUint32(IN_HEADER.uid, true),
      gid: head.getUint32(IN_HEADER.gid, true),
      groups,
    };
  }

  /** RELEASE of `fh`: at once, or once the I/O in flight on it completed. */
  #release(fh: bigint): void {
    if (this.#pins.has(fh)) this.#releaseWhenIdle.add(fh);
    else this.#fs.release(fh);
  }

  #pin(fh: bigint): void {
    this.#pins.set(fh, (this.#pins.get(fh) ?? 0) + 1);
  }

  /** An operation on `fh` completed: a RELEASE, DESTROY or INIT waiting for it may run now. */
  #unpin(fh: bigint): void {
    const left = (this.#pins.get(fh) ?? 1) - 1;
    if (left > 0) {
      this.#pins.set(fh, left);
      return;
    }
    this.#pins.delete(fh);
    if (this.#releaseWhenIdle.delete(fh)) this.#fs.release(fh);
    if (this.#pins.size === 0) { for (const run of this.#whenIdle.splice(0)) run(); }
  }

  /**
   * Completes a deferred request on `fh` with the engine's `result`: the
   * reply `body(result)` builds for a success, `-errno` for a failure; never throws.
   */
  #completeLater(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    unique: bigint,
    fh: bigint,
    result: number,
    body: (result: number) => Uint8Array | readonly Uint8Array[] | number,
  ): void {
    let written: number;
    try {
      if (result < 0) {
        written = this.#replyError(chain, memory, queueIndex, unique, -result);
      } else {
        const reply = body(result);
        written = typeof reply === "number"
          ? reply
          : this.#reply(chain, memory, queueIndex, unique, reply);
      }
    } catch (e) {
      const errno = this.#errnoOf(e, queueIndex, chain, FuseOpcode.READ);
      written = this.#replyError(chain, memory, queueIndex, unique, errno);
    }
    try {
      this.#unpin(fh);
    } finally {
      this.#context!.complete(queueIndex, chain, written);
    }
  }

  /** Answers a command from the control half (DEVICE_STATE save/load). */
  command(request: unknown): unknown {
    const cmd = decodeFsWorkerCommand(request);
    switch (cmd.op) {
      case "snapshot":
        return { session: { ...this.#session }, fs: { ...this.#fs.snapshot() } };
      case "restore":
        return this.#restore(cmd.state.session, cmd.state.fs);
    }
  }

  /** Restores into a fresh core and swaps it in; the old one stays when that fails. */
  #restore(session: FuseSessionState, snapshot: Record<string, unknown>): FsRestoreResult {
    // The core checks the snapshot's contents itself (and throws for a malformed one).
    const fresh = this.#open(this.#options);
    let result: { errors: string[] };
    try {
      result = fresh.restore(snapshot as unknown as FsSnapshot);
    } catch (e) {
      FsRequestHandler.#dispose(fresh);
      throw new Error(`fs restore failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    const errors = Array.isArray(result?.errors) ? result.errors.map(String) : [];
    const mode: MigrationOnError = this.#options.migrationOnError;
    if (errors.length > 0 && mode === "abort") {
      FsRequestHandler.#dispose(fresh);
      throw new Error(
        `fs restore failed: ${errors.length} problem(s), first: ${errors[0]}`,
      );
    }
    for (const error of errors) {
      log.warn(`fs restore: ${error} (the guest gets EIO for it)`);
    }
    FsRequestHandler.#dispose(this.#fs);
    this.#fs = fresh;
    this.#setSession(session);
    return { errors };
  }

  static #dispose(fs: FileSystem): void {
    try {
      fs.close();
    } catch (e) {
      log.warn(`fs: releasing a filesystem core failed: ${e instanceof Error ? e.message : e}`);
    }
  }

  #setSession(session: FuseSessionState): void {
    this.#session = { ...session };
    this.#decodeOptions = {
      namesAsViews: true,
      setxattrExt: (session.flags & FuseInitFlag.SETXATTR_EXT) !== 0,
      securityContext: (session.flags & FuseInitFlag.INIT_EXT) !== 0 &&
        (session.flags2 & FuseInitFlag2.SECURITY_CTX) !== 0,
    };
  }

  /** INIT and DESTROY change the session here; every other opcode goes to the core (core_dispatch.ts). */
  #callCore(
    request: FuseRequestArgs,
    nodeid: bigint,
    caller: Caller,
    chain: DescriptorChain,
    body: Uint8Array,
  ): ReplyBody {
    if (request.opcode === FuseOpcode.INIT) return this.#init(request.args);
    if (request.opcode === FuseOpcode.DESTROY) {
      this.#fs.destroy();
      this.#setSession({ initialized: false, minor: 0, flags: 0, flags2: 0 });
      return EMPTY;
    }
    // Payloads that grow with the request (READDIR) are capped by the room for them.
    const room = Math.max(0, chain.writableLength() - FUSE_OUT_HEADER.size);
    return callCore(this.#fs, request, nodeid, caller, body, this.#replyScratch.unzeroed(), room);
  }

  /** INIT: major 7 only; a newer major gets our version so the guest can retry with it. */
  #init(args: FuseInitArgs): Uint8Array {
    if (args.major < FUSE_KERNEL_VERSION) {
      throw new RequestFailure(EPROTO, `guest speaks FUSE ${args.major}.${args.minor}`);
    }
    const base = {
      maxBackground: 0,
      congestionThreshold: 0,
      maxReadahead: 0,
      flags: 0,
      maxWrite: 0,
      timeGran: 0,
      maxPages: 0,
      mapAlignment: 0,
      flags2: 0,
    };
    if (args.major > FUSE_KERNEL_VERSION) {
      return encodeInitOut({ ...base, minor: FUSE_KERNEL_MINOR_VERSION });
    }
    // A second INIT without DESTROY: a new guest driver, a new session.
    if (this.#session.initialized) this.#fs.destroy();
    const accepted = this.#fs.init(args);
    let flags = accepted.flags >>> 0;
    // flags2 is only read with INIT_EXT, which the guest must have offered.
    if (args.flags & FuseInitFlag.INIT_EXT) flags = (flags | FuseInitFlag.INIT_EXT) >>> 0;
    else flags = (flags & ~FuseInitFlag.INIT_EXT) >>> 0;
    const flags2 = (flags & FuseInitFlag.INIT_EXT) ? accepted.flags2 >>> 0 : 0;
    const reply = encodeInitOut({
      ...base,
      minor: accepted.minor,
      maxReadahead: accepted.maxReadahead,
      flags,
      maxBackground: MAX_BACKGROUND,
      congestionThreshold: CONGESTION_THRESHOLD,
      maxWrite: accepted.maxWrite,
      timeGran: accepted.timeGran,
      maxPages: accepted.maxPages,
      flags2,
    });
    this.#setSession({ initialized: true, minor: accepted.minor, flags, flags2 });
    return reply;
  }

  /** READ: preadv from the handle's fd straight into the guest buffers after the out header. */
  #read(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    unique: bigint,
    fh: bigint,
    offsetLow: number,
    offsetHigh: number,
    size: number,
  ): HandleResult {
    const writable = chain.writableLength();
    if (writable < FUSE_OUT_HEADER.size) {
      throw new RequestFailure(EIO, `no room for a reply (${writable} writable bytes)`);
    }
    if (offsetHigh >= OFF_T_LIMIT_HIGH) throw new RequestFailure(EINVAL);
    const fd = this.#fs.readFd(fh);
    const length = Math.min(size, writable - FUSE_OUT_HEADER.size);
    const skip = chain.readableLength() + FUSE_OUT_HEADER.size;
    const pastEnd = offsetHigh >= PAST_END_HIGH;
    const offset = offsetHigh * 0x1_0000_0000 + offsetLow;
    if (
      !pastEnd && this.#deferred !== undefined &&
      this.#deferLater(
        fh,
        () =>
          this.#deferred!.transfer(
            fd,
            chain.segments,
            memory,
            skip,
            length,
            offset,
            false,
            (
              result,
            ) =>
              this.#completeLater(chain, memory, queueIndex, unique, fh, result, (count) => {
                const len = FUSE_OUT_HEADER.size + count;
                putSuccessHeader(this.#outHeaderView, len, unique);
                chain.writeTo(memory, 0, this.#outHeader);
                return len;
              }),
          ),
      )
    ) {
      return DEFERRED;
    }
    // Past 2^53 nothing is stored on any host file system vhostd shares: end of file.
    const count = pastEnd ? 0 : this.#transfer(
      fd,
      chain.segments, // one byte stream, readable part first: skip it and the out header
      memory,
      skip,
      length,
      offset,
      false,
    );
    const len = FUSE_OUT_HEADER.size + count;
    putSuccessHeader(this.#outHeaderView, len, unique);
    chain.writeTo(memory, 0, this.#outHeader);
    return len;
  }

  /** WRITE: pwritev straight from the guest buffers after the 80-byte header. */
  #write(
    chain: DescriptorChain,
    memory: GuestMemory,
    got: number,
    unique: bigint,
    queueIndex: number,
  ): HandleResult {
    if (got < WRITE_HEADER_SIZE) {
      throw new FuseProtocolError(`WRITE of ${got} bytes is shorter than its header`);
    }
    // fuse_write_in's fields read where they lie (no decoded object, no bigint offset).
    const headView = this.#headView;
    const len = headView.getUint32(IN_HEADER.len, true);
    const fh = headView.getBigUint64(WRITE_IN_FH, true);
    const offsetLow = headView.getUint32(WRITE_IN_OFFSET, true);
    const offsetHigh = headView.getUint32(WRITE_IN_OFFSET + 4, true);
    const size = headView.getUint32(WRITE_IN_SIZE, true);
    const writeFlags = headView.getUint32(WRITE_IN_WRITE_FLAGS, true);
    if (len !== WRITE_HEADER_SIZE + size) {
      throw new FuseProtocolError(
        `WRITE: fuse_in_header.len ${len} does not match fuse_write_in.size ${size}`,
      );
    }
    if (len > chain.readableLength()) {
      throw new FuseProtocolError(
        `WRITE: fuse_in_header.len ${len} exceeds the ${chain.readableLength()} bytes sent`,
      );
    }
    if (offsetHigh >= OFF_T_LIMIT_HIGH) throw new RequestFailure(EINVAL);
    // Exact below 2^53; from there up the sum cannot round back under the limit.
    const offset = offsetHigh * 0x1_0000_0000 + offsetLow;
    if (offsetHigh >= PAST_END_HIGH || offset + size > Number.MAX_SAFE_INTEGER) {
      throw new RequestFailure(EFBIG);
    }
    const fd = this.#fs.readFd(fh);
    if (chain.writableLength() < FUSE_OUT_HEADER.size + 8) {
      throw new RequestFailure(EIO, "no room for the WRITE reply");
    }
    const killSuidgid = (writeFlags & FuseWriteFlag.KILL_SUIDGID) !== 0;
    // A write that must clear setuid/setgid runs at once: the core drops CAP_FSETID around it.
    if (!killSuidgid && this.#deferred !== undefined) {
      const writeFd = this.#fs.asyncWriteFd(fh);
      const written = (result: number) =>
        this.#completeLater(chain, memory, queueIndex, unique, fh, result, (count) => {
          return this.#writeReply(chain, memory, unique, count);
        });
      const queue = (to: number, done: (result: number) => void) =>
        this.#deferred!.transfer(
          to,
          chain.segments,
          memory,
          WRITE_HEADER_SIZE,
          size,
          offset,
          true,
          done,
        );
      // The O_DIRECT descriptor of a FUSE file (direct_writer.ts) refused this write: the
      // server's backing wants aligned direct I/O. Write it, and the rest, buffered.
      const retried = writeFd === fd ? written : (result: number) => {
        if (result !== -EINVAL) return written(result);
        this.#fs.dropDirectWriter(fh);
        let requeued = false;
        try {
          requeued = queue(fd, written);
        } catch {
          // The buffers were good a moment ago; if not now, EINVAL stands.
        }
        if (!requeued) written(result);
      };
      if (this.#deferLater(fh, () => queue(writeFd, retried))) return DEFERRED;
    }
    // len <= readableLength(): the transfer never reaches the writable part.
    const segments = chain.segments;
    // Only a write that drops CAP_FSETID needs the core around it; any other goes
    // straight to the handle's fd found above (no second lookup, no closures).
    const count = killSuidgid
      ? this.#fs.write(
        fh,
        true,
        (to) => this.#transfer(to, segments, memory, WRITE_HEADER_SIZE, size, offset, true),
      )
      : this.#transfer(fd, segments, memory, WRITE_HEADER_SIZE, size, offset, true);
    return this.#writeReply(chain, memory, unique, count);
  }

  /** WRITE's reply: fuse_write_out with the bytes written. */
  #writeReply(chain: DescriptorChain, memory: GuestMemory, unique: bigint, count: number): number {
    // fuse_out_header then fuse_write_out (size, padding), field by field: nothing to
    // check (count <= fuse_write_in.size, a u32), no objects.
    const len = FUSE_OUT_HEADER.size + FUSE_WRITE_OUT.size;
    const reply = this.#replyScratch.unzeroed(len);
    const view = this.#replyScratch.view;
    putSuccessHeader(view, len, unique);
    view.setUint32(FUSE_OUT_HEADER.size, count, true);
    view.setUint32(FUSE_OUT_HEADER.size + 4, 0, true);
    chain.writeTo(memory, 0, reply);
    return len;
  }

  /**
   * With an engine, pins `fh` and runs `queue` (which hands the operation
   * to the engine, or returns false when it must run at once); true when
   * the operation was queued. Guest buffer failures become EIO.
   */
  #deferLater(fh: bigint, queue: () => boolean): boolean {
    if (this.#deferred === undefined) return false;
    let queued: boolean;
    try {
      queued = queue();
    } catch (e) {
      if (e instanceof GuestBufferError) throw new RequestFailure(EIO, e.message);
      throw e;
    }
    if (queued) this.#pin(fh);
    return queued;
  }

  /** GuestFileIo.transfer with its failures as request failures (the request's errno). */
  #transfer(
    fd: number,
    segments: readonly Segment[],
    memory: GuestMemory,
    skip: number,
    length: number,
    fileOffset: number,
    toFile: boolean,
  ): number {
    try {
      return this.#io.transfer(fd, segments, memory, skip, length, fileOffset, toFile);
    } catch (e) {
      if (e instanceof GuestBufferError) throw new RequestFailure(EIO, e.message);
      if (e instanceof SyscallError) throw new RequestFailure(e.errno);
      throw e;
    }
  }

  /** Writes a success reply; one that does not fit the writable space becomes EIO. */
  #reply(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    unique: bigint,
    body: Uint8Array | readonly Uint8Array[],
  ): number {
    let len = FUSE_OUT_HEADER.size;
    if (body instanceof Uint8Array) {
      len += body.byteLength;
    } else {
      for (const part of body) len += part.byteLength;
    }
    const writable = chain.writableLength();
    if (len > writable) {
      this.#warn(
        queueIndex,
        chain,
        `reply of ${len} bytes does not fit the ${writable} writable bytes`,
      );
      return this.#replyError(chain, memory, queueIndex, unique, EIO);
    }
    // Header and parts cover all `len` bytes: nothing of an earlier reply is left in it.
    const reply = this.#replyScratch.unzeroed(len);
    putSuccessHeader(this.#replyScratch.viewOf(reply), len, unique);
    if (body instanceof Uint8Array) {
      placePart(reply, body, FUSE_OUT_HEADER.size);
    } else {
      let at = FUSE_OUT_HEADER.size;
      for (const part of body) {
        placePart(reply, part, at);
        at += part.byteLength;
      }
    }
    return chain.writeTo(memory, 0, reply);
  }

  #replyError(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    unique: bigint,
    errno: number,
  ): number {
    if (chain.writableLength() < FUSE_OUT_HEADER.size) {
      this.#warn(queueIndex, chain, `no room for a reply (errno ${errno})`);
      return 0;
    }
    writeOutHeader({ len: FUSE_OUT_HEADER.size, error: -errno, unique }, this.#outHeaderView);
    return chain.writeTo(memory, 0, this.#outHeader);
  }

  /** The errno for a failure; logs what is not an ordinary file system error. */
  #errnoOf(e: unknown, queueIndex: number, chain: DescriptorChain, opcode: number): number {
    const what = opcodeName(opcode);
    let errno: number;
    if (e instanceof FsError) {
      errno = e.errno;
    } else if (e instanceof RequestFailure) {
      errno = e.errno;
      if (e.reason !== undefined) this.#warn(queueIndex, chain, `${what}: ${e.reason}`);
    } else if (e instanceof FuseProtocolError) {
      errno = e.errno;
      if (errno !== ENOSYS) this.#warn(queueIndex, chain, `${what}: ${e.message}`);
    } else {
      // Not a guest-visible failure: a bug in vhostd. The guest sees EIO; the log says why.
      log.error(
        `queue ${queueIndex}: ${what} request ${chain.head} failed unexpectedly: ${
          e instanceof Error ? e.stack ?? e.message : String(e)
        }`,
      );
      errno = EIO;
    }
    return Number.isInteger(errno) && errno > 0 && errno < FUSE_MAX_ERRNO ? errno : EIO;
  }

  #warn(queueIndex: number, chain: DescriptorChain, reason: string): void {
    this.#failures.warn(queueIndex, chain.head, reason);
  }
}

/** Factory used by the Worker registry: the handler over a PassthroughFs of the shared directory. */
export function createFsRequestHandler(setup: WorkerSetup): QueueHandler {
  const params = setup.params as FsWorkerParams;
  return new FsRequestHandler(
    {
      sharedDir: params.sharedDir,
      readOnly: params.readOnly,
      migrationOnError: params.migrationOnError,
      cache: params.cache,
      ...params.xattrOptions,
      inodeFileHandles: params.inodeFileHandles,
      migrationMode: params.migrationMode,
    },
    (options) => new PassthroughFs(options),
    { aio: params.aio },
  );
}
