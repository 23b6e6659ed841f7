/**
 * A virtio-fs driver in TypeScript: brings a vhost-user-fs back-end up the
 * way a guest and its VMM would (high-priority queue plus request queues),
 * then sends FUSE requests through real split rings in shared memory, the
 * way the guest's virtiofs driver lays them out: the request in
 * device-readable descriptors, room for the reply in device-writable ones.
 *
 * `request()` sends any request and returns the raw answer; one helper per
 * operation (`lookup`, `read`, `write`, ...) encodes its arguments, decodes
 * the reply and throws {@linkcode FsReplyError} for an error reply. `send()`
 * takes raw bytes, for malformed-request tests. Everything is synchronous,
 * one request at a time; waits are bounded.
 *
 * @module
 */

import {
  decodeFsConfig,
  FS_CONFIG_SIZE,
  type FsConfig,
  HIPRIO_QUEUE,
} from "../devices/fs/fs_spec.ts";
import {
  decodeAttrOut,
  decodeCreateOut,
  decodeDirents,
  decodeDirentsPlus,
  decodeEntryOut,
  decodeInitOut,
  decodeLseekOut,
  decodeOpenOut,
  decodeStatfsOut,
  decodeWriteOut,
  encodeRequest,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_OUT_HEADER,
  type FuseArgsInputByOpcode,
  type FuseAttrOutValue,
  type FuseDecodableOpcode,
  type FuseDirentPlusValue,
  type FuseDirentValue,
  type FuseEntryOutValue,
  type FuseForgetOne,
  FuseFsyncFlag,
  FuseGetattrFlag,
  FuseInitFlag,
  type FuseInitOutValue,
  FuseOpcode,
  type FuseOpenOutValue,
  type FuseOutHeaderValue,
  FuseSetattrValid,
  type FuseStatfsValue,
  opcodeName,
  splitReply,
} from "../devices/fs/fuse/mod.ts";
import { bit, hasBit, ProtocolFeature, VirtioFeature } from "../protocol/mod.ts";
import type { Segment } from "../virtqueue/descriptor_chain.ts";
import { DESC_SIZE } from "../virtqueue/layout.ts";
import { splitRange } from "./blk_requests.ts";
import { GuestBufferPool } from "./buffer_pool.ts";
import { DeviceSession, type DeviceSessionOptions } from "./device_session.ts";
import type { DriverRing } from "./driver_ring.ts";
import { BackendTimeout } from "./errors.ts";
import type { SharedGuestMemory } from "./shared_memory.ts";
import type { VhostUserClient } from "./vhost_user_client.ts";

/** Default size of the request buffer pool. */
const DEFAULT_POOL_BYTES = 16 * 2 ** 20;
/** Room for replies whose size does not depend on the request (READLINK: a path). */
const DEFAULT_REPLY_ROOM = 4096;

/** Options of {@linkcode FsDriver.setup}. */
export interface FsDriverOptions {
  /** Request queues to set up besides the high-priority queue. Default 1. */
  numRequestQueues?: number;
  /** Size of each queue (power of two). */
  queueSize: number;
  /** Negotiate VIRTIO_F_RING_EVENT_IDX when offered. Default false. */
  eventIdx?: boolean;
  /** Negotiate VIRTIO_F_RING_INDIRECT_DESC and put every request in an indirect table. Default false. */
  indirect?: boolean;
  /** Protocol features to accept when offered (see DeviceSession). */
  protocolFeatures?: bigint;
  /** Bytes of guest memory for request buffers. Default 16 MiB, or half the free memory if less. */
  bufferPoolBytes?: number;
  /** Limit for each request, in ms. Default: the client's timeout. */
  timeoutMs?: number;
  /** uid and gid put in every request header unless a call says otherwise. Default 0. */
  uid?: number;
  /** See `uid`. */
  gid?: number;
}

/** Where and how one request goes. */
export interface FsSendOptions {
  /** Queue index. Default: the high-priority queue for FORGET/BATCH_FORGET/INTERRUPT, else 1. */
  queue?: number;
  /** Descriptors for the request (the readable part). Default 1. */
  requestSegments?: number;
  /** Descriptors for the reply (the writable part). Default 1. */
  replySegments?: number;
}

/** Header fields and placement of a request built by {@linkcode FsDriver.request}. */
export interface FsRequestOptions extends FsSendOptions {
  /** Node id in the header. Default 1 (the root). */
  nodeid?: bigint;
  /** Caller's uid. Default: the driver's. */
  uid?: number;
  /** Caller's gid. Default: the driver's. */
  gid?: number;
  /** Caller's pid. Default 1. */
  pid?: number;
  /** Writable bytes offered for the reply, header included. Default: what the opcode needs. */
  replySize?: number;
}

/** What the back-end did with a chain. */
export interface FsRawReply {
  /** Used element length: bytes the back-end says it wrote. */
  written: number;
  /** A copy of the first `written` bytes of the writable part (at most its size). */
  bytes: Uint8Array;
}

/** An answered request. */
export interface FsReply {
  /** 0, or the positive errno of an error reply. */
  error: number;
  /** The reply payload after the out header (a copy). */
  payload: Uint8Array;
  /** Used element length. */
  written: number;
  /** The out header (undefined for a request without reply, such as FORGET). */
  header: FuseOutHeaderValue | undefined;
}

/** An error reply: `errno` is the positive error number. */
export class FsReplyError extends Error {
  /** Positive errno. */
  readonly errno: number;
  /** The request's opcode. */
  readonly opcode: number;

  /** Creates the error for `opcode` answered with `-errno`. */
  constructor(opcode: number, errno: number) {
    super(`${opcodeName(opcode)} failed with errno ${errno}`);
    this.name = "FsReplyError";
    this.errno = errno;
    this.opcode = opcode;
  }
}

/** Changes for {@linkcode FsDriver.setattr}; `valid` is computed from what is present. */
export interface FsSetattrChanges {
  /** New permission bits. */
  mode?: number;
  /** New owner. */
  uid?: number;
  /** New group. */
  gid?: number;
  /** New size (truncate / extend). */
  size?: bigint;
  /** New access time, seconds and nanoseconds. */
  atime?: { sec: bigint; nsec: number };
  /** New modification time. */
  mtime?: { sec: bigint; nsec: number };
  /** Apply through this open handle. */
  fh?: bigint;
}

/** A name as a string (UTF-8) or raw bytes. */
export type FsName = string | Uint8Array;

const encoder = new TextEncoder();

function nameBytes(name: FsName): Uint8Array {
  return typeof name === "string" ? encoder.encode(name) : name;
}

/** Reply payload sizes of the fixed-size replies. */
const REPLY_PAYLOAD: Partial<Record<number, number>> = {
  [FuseOpcode.INIT]: 64,
  [FuseOpcode.LOOKUP]: 128,
  [FuseOpcode.MKDIR]: 128,
  [FuseOpcode.MKNOD]: 128,
  [FuseOpcode.SYMLINK]: 128,
  [FuseOpcode.LINK]: 128,
  [FuseOpcode.CREATE]: 144,
  [FuseOpcode.GETATTR]: 104,
  [FuseOpcode.SETATTR]: 104,
  [FuseOpcode.OPEN]: 16,
  [FuseOpcode.OPENDIR]: 16,
  [FuseOpcode.WRITE]: 8,
  [FuseOpcode.STATFS]: 80,
  [FuseOpcode.LSEEK]: 8,
  [FuseOpcode.READLINK]: DEFAULT_REPLY_ROOM,
};

function hasNoReply(opcode: number): boolean {
  return opcode === FuseOpcode.FORGET || opcode === FuseOpcode.BATCH_FORGET ||
    opcode === FuseOpcode.INTERRUPT;
}

/** Drives a vhost-user-fs back-end. */
export class FsDriver {
  /** The negotiated session (features, rings). */
  readonly session: DeviceSession;
  /** The configuration space, when the CONFIG protocol feature was negotiated. */
  readonly config: FsConfig | undefined;
  /** Limit for each request, in ms. */
  timeoutMs: number;
  /** Default uid of requests. */
  uid: number;
  /** Default gid of requests. */
  gid: number;
  readonly #pool: GuestBufferPool;
  readonly #memory: SharedGuestMemory;
  readonly #indirect: boolean;
  #unique = 1n;

  private constructor(
    session: DeviceSession,
    config: FsConfig | undefined,
    pool: GuestBufferPool,
    options: FsDriverOptions,
    timeoutMs: number,
  ) {
    this.session = session;
    this.config = config;
    this.#pool = pool;
    this.#memory = session.memory;
    this.#indirect = hasBit(session.features, VirtioFeature.RING_INDIRECT_DESC);
    this.timeoutMs = timeoutMs;
    this.uid = options.uid ?? 0;
    this.gid = options.gid ?? 0;
  }

  /**
   * Negotiates with the back-end (see {@linkcode DeviceSession.open}),
   * starts the high-priority queue and the request queues, reads the
   * configuration space when it can, and sets aside the buffer pool. Sends
   * no FUSE request: call {@linkcode init} (a migrated session needs none).
   * The client and the memory stay the caller's to close.
   */
  static setup(
    client: VhostUserClient,
    memory: SharedGuestMemory,
    options: FsDriverOptions,
  ): FsDriver {
    let driverFeatures = bit(VirtioFeature.VERSION_1);
    if (options.eventIdx) driverFeatures |= bit(VirtioFeature.RING_EVENT_IDX);
    if (options.indirect) driverFeatures |= bit(VirtioFeature.RING_INDIRECT_DESC);
    const sessionOptions: DeviceSessionOptions = {
      numQueues: 1 + (options.numRequestQueues ?? 1),
      queueSize: options.queueSize,
      driverFeatures,
      protocolFeatures: options.protocolFeatures,
    };
    const session = DeviceSession.open(client, memory, sessionOptions);
    try {
      const config = hasBit(session.protocolFeatures, ProtocolFeature.CONFIG)
        ? decodeFsConfig(client.getConfig(0, FS_CONFIG_SIZE))
        : undefined;
      const free = memory.largestFree(4096);
      const wanted = options.bufferPoolBytes ?? Math.min(DEFAULT_POOL_BYTES, free / 2);
      const poolBytes = Math.floor(Math.min(wanted, free) / 4096) * 4096;
      if (poolBytes < 4096) throw new RangeError("no guest memory left for request buffers");
      const pool = new GuestBufferPool(memory.alloc(poolBytes, 4096), poolBytes);
      return new FsDriver(session, config, pool, options, options.timeoutMs ?? client.timeoutMs);
    } catch (e) {
      session.close();
      throw e;
    }
  }

  /** Virtio features accepted with SET_FEATURES. */
  get features(): bigint {
    return this.session.features;
  }

  /** The ring of queue `index` (0 is the high-priority queue). */
  ring(index: number): DriverRing {
    return this.session.ring(index);
  }

  /** A fresh request id. */
  nextUnique(): bigint {
    return this.#unique++;
  }

  // ---- raw and generic requests ----------------------------------------------

  /**
   * Publishes `request` as the readable part of a chain with `replySize`
   * writable bytes after it, waits for the back-end to return it, and
   * returns what it wrote. Any bytes are sent as they are: malformed
   * requests included.
   */
  send(request: Uint8Array, replySize: number, options: FsSendOptions = {}): FsRawReply {
    return this.sendLater(request, replySize, options)();
  }

  /**
   * Like {@linkcode send}, but returns once the chain is published and the
   * back-end notified; the returned function waits for the reply. Several
   * requests may be pending on one queue; wait for them in the order the
   * back-end completes them (a reply for another head is an error).
   */
  sendLater(
    request: Uint8Array,
    replySize: number,
    options: FsSendOptions = {},
  ): () => FsRawReply {
    const ring = this.ring(options.queue ?? 1);
    if (request.length + replySize === 0) throw new RangeError("a chain needs at least one byte");
    const allocated: number[] = [];
    const free = () => allocated.forEach((gpa) => this.#pool.free(gpa));
    let head: number;
    let replyGpa: number;
    try {
      const base = this.#pool.alloc(request.length + replySize, 64);
      allocated.push(base);
      this.#memory.bytes(base, request.length).set(request);
      replyGpa = base + request.length;
      // Stale bytes would look like a reply the back-end never wrote.
      this.#memory.bytes(replyGpa, replySize).fill(0xa5);
      const segments: Segment[] = [];
      for (const piece of splitRange(base, request.length, options.requestSegments ?? 1)) {
        segments.push({ ...piece, writable: false });
      }
      for (const piece of splitRange(replyGpa, replySize, options.replySegments ?? 1)) {
        segments.push({ ...piece, writable: true });
      }
      let table: number | undefined;
      if (this.#indirect) {
        table = this.#pool.alloc(segments.length * DESC_SIZE);
        allocated.push(table);
      }
      head = ring.publish(segments, table);
      ring.notify();
    } catch (e) {
      free();
      throw e;
    }
    return () => {
      try {
        const written = this.#waitFor(ring, head);
        const bytes = this.#memory.bytes(replyGpa, Math.min(written, replySize)).slice();
        free();
        return { written, bytes };
      } catch (e) {
        // After a timeout the back-end may still write into the buffers: leave them allocated.
        if (!(e instanceof BackendTimeout)) free();
        throw e;
      }
    };
  }

  #waitFor(ring: DriverRing, head: number): number {
    const deadline = performance.now() + this.timeoutMs;
    for (;;) {
      const used = ring.takeUsed();
      if (used !== undefined) {
        if (used.id !== head) {
          throw new Error(`queue ${ring.index}: back-end returned head ${used.id}, sent ${head}`);
        }
        return used.len;
      }
      if (!ring.waitForUsed(deadline)) {
        throw new BackendTimeout(`the reply on queue ${ring.index}`, this.timeoutMs);
      }
    }
  }

  /**
   * Sends one FUSE request built from `args` and returns the answer. Checks
   * the reply's framing (unique, len = used length); an error reply is
   * returned, not thrown.
   */
  request<K extends FuseDecodableOpcode>(
    opcode: K,
    args: FuseArgsInputByOpcode[K],
    options: FsRequestOptions = {},
  ): FsReply {
    return this.requestLater(opcode, args, options)();
  }

  /**
   * Like {@linkcode request}, but returns once the request is published; the
   * returned function waits for the answer (see {@linkcode sendLater}).
   */
  requestLater<K extends FuseDecodableOpcode>(
    opcode: K,
    args: FuseArgsInputByOpcode[K],
    options: FsRequestOptions = {},
  ): () => FsReply {
    const unique = this.nextUnique();
    const bytes = encodeRequest(opcode, {
      unique,
      nodeid: options.nodeid ?? 1n,
      uid: options.uid ?? this.uid,
      gid: options.gid ?? this.gid,
      pid: options.pid ?? 1,
    }, args);
    const noReply = hasNoReply(opcode);
    const replySize = options.replySize ??
      (noReply ? 0 : FUSE_OUT_HEADER.size + FsDriver.#replyRoom(opcode, args));
    const queue = options.queue ?? (noReply ? HIPRIO_QUEUE : 1);
    const wait = this.sendLater(bytes, replySize, { ...options, queue });
    return () => {
      const raw = wait();
      if (noReply && raw.written === 0) {
        return { error: 0, payload: new Uint8Array(0), written: 0, header: undefined };
      }
      const { header, payload } = splitReply(raw.bytes);
      if (header.unique !== unique) {
        throw new Error(`${opcodeName(opcode)}: reply unique ${header.unique}, sent ${unique}`);
      }
      if (header.len !== raw.written) {
        throw new Error(
          `${opcodeName(opcode)}: reply len ${header.len}, used length ${raw.written}`,
        );
      }
      return {
        error: header.error === 0 ? 0 : -header.error,
        payload,
        written: raw.written,
        header,
      };
    };
  }

  static #replyRoom(opcode: number, args: unknown): number {
    if (
      opcode === FuseOpcode.READ || opcode === FuseOpcode.READDIR ||
      opcode === FuseOpcode.READDIRPLUS
    ) {
      return (args as { size: number }).size;
    }
    return REPLY_PAYLOAD[opcode] ?? 0;
  }

  /** Like {@linkcode request}, but throws FsReplyError for an error reply and returns the payload. */
  call<K extends FuseDecodableOpcode>(
    opcode: K,
    args: FuseArgsInputByOpcode[K],
    options: FsRequestOptions = {},
  ): Uint8Array {
    const reply = this.request(opcode, args, options);
    if (reply.error !== 0) throw new FsReplyError(opcode, reply.error);
    return reply.payload;
  }

  // ---- one helper per operation ------------------------------------------------

  /** INIT as Linux 6.1 sends it (7.37, INIT_EXT); returns what the back-end accepted. */
  init(
    options: { flags?: number; maxReadahead?: number; major?: number; minor?: number } = {},
  ): FuseInitOutValue {
    const flags = options.flags ?? (FuseInitFlag.ASYNC_READ | FuseInitFlag.ATOMIC_O_TRUNC |
      FuseInitFlag.BIG_WRITES | FuseInitFlag.DO_READDIRPLUS | FuseInitFlag.READDIRPLUS_AUTO |
      FuseInitFlag.PARALLEL_DIROPS | FuseInitFlag.MAX_PAGES | FuseInitFlag.INIT_EXT);
    return decodeInitOut(this.call(FuseOpcode.INIT, {
      major: options.major ?? FUSE_KERNEL_VERSION,
      minor: options.minor ?? FUSE_KERNEL_MINOR_VERSION,
      maxReadahead: options.maxReadahead ?? 128 * 1024,
      flags: flags >>> 0,
      flags2: 0,
    }));
  }

  /** DESTROY: the back-end forgets every inode and handle. */
  destroy(): void {
    this.call(FuseOpcode.DESTROY, {});
  }

  /** LOOKUP of `name` in `parent`. */
  lookup(parent: bigint, name: FsName): FuseEntryOutValue {
    return decodeEntryOut(this.call(FuseOpcode.LOOKUP, { name: nameBytes(name) }, {
      nodeid: parent,
    }));
  }

  /** FORGET (high-priority queue, no reply). */
  forget(nodeid: bigint, nlookup: bigint): void {
    this.call(FuseOpcode.FORGET, { nlookup }, { nodeid });
  }

  /** BATCH_FORGET (high-priority queue, no reply). */
  batchForget(entries: readonly FuseForgetOne[]): void {
    this.call(FuseOpcode.BATCH_FORGET, { entries });
  }

  /** INTERRUPT of request `unique` (high-priority queue, no reply). */
  interrupt(unique: bigint): void {
    this.call(FuseOpcode.INTERRUPT, { unique });
  }

  /** GETATTR, through `fh` when given. */
  getattr(nodeid: bigint, fh?: bigint): FuseAttrOutValue {
    return decodeAttrOut(this.call(FuseOpcode.GETATTR, {
      getattrFlags: fh === undefined ? 0 : FuseGetattrFlag.FH,
      fh: fh ?? 0n,
    }, { nodeid }));
  }

  /** SETATTR of the fields present in `changes`. */
  setattr(nodeid: bigint, changes: FsSetattrChanges): FuseAttrOutValue {
    let valid = 0;
    if (changes.mode !== undefined) valid |= FuseSetattrValid.MODE;
    if (changes.uid !== undefined) valid |= FuseSetattrValid.UID;
    if (changes.gid !== undefined) valid |= FuseSetattrValid.GID;
    if (changes.size !== undefined) valid |= FuseSetattrValid.SIZE;
    if (changes.atime !== undefined) valid |= FuseSetattrValid.ATIME;
    if (changes.mtime !== undefined) valid |= FuseSetattrValid.MTIME;
    if (changes.fh !== undefined) valid |= FuseSetattrValid.FH;
    return decodeAttrOut(this.call(FuseOpcode.SETATTR, {
      valid,
      fh: changes.fh ?? 0n,
      size: changes.size ?? 0n,
      lockOwner: 0n,
      atime: changes.atime?.sec ?? 0n,
      mtime: changes.mtime?.sec ?? 0n,
      ctime: 0n,
      atimensec: changes.atime?.nsec ?? 0,
      mtimensec: changes.mtime?.nsec ?? 0,
      ctimensec: 0,
      mode: changes.mode ?? 0,
      uid: changes.uid ?? 0,
      gid: changes.gid ?? 0,
    }, { nodeid }));
  }

  /** READLINK: the target's bytes. */
  readlink(nodeid: bigint): Uint8Array {
    return this.call(FuseOpcode.READLINK, {}, { nodeid }).slice();
  }

  /** SYMLINK `name` → `target` in `parent`. */
  symlink(parent: bigint, name: FsName, target: FsName): FuseEntryOutValue {
    return decodeEntryOut(this.call(FuseOpcode.SYMLINK, {
      name: nameBytes(name),
      target: nameBytes(target),
    }, { nodeid: parent }));
  }

  /** MKNOD. */
  mknod(parent: bigint, name: FsName, mode: number, rdev = 0, umask = 0): FuseEntryOutValue {
    return decodeEntryOut(this.call(FuseOpcode.MKNOD, {
      mode,
      rdev,
      umask,
      name: nameBytes(name),
    }, { nodeid: parent }));
  }

  /** MKDIR. */
  mkdir(parent: bigint, name: FsName, mode = 0o755, umask = 0): FuseEntryOutValue {
    return decodeEntryOut(this.call(FuseOpcode.MKDIR, { mode, umask, name: nameBytes(name) }, {
      nodeid: parent,
    }));
  }

  /** UNLINK. */
  unlink(parent: bigint, name: FsName): void {
    this.call(FuseOpcode.UNLINK, { name: nameBytes(name) }, { nodeid: parent });
  }

  /** RMDIR. */
  rmdir(parent: bigint, name: FsName): void {
    this.call(FuseOpcode.RMDIR, { name: nameBytes(name) }, { nodeid: parent });
  }

  /** RENAME, or RENAME2 when `flags` are given. */
  rename(parent: bigint, name: FsName, newParent: bigint, newName: FsName, flags = 0): void {
    const names = { newdir: newParent, oldname: nameBytes(name), newname: nameBytes(newName) };
    if (flags === 0) this.call(FuseOpcode.RENAME, names, { nodeid: parent });
    else this.call(FuseOpcode.RENAME2, { ...names, flags }, { nodeid: parent });
  }

  /** LINK: a new name `newName` in `newParent` for `nodeid`. */
  link(nodeid: bigint, newParent: bigint, newName: FsName): FuseEntryOutValue {
    return decodeEntryOut(this.call(FuseOpcode.LINK, {
      oldnodeid: nodeid,
      name: nameBytes(newName),
    }, { nodeid: newParent }));
  }

  /** OPEN with open(2) flags. */
  open(nodeid: bigint, flags: number): FuseOpenOutValue {
    return decodeOpenOut(this.call(FuseOpcode.OPEN, { flags, openFlags: 0 }, { nodeid }));
  }

  /** CREATE: a new file, looked up and opened. */
  create(
    parent: bigint,
    name: FsName,
    flags: number,
    mode = 0o644,
    umask = 0,
  ): { entry: FuseEntryOutValue; open: FuseOpenOutValue } {
    return decodeCreateOut(this.call(FuseOpcode.CREATE, {
      flags,
      mode,
      umask,
      openFlags: 0,
      name: nameBytes(name),
    }, { nodeid: parent }));
  }

  /** READ of up to `size` bytes at `offset`; the reply buffer is split in `segments` descriptors. */
  read(fh: bigint, offset: bigint, size: number, options: FsRequestOptions = {}): Uint8Array {
    return this.call(FuseOpcode.READ, {
      fh,
      offset,
      size,
      readFlags: 0,
      lockOwner: 0n,
      flags: 0,
    }, { replySegments: 1, ...options });
  }

  /** WRITE of `data` at `offset`; returns the count written. */
  write(
    fh: bigint,
    offset: bigint,
    data: Uint8Array,
    options: FsRequestOptions & { writeFlags?: number } = {},
  ): number {
    return decodeWriteOut(this.call(FuseOpcode.WRITE, {
      fh,
      offset,
      data,
      writeFlags: options.writeFlags ?? 0,
      lockOwner: 0n,
      flags: 0,
    }, options)).size;
  }

  /** STATFS. */
  statfs(nodeid = 1n): FuseStatfsValue {
    return decodeStatfsOut(this.call(FuseOpcode.STATFS, {}, { nodeid }));
  }

  /** RELEASE of a file handle. */
  release(fh: bigint, flags = 0): void {
    this.call(FuseOpcode.RELEASE, { fh, flags, releaseFlags: 0, lockOwner: 0n });
  }

  /** FLUSH of a file handle. */
  flush(fh: bigint): void {
    this.call(FuseOpcode.FLUSH, { fh, lockOwner: 0n });
  }

  /** FSYNC of a file handle. */
  fsync(fh: bigint, datasync = false): void {
    this.call(FuseOpcode.FSYNC, { fh, fsyncFlags: datasync ? FuseFsyncFlag.FDATASYNC : 0 });
  }

  /** OPENDIR. */
  opendir(nodeid: bigint, flags = 0): FuseOpenOutValue {
    return decodeOpenOut(this.call(FuseOpcode.OPENDIR, { flags, openFlags: 0 }, { nodeid }));
  }

  /** READDIR: the entries that fit `size` bytes, from `offset`. */
  readdir(nodeid: bigint, fh: bigint, offset: bigint, size = 4096): FuseDirentValue[] {
    return decodeDirents(this.call(FuseOpcode.READDIR, {
      fh,
      offset,
      size,
      readFlags: 0,
      lockOwner: 0n,
      flags: 0,
    }, { nodeid }));
  }

  /** READDIRPLUS: the entries with their lookups, from `offset`. */
  readdirplus(nodeid: bigint, fh: bigint, offset: bigint, size = 4096): FuseDirentPlusValue[] {
    return decodeDirentsPlus(this.call(FuseOpcode.READDIRPLUS, {
      fh,
      offset,
      size,
      readFlags: 0,
      lockOwner: 0n,
      flags: 0,
    }, { nodeid }));
  }

  /**
   * Lists a whole directory: OPENDIR, READDIR (or READDIRPLUS) from each
   * batch's last `off` until an empty reply, RELEASEDIR. With `plus` the
   * entries carry lookups the caller now owns (except `.` and `..`).
   */
  listDirectory(nodeid: bigint, plus: boolean, size = 4096): FuseDirentValue[] {
    const { fh } = this.opendir(nodeid);
    const entries: FuseDirentValue[] = [];
    try {
      let offset = 0n;
      for (;;) {
        const batch = plus
          ? this.readdirplus(nodeid, fh, offset, size).map((e) => e.dirent)
          : this.readdir(nodeid, fh, offset, size);
        if (batch.length === 0) return entries;
        entries.push(...batch);
        offset = batch[batch.length - 1].off;
      }
    } finally {
      this.releasedir(fh);
    }
  }

  /** RELEASEDIR. */
  releasedir(fh: bigint): void {
    this.call(FuseOpcode.RELEASEDIR, { fh, flags: 0, releaseFlags: 0, lockOwner: 0n });
  }

  /** FSYNCDIR. */
  fsyncdir(fh: bigint, datasync = false): void {
    this.call(FuseOpcode.FSYNCDIR, { fh, fsyncFlags: datasync ? FuseFsyncFlag.FDATASYNC : 0 });
  }

  /** ACCESS with an access(2) mask. */
  access(nodeid: bigint, mask: number): void {
    this.call(FuseOpcode.ACCESS, { mask }, { nodeid });
  }

  /** FALLOCATE. */
  fallocate(fh: bigint, offset: bigint, length: bigint, mode = 0): void {
    this.call(FuseOpcode.FALLOCATE, { fh, offset, length, mode });
  }

  /** LSEEK (SEEK_DATA 3 / SEEK_HOLE 4); returns the resulting offset. */
  lseek(fh: bigint, offset: bigint, whence: number): bigint {
    return decodeLseekOut(this.call(FuseOpcode.LSEEK, { fh, offset, whence })).offset;
  }

  // ---- ring life cycle ---------------------------------------------------------

  /** Stops queue `index` on the back-end (GET_VRING_BASE); returns the next avail index. */
  stopQueue(index: number): number {
    return this.ring(index).stop(this.session.client);
  }

  /** Stops every queue (as a VMM does before SAVE). */
  stopAll(): void {
    for (const ring of this.session.rings) ring.stop(this.session.client);
  }

  /** Restarts every stopped queue where the driver left it (a VMM resuming after SAVE). */
  restartAll(): void {
    for (const ring of this.session.rings) ring.start(this.session.client);
  }

  /** Releases the rings' eventfds. The client and memory are closed by their owner. */
  close(): void {
    this.session.close();
  }
}
