/**
 * virtio-fs, data half: turns one descriptor chain (a FUSE request in the
 * device-readable part, room for the reply in the device-writable part)
 * into one call of the filesystem core. Runs inside the single queue Worker
 * (see fs_device.ts), which also holds the core's inode and handle tables.
 *
 * Bulk data never passes through JS memory: WRITE is a pwritev straight
 * from the guest buffers after its 80-byte header, READ a preadv straight
 * into the guest buffers after the 16-byte reply header. Everything else is
 * copied (requests are small), decoded by the FUSE codecs, and answered
 * with `-errno` when it fails. Guest data never makes this module throw.
 *
 * @module
 */

import { EFBIG, EINVAL, EIO, ENOSYS, EPROTO, SyscallError } from "../../../ffi/mod.ts";
import { GuestBufferError, GuestFileIo } from "../guest_file_io.ts";
import { RequestFailureLog } from "../request_failure_log.ts";
import { log } from "../../log.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { DescriptorChain, Segment } from "../../virtqueue/descriptor_chain.ts";
import type { QueueHandler, WorkerSetup } from "../device.ts";
import type { FsWorkerParams } from "./fs_device.ts";
import {
  decodeFsWorkerCommand,
  type FsRestoreResult,
  type FuseSessionState,
  type MigrationOnError,
} from "./fs_state.ts";
import {
  decodeArgs,
  decodeInHeader,
  encodeAttrOut,
  encodeCreateOut,
  encodeEntryOut,
  encodeInitOut,
  encodeLseekOut,
  encodeOpenOut,
  encodeOutHeader,
  encodeReadlinkReply,
  encodeStatfsOut,
  encodeWriteOut,
  FUSE_IN_HEADER,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MAX_ERRNO,
  FUSE_OUT_HEADER,
  FUSE_WRITE_IN,
  type FuseDecodeOptions,
  FuseFsyncFlag,
  FuseGetattrFlag,
  type FuseInitArgs,
  FuseInitFlag,
  FuseInitFlag2,
  FuseOpcode,
  FuseProtocolError,
  type FuseRequestArgs,
  FuseWriteFlag,
  opcodeName,
  readStruct,
  splitRequest,
} from "./fuse/mod.ts";
import {
  type AttrResult,
  entryOut,
  FsError,
  type FsOptions,
  type FsSnapshot,
  type OpenResult,
  PassthroughFs,
  splitTimeout,
} from "./passthrough/mod.ts";

/**
 * The filesystem core as the handler uses it: PassthroughFs, or a test
 * double of the same shape. Guest-visible failures are thrown as FsError;
 * anything else is a bug (EIO and a log line).
 */
export type FileSystem = Pick<
  PassthroughFs,
  | "init"
  | "destroy"
  | "close"
  | "lookup"
  | "forget"
  | "batchForget"
  | "getattr"
  | "setattr"
  | "readlink"
  | "symlink"
  | "mknod"
  | "mkdir"
  | "unlink"
  | "rmdir"
  | "rename"
  | "link"
  | "open"
  | "create"
  | "readFd"
  | "afterWrite"
  | "statfs"
  | "release"
  | "flush"
  | "fsync"
  | "opendir"
  | "readdir"
  | "releasedir"
  | "fsyncdir"
  | "access"
  | "fallocate"
  | "lseek"
  | "snapshot"
  | "restore"
>;

/** Builds a filesystem core over the shared directory. */
export type FileSystemFactory = (options: FsOptions) => FileSystem;

/** The opcodes served; every other one is answered with ENOSYS. */
export const SUPPORTED_OPCODES: ReadonlySet<number> = new Set<number>([
  FuseOpcode.INIT,
  FuseOpcode.DESTROY,
  FuseOpcode.LOOKUP,
  FuseOpcode.FORGET,
  FuseOpcode.BATCH_FORGET,
  FuseOpcode.GETATTR,
  FuseOpcode.SETATTR,
  FuseOpcode.READLINK,
  FuseOpcode.SYMLINK,
  FuseOpcode.MKNOD,
  FuseOpcode.MKDIR,
  FuseOpcode.UNLINK,
  FuseOpcode.RMDIR,
  FuseOpcode.RENAME,
  FuseOpcode.RENAME2,
  FuseOpcode.LINK,
  FuseOpcode.OPEN,
  FuseOpcode.READ,
  FuseOpcode.WRITE,
  FuseOpcode.STATFS,
  FuseOpcode.RELEASE,
  FuseOpcode.FSYNC,
  FuseOpcode.FLUSH,
  FuseOpcode.OPENDIR,
  FuseOpcode.READDIR,
  FuseOpcode.READDIRPLUS,
  FuseOpcode.RELEASEDIR,
  FuseOpcode.FSYNCDIR,
  FuseOpcode.ACCESS,
  FuseOpcode.CREATE,
  FuseOpcode.FALLOCATE,
  FuseOpcode.LSEEK,
  FuseOpcode.INTERRUPT,
]);

/** Requests other than WRITE are small: the longest is SYMLINK (two names, ~4.4 KiB). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Background requests the guest may queue (u16), and when it should consider us congested. */
const MAX_BACKGROUND = 64;
const CONGESTION_THRESHOLD = 48;
/** iovec entries per preadv/pwritev; longer chains take several calls. */
const IOV_CAPACITY = 1024;
/** Size of WRITE's fixed part: fuse_in_header + fuse_write_in. */
const WRITE_HEADER_SIZE = FUSE_IN_HEADER.size + FUSE_WRITE_IN.size;
/** pread/pwrite take an off_t: offsets from 2^63 up are EINVAL on the host too. */
const OFF_T_LIMIT = 1n << 63n;

/** A request that fails with `errno`; `reason` goes to the log when given. */
class RequestFailure extends Error {
  constructor(readonly errno: number, readonly reason?: string) {
    super(reason ?? `errno ${errno}`);
  }
}

/** No reply is expected: the used element gets length 0. */
const NO_REPLY = Symbol("no reply");

/** A successful reply body: one or more parts after the out header, or none at all. */
type ReplyBody = Uint8Array | readonly Uint8Array[] | typeof NO_REPLY;

const EMPTY = new Uint8Array(0);

function hasNoReply(opcode: number): boolean {
  return opcode === FuseOpcode.FORGET || opcode === FuseOpcode.BATCH_FORGET ||
    opcode === FuseOpcode.INTERRUPT;
}

function attrOut(result: AttrResult): Uint8Array {
  const valid = splitTimeout(result.attrTimeoutSec);
  return encodeAttrOut({ attrValid: valid.sec, attrValidNsec: valid.nsec, attr: result.attr });
}

function openOut(opened: OpenResult): Uint8Array {
  return encodeOpenOut({ fh: opened.fh, openFlags: opened.openFlags });
}

/** Handles virtio-fs requests for the queue Worker. */
export class FsRequestHandler implements QueueHandler {
  readonly #open: FileSystemFactory;
  readonly #options: FsOptions;
  readonly #io = new GuestFileIo(IOV_CAPACITY);
  /** The first bytes of every request: in header, plus fuse_write_in for WRITE. */
  readonly #head = new Uint8Array(WRITE_HEADER_SIZE);
  readonly #headView = new DataView(this.#head.buffer);
  readonly #outHeader = new Uint8Array(FUSE_OUT_HEADER.size);
  #fs: FileSystem;
  #session: FuseSessionState = { initialized: false, minor: 0, flags: 0, flags2: 0 };
  #decodeOptions: FuseDecodeOptions = {};
  readonly #failures = new RequestFailureLog();

  /** Builds the handler and its filesystem core (throws when the shared directory is unusable). */
  constructor(options: FsOptions, open: FileSystemFactory) {
    this.#options = options;
    this.#open = open;
    this.#fs = open(options);
  }

  /** The FUSE session (for tests and logs). */
  get session(): Readonly<FuseSessionState> {
    return this.#session;
  }

  /** Processes one request; returns the number of bytes written to the guest. */
  handle(chain: DescriptorChain, memory: GuestMemory, queueIndex: number): number {
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
      if (!SUPPORTED_OPCODES.has(opcode)) {
        throw new RequestFailure(ENOSYS);
      }
      if (!this.#session.initialized && opcode !== FuseOpcode.INIT && !hasNoReply(opcode)) {
        throw new RequestFailure(EIO, `${opcodeName(opcode)} before INIT`);
      }
      if (opcode === FuseOpcode.WRITE) return this.#write(chain, memory, got, unique);
      const header = decodeInHeader(this.#head);
      if (header.len > MAX_REQUEST_BYTES) {
        throw new FuseProtocolError(`${opcodeName(opcode)} request of ${header.len} bytes`);
      }
      const bytes = new Uint8Array(Math.min(header.len, chain.readableLength()));
      chain.readFrom(memory, 0, bytes);
      const { body } = splitRequest(bytes);
      const request = decodeArgs(opcode, body, this.#decodeOptions);
      if (request.opcode === FuseOpcode.READ) {
        return this.#read(
          chain,
          memory,
          unique,
          request.args.fh,
          request.args.offset,
          request.args.size,
        );
      }
      const reply = this.#dispatch(request, header.nodeid, header.uid, header.gid, chain);
      if (reply === NO_REPLY) return 0;
      return this.#reply(chain, memory, queueIndex, unique, reply);
    } catch (e) {
      const errno = this.#errnoOf(e, queueIndex, chain, opcode);
      if (hasNoReply(opcode)) return 0;
      return this.#replyError(chain, memory, queueIndex, unique, errno);
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
      setxattrExt: (session.flags & FuseInitFlag.SETXATTR_EXT) !== 0,
      securityContext: (session.flags & FuseInitFlag.INIT_EXT) !== 0 &&
        (session.flags2 & FuseInitFlag2.SECURITY_CTX) !== 0,
    };
  }

  /** Calls the core for every opcode except READ and WRITE. */
  #dispatch(
    request: FuseRequestArgs,
    nodeid: bigint,
    uid: number,
    gid: number,
    chain: DescriptorChain,
  ): ReplyBody {
    const fs = this.#fs;
    // Payloads that grow with the request (READDIR) are capped by the room for them.
    const room = Math.max(0, chain.writableLength() - FUSE_OUT_HEADER.size);
    switch (request.opcode) {
      case FuseOpcode.INIT:
        return this.#init(request.args);
      case FuseOpcode.DESTROY:
        fs.destroy();
        this.#setSession({ initialized: false, minor: 0, flags: 0, flags2: 0 });
        return EMPTY;
      case FuseOpcode.LOOKUP:
        return encodeEntryOut(entryOut(fs.lookup(nodeid, request.args.name)));
      case FuseOpcode.FORGET:
        fs.forget(nodeid, request.args.nlookup);
        return NO_REPLY;
      case FuseOpcode.BATCH_FORGET:
        fs.batchForget(request.args.entries);
        return NO_REPLY;
      case FuseOpcode.INTERRUPT:
        // Requests are handled synchronously, one at a time: nothing is ever in progress.
        return NO_REPLY;
      case FuseOpcode.GETATTR: {
        const { getattrFlags, fh } = request.args;
        return attrOut(fs.getattr(nodeid, (getattrFlags & FuseGetattrFlag.FH) ? fh : undefined));
      }
      case FuseOpcode.SETATTR:
        return attrOut(fs.setattr(nodeid, request.args));
      case FuseOpcode.READLINK:
        return encodeReadlinkReply(0n, fs.readlink(nodeid)).subarray(FUSE_OUT_HEADER.size);
      case FuseOpcode.SYMLINK: {
        const { name, target } = request.args;
        return encodeEntryOut(entryOut(fs.symlink(nodeid, name, target, uid, gid)));
      }
      case FuseOpcode.MKNOD: {
        const { name, mode, rdev, umask } = request.args;
        return encodeEntryOut(entryOut(fs.mknod(nodeid, name, mode, rdev, umask, uid, gid)));
      }
      case FuseOpcode.MKDIR: {
        const { name, mode, umask } = request.args;
        return encodeEntryOut(entryOut(fs.mkdir(nodeid, name, mode, umask, uid, gid)));
      }
      case FuseOpcode.UNLINK:
        fs.unlink(nodeid, request.args.name);
        return EMPTY;
      case FuseOpcode.RMDIR:
        fs.rmdir(nodeid, request.args.name);
        return EMPTY;
      case FuseOpcode.RENAME: {
        const { oldname, newdir, newname } = request.args;
        fs.rename(nodeid, oldname, newdir, newname, 0);
        return EMPTY;
      }
      case FuseOpcode.RENAME2: {
        const { oldname, newdir, newname, flags } = request.args;
        fs.rename(nodeid, oldname, newdir, newname, flags);
        return EMPTY;
      }
      case FuseOpcode.LINK:
        return encodeEntryOut(
          entryOut(fs.link(request.args.oldnodeid, nodeid, request.args.name)),
        );
      case FuseOpcode.OPEN:
        return openOut(fs.open(nodeid, request.args.flags));
      case FuseOpcode.STATFS: {
        const st = fs.statfs(nodeid);
        return encodeStatfsOut({
          blocks: st.blocks,
          bfree: st.bfree,
          bavail: st.bavail,
          files: st.files,
          ffree: st.ffree,
          bsize: st.bsize,
          namelen: st.namelen,
          frsize: st.frsize,
        });
      }
      case FuseOpcode.RELEASE:
        fs.release(request.args.fh);
        return EMPTY;
      case FuseOpcode.FLUSH:
        fs.flush(request.args.fh);
        return EMPTY;
      case FuseOpcode.FSYNC:
        fs.fsync(request.args.fh, (request.args.fsyncFlags & FuseFsyncFlag.FDATASYNC) !== 0);
        return EMPTY;
      case FuseOpcode.OPENDIR:
        return openOut(fs.opendir(nodeid, request.args.flags));
      case FuseOpcode.READDIR:
      case FuseOpcode.READDIRPLUS: {
        const { fh, offset, size } = request.args;
        const plus = request.opcode === FuseOpcode.READDIRPLUS;
        return fs.readdir(nodeid, fh, offset, Math.min(size, room), plus);
      }
      case FuseOpcode.RELEASEDIR:
        fs.releasedir(request.args.fh);
        return EMPTY;
      case FuseOpcode.FSYNCDIR:
        fs.fsyncdir(request.args.fh, (request.args.fsyncFlags & FuseFsyncFlag.FDATASYNC) !== 0);
        return EMPTY;
      case FuseOpcode.ACCESS:
        fs.access(nodeid, request.args.mask);
        return EMPTY;
      case FuseOpcode.CREATE: {
        const { name, flags, mode, umask } = request.args;
        const created = fs.create(nodeid, name, flags, mode, umask, uid, gid);
        return encodeCreateOut(entryOut(created.entry), created.open);
      }
      case FuseOpcode.FALLOCATE: {
        const { fh, mode, offset, length } = request.args;
        fs.fallocate(fh, mode, offset, length);
        return EMPTY;
      }
      case FuseOpcode.LSEEK: {
        const { fh, offset, whence } = request.args;
        return encodeLseekOut({ offset: fs.lseek(fh, offset, whence) });
      }
      default:
        // Decodable but not served (xattrs, locks, COPY_FILE_RANGE, SYNCFS).
        throw new RequestFailure(ENOSYS);
    }
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
    unique: bigint,
    fh: bigint,
    offset: bigint,
    size: number,
  ): number {
    const writable = chain.writableLength();
    if (writable < FUSE_OUT_HEADER.size) {
      throw new RequestFailure(EIO, `no room for a reply (${writable} writable bytes)`);
    }
    if (offset >= OFF_T_LIMIT) throw new RequestFailure(EINVAL);
    const fd = this.#fs.readFd(fh);
    const length = Math.min(size, writable - FUSE_OUT_HEADER.size);
    // Past 2^53 nothing is stored on any host file system vhostd shares: end of file.
    const count = offset > BigInt(Number.MAX_SAFE_INTEGER) ? 0 : this.#transfer(
      fd,
      chain.segments, // one byte stream, readable part first: skip it and the out header
      memory,
      chain.readableLength() + FUSE_OUT_HEADER.size,
      length,
      Number(offset),
      false,
    );
    const len = FUSE_OUT_HEADER.size + count;
    encodeOutHeader({ len, error: 0, unique }, this.#outHeader);
    chain.writeTo(memory, 0, this.#outHeader);
    return len;
  }

  /** WRITE: pwritev straight from the guest buffers after the 80-byte header. */
  #write(chain: DescriptorChain, memory: GuestMemory, got: number, unique: bigint): number {
    if (got < WRITE_HEADER_SIZE) {
      throw new FuseProtocolError(`WRITE of ${got} bytes is shorter than its header`);
    }
    const header = decodeInHeader(this.#head);
    const args = readStruct(FUSE_WRITE_IN, this.#head, FUSE_IN_HEADER.size);
    if (header.len !== WRITE_HEADER_SIZE + args.size) {
      throw new FuseProtocolError(
        `WRITE: fuse_in_header.len ${header.len} does not match fuse_write_in.size ${args.size}`,
      );
    }
    if (header.len > chain.readableLength()) {
      throw new FuseProtocolError(
        `WRITE: fuse_in_header.len ${header.len} exceeds the ${chain.readableLength()} bytes sent`,
      );
    }
    if (args.offset >= OFF_T_LIMIT) throw new RequestFailure(EINVAL);
    if (args.offset + BigInt(args.size) > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new RequestFailure(EFBIG);
    }
    const fd = this.#fs.readFd(args.fh);
    const count = this.#transfer(
      fd,
      chain.segments, // header.len <= readableLength(): never reaches the writable part
      memory,
      WRITE_HEADER_SIZE,
      args.size,
      Number(args.offset),
      true,
    );
    if (count > 0) {
      this.#fs.afterWrite(args.fh, (args.writeFlags & FuseWriteFlag.KILL_SUIDGID) !== 0);
    }
    const reply = new Uint8Array(FUSE_OUT_HEADER.size + 8);
    encodeOutHeader({ len: reply.length, error: 0, unique }, reply);
    encodeWriteOut({ size: count }, reply, FUSE_OUT_HEADER.size);
    if (reply.length > chain.writableLength()) {
      throw new RequestFailure(EIO, "no room for the WRITE reply");
    }
    chain.writeTo(memory, 0, reply);
    return reply.length;
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
    const parts = body instanceof Uint8Array ? [body] : body;
    const len = parts.reduce((sum, part) => sum + part.byteLength, FUSE_OUT_HEADER.size);
    const writable = chain.writableLength();
    if (len > writable) {
      this.#warn(
        queueIndex,
        chain,
        `reply of ${len} bytes does not fit the ${writable} writable bytes`,
      );
      return this.#replyError(chain, memory, queueIndex, unique, EIO);
    }
    const reply = new Uint8Array(len);
    encodeOutHeader({ len, error: 0, unique }, reply);
    let at = FUSE_OUT_HEADER.size;
    for (const part of parts) {
      reply.set(part, at);
      at += part.byteLength;
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
    encodeOutHeader(
      { len: FUSE_OUT_HEADER.size, error: -errno, unique },
      this.#outHeader,
    );
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
      inodeFileHandles: params.inodeFileHandles,
      migrationMode: params.migrationMode,
    },
    (options) => new PassthroughFs(options),
  );
}
