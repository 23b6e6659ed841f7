/**
 * virtio-blk, data half: turns descriptor chains into operations of a file
 * I/O engine (io_uring or the synchronous fallback) on the backing. Runs
 * inside a queue Worker. Reads, writes, flushes, discards and write-zeroes
 * return DEFERRED and complete through the Worker's QueueContext when their
 * engine operations finish, in any order; GET_ID and requests refused on
 * sight complete at once.
 *
 * Everything it touches of the guest is bounds-checked (the chain's segments
 * were checked against guest memory when it was read; each is translated
 * again, whole, before its host address goes into an iovec), and every
 * failure becomes a status byte, never an exception. Guest pages are marked
 * dirty when the host has written them: data pages when the read landed
 * (only the bytes that moved), the status byte when it is written at
 * completion.
 *
 * With O_DIRECT (`--cache none`) guest buffers that do not meet the
 * backing's alignment go through page-aligned bounce buffers.
 *
 * @module
 */

import {
  EAGAIN,
  EINTR,
  EOPNOTSUPP,
  EPOLLIN,
  errnoName,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  IovecArray,
} from "../../../ffi/mod.ts";
import type { FileIoEngine, FileIoEngineKind, IoCompletion } from "../../io/file_io_engine.ts";
import { openFileIoEngine } from "../../io/open_engine.ts";
import { SyncFileIoEngine } from "../../io/sync_engine.ts";
import { log } from "../../log.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { type DescriptorChain, forEachPiece } from "../../virtqueue/descriptor_chain.ts";
import {
  DEFERRED,
  type HandleResult,
  type QueueContext,
  type QueueHandler,
  type WorkerSetup,
} from "../device.ts";
import type { BlkWorkerParams } from "./blk_device.ts";
import {
  BlkRequestType,
  BlkStatus,
  DEVICE_ID_LENGTH,
  DISCARD_SEGMENT_SIZE,
  REQUEST_HEADER_SIZE,
  SECTOR_SIZE,
  WRITE_ZEROES_FLAG_UNMAP,
} from "./blk_spec.ts";
import { BlkSharedState, CounterSlot } from "./blk_shared_state.ts";
import { type BounceBuffer, BouncePool } from "./bounce_pool.ts";
import { GuestBufferError } from "../guest_file_io.ts";
import { RequestFailureLog } from "../request_failure_log.ts";

/** Largest run of zeroes written at once when fallocate cannot zero a range. */
const ZERO_CHUNK = 1 << 20;
/** Size of one bounce buffer; a larger misaligned request moves in several pieces. */
const BOUNCE_SIZE = 256 * 1024;
/** Unused bounce buffers kept mapped per Worker. */
const BOUNCE_KEEP = 16;
/** Times an operation answered -EAGAIN or -EINTR is resubmitted before the request fails. */
const MAX_RETRIES = 16;
/** 2^32, to combine the halves of a u64 sector number. */
const TWO_POW_32 = 0x1_0000_0000;
/** A sector's high word from which its byte offset is 2^53 or more. */
const SECTOR_HIGH_LIMIT = 1 << 21;
/** Largest io_uring the handler asks for. */
const MAX_ENGINE_ENTRIES = 4096;

/** A request refused before any I/O: the status to report and why (for the log). */
class RequestFailure {
  constructor(readonly status: number, readonly reason: string) {}
}

/** What an in-flight request is waiting for. */
enum Stage {
  /** A readv/writev piece of an IN or OUT. */
  Transfer,
  /** The fdatasync of a FLUSH. */
  Flush,
  /** A fallocate of a DISCARD or WRITE_ZEROES range. */
  Fallocate,
  /** A write of zeroes (fallocate could not zero the range). */
  ZeroWrite,
  /** The fdatasync that ends a DISCARD or WRITE_ZEROES in write-through mode. */
  SyncAfter,
}

/** Direct-I/O requirements of the backing fd (`--cache none`). */
interface DirectIo {
  memAlign: number;
  offsetAlign: number;
  bufferedFd: number;
}

/** One request in flight, with its own iovec array; pooled and reused. */
class BlkRequest {
  chain!: DescriptorChain;
  memory!: GuestMemory;
  queueIndex = 0;
  /** Offset of the status byte in the chain's writable part. */
  statusOffset = 0;
  type = 0;
  stage: Stage = Stage.Transfer;
  /** Operations answered -EAGAIN/-EINTR in a row. */
  retries = 0;
  // IN/OUT.
  fd = -1;
  fileOffset = 0;
  length = 0;
  /** Offset of the first data byte in the chain's byte stream. */
  skip = 0;
  /** Bytes moved so far. */
  done = 0;
  /** The piece in flight: its length. */
  pieceLength = 0;
  dsync = false;
  /** The transfer goes through a bounce buffer (misaligned guest buffers and O_DIRECT). */
  bounced = false;
  bounce: BounceBuffer | undefined;
  // DISCARD/WRITE_ZEROES: [offset, length, unmap] per range.
  ranges: number[] = [];
  rangeIndex = 0;
  modeIndex = 0;
  zeroDone = 0;
  zeroLength = 0;
  readonly iov: IovecArray;
  readonly onDone: IoCompletion;

  constructor(capacity: number, onDone: (request: BlkRequest, result: number) => void) {
    this.iov = new IovecArray(capacity);
    this.onDone = (result) => onDone(this, result);
  }
}

/** Opens the engine of `kind` for a Worker; tests substitute their own. */
export type EngineOpener = (kind: FileIoEngineKind, entries: number) => FileIoEngine;

/** Options of {@linkcode BlkRequestHandler} beyond its Worker setup (tests). */
export interface BlkHandlerOptions {
  /** Opens the engine in `attach` (default: `openFileIoEngine`). */
  openEngine?: EngineOpener;
}

function defaultOpenEngine(kind: FileIoEngineKind, entries: number): FileIoEngine {
  return openFileIoEngine(kind, { entries });
}

function powerOfTwoAtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Handles virtio-blk requests for one Worker. */
export class BlkRequestHandler implements QueueHandler {
  readonly #p: BlkWorkerParams;
  readonly #shared: BlkSharedState;
  readonly #header = new Uint8Array(REQUEST_HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #status = new Uint8Array(1);
  readonly #serial: Uint8Array;
  readonly #failures = new RequestFailureLog();
  readonly #openEngine: EngineOpener;
  readonly #iovCapacity: number;
  readonly #direct: DirectIo | undefined;
  readonly #free: BlkRequest[] = [];
  readonly #onDone = (request: BlkRequest, result: number) => this.#completed(request, result);
  #context: QueueContext | undefined;
  #engine: FileIoEngine | undefined;
  #watchedFd: number | undefined;
  /** Engine operations handed over since the last submit. */
  #queued = 0;
  #inflight = 0;
  #bounces: BouncePool | undefined;
  #zeroPool: BouncePool | undefined;
  /** ZERO_CHUNK bytes of zeroes (a fresh anonymous mapping, never written). */
  #zeroes: BounceBuffer | undefined;
  /** The transfer length last counted, and the same as a BigInt. */
  #lastLength = 0;
  #lastLengthBig = 0n;
  /** The used length of a request completed without a context (no `attach`). */
  #syncResult = -1;

  /** Builds the handler from the device's Worker setup. */
  constructor(setup: WorkerSetup, options: BlkHandlerOptions = {}) {
    this.#p = setup.params as BlkWorkerParams;
    this.#shared = new BlkSharedState(setup.shared);
    this.#openEngine = options.openEngine ?? defaultOpenEngine;
    this.#iovCapacity = Math.max(this.#p.segMax, 1) + 2;
    this.#direct = this.#p.direct;
    const serial = new TextEncoder().encode(this.#p.serial);
    this.#serial = new Uint8Array(DEVICE_ID_LENGTH);
    this.#serial.set(serial.subarray(0, DEVICE_ID_LENGTH));
  }

  /** The engine in use (opened by `attach`; a sync engine when there is no context). */
  get engine(): FileIoEngine | undefined {
    return this.#engine;
  }

  /** Requests submitted to the engine and not completed yet. */
  get inflight(): number {
    return this.#inflight;
  }

  /**
   * Opens this Worker's engine (the kind the main thread chose; the sync
   * engine, with a warning, if that fails here) and puts its completion fd
   * into the Worker's event loop.
   */
  attach(context: QueueContext): void {
    this.#context = context;
    const kind = this.#p.aio ?? "sync";
    const entries = Math.min(
      MAX_ENGINE_ENTRIES,
      powerOfTwoAtLeast((this.#p.queueSize ?? 256) * (this.#p.numQueues ?? 1)),
    );
    try {
      this.#engine = this.#openEngine(kind, entries);
    } catch (e) {
      if (kind === "sync") throw e;
      log.warn(
        `queue worker: cannot open the ${kind} engine (${
          e instanceof Error ? e.message : String(e)
        }); using the sync engine`,
      );
      this.#engine = this.#openEngine("sync", entries);
    }
    const fd = this.#engine.completionFd;
    if (fd !== undefined) {
      this.#watchedFd = fd;
      const engine = this.#engine;
      const ready = engine.hasCompletions ? () => engine.hasCompletions!() : undefined;
      context.watchFd(fd, EPOLLIN, () => this.#reap(), ready);
    }
  }

  /**
   * With the sync engine every request of a round completes at its end
   * (`submitQueued`): signalling the first reply at once lets the driver
   * work on it while the rest are copied, as the fs device does (tmpfs,
   * 32 in flight: about twice the IOPS). io_uring's completions come in
   * the kernel's batches: one signal per round there (per completion was
   * no better on latency_fs, and costs a write per request).
   */
  notifiesEachCompletion(): boolean {
    return this.#engine?.completionFd === undefined;
  }

  /** Hands the operations queued by this batch's `handle` calls to the kernel. */
  submitQueued(): void {
    if (this.#queued > 0 && this.#engine !== undefined) {
      this.#queued = 0;
      this.#engine.submit();
    }
  }

  /** Stops watching the engine and releases it and the bounce buffers. */
  close(): void {
    if (this.#watchedFd !== undefined) this.#context?.unwatchFd(this.#watchedFd);
    this.#watchedFd = undefined;
    this.#engine?.close();
    this.#engine = undefined;
    this.#bounces?.close();
    this.#zeroPool?.close();
    if (this.#zeroes !== undefined) this.#zeroPool!.release(this.#zeroes);
    this.#zeroes = undefined;
  }

  /**
   * Processes one request: DEFERRED once its I/O is submitted, or the used
   * length when it completed at once. Without `attach` (no context) the
   * handler runs a sync engine and always returns the used length.
   *
   * The status byte is the last byte of the chain's last device-writable
   * segment, as in QEMU's virtio-blk (it takes the last byte of the last
   * in-iov, so a status descriptor longer than one byte, or one shared with
   * the data, is accepted; Linux always sends a 1-byte one). "Reachable"
   * means among the segments the chain walk returned: for a malformed chain
   * those parsed (and checked against guest memory) before the fault that
   * stopped the walk, or the whole chain when the fault did not stop it (a
   * chain longer than the queue size). Every request whose status byte is
   * reachable and still writable gets a status, malformed ones IOERR
   * (unknown types UNSUPP), and the used length counts data written plus
   * that byte (1 for a failure); with no reachable writable byte, or one
   * that no longer resolves, nothing is written and the used length is 0.
   *
   * Refused with IOERR before any I/O (virtio 1.2, 5.2.6 and 2.7.5.3): a
   * chain the walk found malformed; a header shorter than 16 bytes; an IN
   * with device-readable bytes after the header (readable data); an OUT with
   * device-writable bytes besides the status byte (writable data, which
   * includes a status descriptor longer than 1 byte: QEMU would ignore them,
   * vhostd refuses); a GET_ID with no writable byte before the status byte
   * (a shorter buffer than 20 bytes gets the id truncated, as in QEMU).
   */
  handle(chain: DescriptorChain, memory: GuestMemory, queueIndex: number): HandleResult {
    const writable = chain.writableLength();
    // The status byte is the last device-writable byte; without one nothing can be reported.
    if (writable < 1) {
      this.#warn(queueIndex, chain, "request has no writable status byte");
      return 0;
    }
    const statusOffset = writable - 1;
    let written = 0;
    let status: number = BlkStatus.OK;
    try {
      if (chain.error !== undefined) throw new RequestFailure(BlkStatus.IOERR, chain.error);
      if (!this.#readHeader(chain, memory)) {
        throw new RequestFailure(BlkStatus.IOERR, "request header shorter than 16 bytes");
      }
      const type = this.#headerView.getUint32(0, true);
      switch (type) {
        case BlkRequestType.IN: {
          const readable = chain.readableLength() - REQUEST_HEADER_SIZE;
          if (readable > 0) {
            throw new RequestFailure(
              BlkStatus.IOERR,
              `IN request with ${readable} device-readable data bytes`,
            );
          }
          const offset = this.#checkRange(this.#headerView, 8, statusOffset);
          return this.#startTransfer(chain, memory, queueIndex, statusOffset, type, offset);
        }
        case BlkRequestType.OUT: {
          if (this.#p.readOnly) {
            throw new RequestFailure(BlkStatus.IOERR, "write to a read-only disk");
          }
          if (statusOffset > 0) {
            throw new RequestFailure(
              BlkStatus.IOERR,
              `OUT request with ${statusOffset} device-writable bytes before the status byte`,
            );
          }
          const offset = this.#checkRange(
            this.#headerView,
            8,
            chain.readableLength() - REQUEST_HEADER_SIZE,
          );
          return this.#startTransfer(chain, memory, queueIndex, statusOffset, type, offset);
        }
        case BlkRequestType.FLUSH:
          if (this.#p.readOnly) {
            // Nothing was written: nothing to make durable.
            this.#shared.countSlot(CounterSlot.flushes, 1n);
            break;
          }
          return this.#start(chain, memory, queueIndex, statusOffset, type);
        case BlkRequestType.GET_ID:
          if (statusOffset === 0) {
            throw new RequestFailure(BlkStatus.IOERR, "GET_ID without a buffer for the id");
          }
          written = chain.writeTo(
            memory,
            0,
            this.#serial.subarray(0, Math.min(statusOffset, DEVICE_ID_LENGTH)),
          );
          this.#shared.countSlot(CounterSlot.getIds, 1n);
          break;
        case BlkRequestType.DISCARD:
        case BlkRequestType.WRITE_ZEROES:
          return this.#startDiscard(chain, memory, queueIndex, statusOffset, type);
        default:
          this.#shared.countSlot(CounterSlot.unsupported, 1n);
          status = BlkStatus.UNSUPP;
      }
    } catch (e) {
      status = e instanceof RequestFailure ? e.status : BlkStatus.IOERR;
      this.#warn(queueIndex, chain, e instanceof RequestFailure ? e.reason : describe(e));
      written = 0;
    }
    // A status byte that no longer resolves (memory table changed): nothing to report.
    if (!this.#writeStatus(chain, memory, statusOffset, status)) return 0;
    return written + 1;
  }

  /**
   * Copies the 16-byte request header into `#header`; false when the chain's
   * readable part is shorter. Reads it straight from guest memory when the
   * first segment holds it (Linux's layout), without a view or closure per request.
   */
  #readHeader(chain: DescriptorChain, memory: GuestMemory): boolean {
    const first = chain.segments[0];
    if (first !== undefined && !first.writable && first.len >= REQUEST_HEADER_SIZE) {
      const hit = memory.resolve(first.addr, REQUEST_HEADER_SIZE);
      if (hit !== undefined) {
        const from = hit.region.view;
        const to = this.#headerView;
        for (let at = 0; at < REQUEST_HEADER_SIZE; at += 4) {
          to.setUint32(at, from.getUint32(hit.offset + at, true), true);
        }
        return true;
      }
    }
    return chain.readFrom(memory, 0, this.#header) === REQUEST_HEADER_SIZE;
  }

  /**
   * Writes the status byte at `statusOffset` of the chain's writable part
   * and marks it dirty; false when it does not resolve. The status byte is
   * normally the last byte of the last segment: stored directly then.
   */
  #writeStatus(
    chain: DescriptorChain,
    memory: GuestMemory,
    statusOffset: number,
    status: number,
  ): boolean {
    const segments = chain.segments;
    const last = segments[segments.length - 1];
    if (last !== undefined && last.writable && statusOffset === chain.writableLength() - 1) {
      const gpa = last.addr + last.len - 1;
      const hit = memory.resolve(gpa, 1);
      if (hit === undefined) return false;
      hit.region.bytes[hit.offset] = status;
      memory.markWritten(gpa, 1);
      return true;
    }
    this.#status[0] = status;
    return chain.writeTo(memory, statusOffset, this.#status) === 1;
  }

  /**
   * The byte offset of the little-endian u64 sector number at `at` in
   * `view`, checked with `length` against the disk. Plain number arithmetic
   * (no BigInt per request): a sector whose high word is 2^21 or more lies
   * past 2^53 bytes, beyond any disk; below that `sector * 512` is exact up
   * to 2^53 and larger products still compare as past the end.
   */
  #checkRange(view: DataView, at: number, length: number): number {
    if (length % SECTOR_SIZE !== 0) {
      throw new RequestFailure(BlkStatus.IOERR, `length ${length} is not a multiple of 512`);
    }
    const high = view.getUint32(at + 4, true);
    const offset = (high * TWO_POW_32 + view.getUint32(at, true)) * SECTOR_SIZE;
    if (high >= SECTOR_HIGH_LIMIT || offset + length > this.#p.size) {
      throw new RequestFailure(
        BlkStatus.IOERR,
        `sectors ${view.getBigUint64(at, true)}+${length / SECTOR_SIZE} beyond the end of the disk`,
      );
    }
    return offset;
  }

  // ---------------------------------------------------------------------------
  // Request life cycle.

  /** Takes a request object and fills in what every request has. */
  #acquire(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    statusOffset: number,
    type: number,
  ): BlkRequest {
    const request = this.#free.pop() ?? new BlkRequest(this.#iovCapacity, this.#onDone);
    request.chain = chain;
    request.memory = memory;
    request.queueIndex = queueIndex;
    request.statusOffset = statusOffset;
    request.type = type;
    request.retries = 0;
    this.#engine ??= new SyncFileIoEngine();
    this.#inflight++;
    return request;
  }

  /** What `handle` returns for a request that was started (and may have completed already). */
  #deferred(): HandleResult {
    if (this.#context !== undefined) return DEFERRED;
    const used = this.#syncResult;
    this.#syncResult = -1;
    if (used < 0) throw new Error("the engine did not complete a request without a context");
    return used;
  }

  /** Writes the status byte, releases the request and completes its chain with `written + 1`. */
  #finish(request: BlkRequest, status: number, written: number): void {
    const { chain, memory, queueIndex } = request;
    // The status byte is marked in the dirty log now, after the data landed.
    const reported = this.#writeStatus(chain, memory, request.statusOffset, status);
    if (request.bounce !== undefined) {
      this.#bounces!.release(request.bounce);
      request.bounce = undefined;
    }
    request.chain = undefined!;
    request.memory = undefined!;
    this.#free.push(request);
    this.#inflight--;
    // A status byte that no longer resolves: the guest cannot learn the result (used 0).
    const used = reported ? written + 1 : 0;
    if (this.#context !== undefined) this.#context.complete(queueIndex, chain, used);
    else this.#syncResult = used;
  }

  /** Fails an in-flight request with IOERR (or `status`), logging why. */
  #fail(request: BlkRequest, reason: string, status: number = BlkStatus.IOERR): void {
    this.#warn(request.queueIndex, request.chain, reason);
    this.#finish(request, status, 0);
  }

  /** An engine operation finished: moves its request on; never throws. */
  #completed(request: BlkRequest, result: number): void {
    try {
      if ((result === -EAGAIN || result === -EINTR) && request.retries < MAX_RETRIES) {
        request.retries++;
        this.#resubmit(request);
        return;
      }
      if (result >= 0) request.retries = 0;
      switch (request.stage) {
        case Stage.Transfer:
          this.#transferred(request, result);
          break;
        case Stage.Flush:
          if (result < 0) return this.#fail(request, `fdatasync: ${errnoText(result)}`);
          this.#shared.countSlot(CounterSlot.flushes, 1n);
          this.#finish(request, BlkStatus.OK, 0);
          break;
        case Stage.Fallocate:
          this.#fallocated(request, result);
          break;
        case Stage.ZeroWrite:
          this.#zeroesWritten(request, result);
          break;
        case Stage.SyncAfter:
          if (result < 0) return this.#fail(request, `fdatasync: ${errnoText(result)}`);
          this.#discardDone(request);
          break;
      }
    } catch (e) {
      if (request.chain !== undefined) this.#fail(request, describe(e));
      else log.error(`blk request completion failed: ${describe(e)}`);
    }
  }

  /** Submits the operation `request` waits for again (after -EAGAIN or -EINTR). */
  #resubmit(request: BlkRequest): void {
    switch (request.stage) {
      case Stage.Transfer:
        return this.#submitPiece(request);
      case Stage.Flush:
      case Stage.SyncAfter:
        return this.#fsync(request);
      case Stage.ZeroWrite:
        return this.#writeZeroes(request);
      case Stage.Fallocate:
        return this.#nextRange(request);
    }
  }

  /** Runs `submit` and turns a synchronous failure into an IOERR completion. */
  #guarded(request: BlkRequest, submit: () => void): HandleResult {
    try {
      submit();
    } catch (e) {
      if (request.chain !== undefined) this.#fail(request, describe(e));
    }
    return this.#deferred();
  }

  /** Starts a FLUSH: one fdatasync covers every write completed before it was submitted. */
  #start(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    statusOffset: number,
    type: number,
  ): HandleResult {
    const request = this.#acquire(chain, memory, queueIndex, statusOffset, type);
    request.stage = Stage.Flush;
    return this.#guarded(request, () => this.#fsync(request));
  }

  #fsync(request: BlkRequest): void {
    this.#queued++;
    this.#engine!.fsync(this.#shared.backingFd, true, request.onDone);
  }

  // ---------------------------------------------------------------------------
  // IN and OUT.

  #startTransfer(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    statusOffset: number,
    type: number,
    fileOffset: number,
  ): HandleResult {
    const toFile = type === BlkRequestType.OUT;
    const request = this.#acquire(chain, memory, queueIndex, statusOffset, type);
    request.stage = Stage.Transfer;
    request.fileOffset = fileOffset;
    // The chain's bytes are one stream, readable part first: skipping it reaches the data
    // buffers without building a segment list per request.
    request.skip = toFile ? REQUEST_HEADER_SIZE : chain.readableLength();
    request.length = toFile ? chain.readableLength() - REQUEST_HEADER_SIZE : statusOffset;
    request.done = 0;
    request.dsync = toFile && !this.#shared.writeback;
    request.fd = this.#shared.backingFd;
    request.bounced = false;
    request.pieceLength = 0;
    // No closure per request (this is the hot path): #guarded's body, inline.
    try {
      const direct = this.#direct;
      if (direct !== undefined) {
        if (!isAligned(fileOffset, request.length, direct.offsetAlign)) {
          // Only when the file system's block is larger than a sector: the image without O_DIRECT.
          if (direct.bufferedFd >= 0) request.fd = direct.bufferedFd;
        } else {
          request.bounced = !this.#alignedForDirectIo(request, direct);
        }
      }
      if (request.length === 0) this.#transferred(request, 0);
      else this.#submitPiece(request);
    } catch (e) {
      if (request.chain !== undefined) this.#fail(request, describe(e));
    }
    return this.#deferred();
  }

  /** True when every guest buffer of the transfer meets the O_DIRECT alignment. */
  #alignedForDirectIo(request: BlkRequest, direct: DirectIo): boolean {
    const segments = request.chain.segments;
    const length = request.length;
    let toSkip = request.skip;
    let at = 0;
    for (let i = 0; i < segments.length && at < length; i++) {
      const segment = segments[i];
      if (toSkip >= segment.len) {
        toSkip -= segment.len;
        continue;
      }
      const len = Math.min(segment.len - toSkip, length - at);
      const host = request.memory.hostAddress(segment.addr + toSkip, len);
      if (host === undefined) throw new GuestBufferError("buffer outside guest memory");
      if (host % direct.memAlign !== 0 || len % direct.offsetAlign !== 0) return false;
      toSkip = 0;
      at += len;
    }
    if (at < length) throw new GuestBufferError("guest buffers shorter than the request");
    return true;
  }

  /**
   * Calls `visit(gpa, len, at)` for each guest piece of the chain's byte
   * stream `[start, start + length)` (`at`: offset of the piece in the
   * range) until it returns false; throws GuestBufferError when the chain is
   * shorter. Returns the bytes visited.
   */
  #walk(
    request: BlkRequest,
    start: number,
    length: number,
    visit: (gpa: number, len: number, at: number) => boolean,
  ): number {
    let stopped = false;
    const at = forEachPiece(request.chain.segments, start, length, (gpa, len, offset) => {
      const more = visit(gpa, len, offset);
      stopped = !more;
      return more;
    });
    if (at < length && !stopped) {
      throw new GuestBufferError("guest buffers shorter than the request");
    }
    return at;
  }

  /** Builds the next piece's iovecs (or fills a bounce buffer) and submits it. */
  #submitPiece(request: BlkRequest): void {
    const toFile = request.type === BlkRequestType.OUT;
    const start = request.skip + request.done;
    const remaining = request.length - request.done;
    const iov = request.iov;
    let count: number;
    if (request.bounced) {
      this.#bounces ??= new BouncePool(BOUNCE_SIZE, BOUNCE_KEEP);
      request.bounce ??= this.#bounces.acquire();
      const bounce = request.bounce;
      const length = Math.min(remaining, bounce.bytes.length);
      if (toFile) {
        this.#walk(request, start, length, (gpa, len, at) => {
          bounce.bytes.set(this.#guestBytes(request, gpa, len), at);
          return true;
        });
      }
      iov.set(0, bounce.address, length);
      request.pieceLength = length;
      count = 1;
    } else {
      // The chain's pieces of [start, start + remaining), at most iov.capacity of them (the
      // rest go in the next piece); a loop rather than #walk: no closure per request.
      const segments = request.chain.segments;
      const capacity = iov.capacity;
      let toSkip = start;
      let length = 0;
      count = 0;
      for (let i = 0; i < segments.length && length < remaining && count < capacity; i++) {
        const segment = segments[i];
        if (toSkip >= segment.len) {
          toSkip -= segment.len;
          continue;
        }
        const len = Math.min(segment.len - toSkip, remaining - length);
        const host = request.memory.hostAddress(segment.addr + toSkip, len);
        if (host === undefined) throw new GuestBufferError("buffer outside guest memory");
        iov.set(count++, host, len);
        toSkip = 0;
        length += len;
      }
      if (length < remaining && count < capacity) {
        throw new GuestBufferError("guest buffers shorter than the request");
      }
      request.pieceLength = length;
    }
    this.#queued++;
    const offset = request.fileOffset + request.done;
    if (toFile) {
      this.#engine!.writev(request.fd, iov, count, offset, request.dsync, request.onDone);
    } else {
      this.#engine!.readv(request.fd, iov, count, offset, request.onDone);
    }
  }

  /** A guest range as bytes; GuestBufferError when it no longer resolves. */
  #guestBytes(request: BlkRequest, gpa: number, len: number): Uint8Array {
    const bytes = request.memory.slice(gpa, len);
    if (bytes === undefined) throw new GuestBufferError("buffer outside guest memory");
    return bytes;
  }

  /** A readv/writev piece finished with `result` (bytes moved, or -errno). */
  #transferred(request: BlkRequest, result: number): void {
    const toFile = request.type === BlkRequestType.OUT;
    if (result < 0) {
      return this.#fail(request, `${toFile ? "writev" : "readv"}: ${errnoText(result)}`);
    }
    if (!toFile && result > 0) this.#landed(request, request.skip + request.done, result);
    request.done += result;
    if (result < request.pieceLength) {
      return this.#fail(
        request,
        toFile
          ? `short write (${request.done} of ${request.length} bytes)`
          : `short read: end of file after ${request.done} of ${request.length} bytes`,
      );
    }
    if (request.done < request.length) return this.#submitPiece(request);
    if (toFile) {
      this.#shared.countSlot(CounterSlot.writes, 1n);
      this.#shared.countSlot(CounterSlot.bytesWritten, this.#lengthAsBigInt(request.length));
      this.#finish(request, BlkStatus.OK, 0);
    } else {
      this.#shared.countSlot(CounterSlot.reads, 1n);
      this.#shared.countSlot(CounterSlot.bytesRead, this.#lengthAsBigInt(request.length));
      this.#finish(request, BlkStatus.OK, request.length);
    }
  }

  /** `length` as a BigInt for the byte counters; the last one is kept (one size dominates). */
  #lengthAsBigInt(length: number): bigint {
    if (length !== this.#lastLength) {
      this.#lastLength = length;
      this.#lastLengthBig = BigInt(length);
    }
    return this.#lastLengthBig;
  }

  /**
   * `bytes` bytes read for the stream range starting at `start` have landed:
   * copies them out of the bounce buffer if there is one, then marks exactly
   * those guest bytes written (dirty logging).
   */
  #landed(request: BlkRequest, start: number, bytes: number): void {
    const memory = request.memory;
    const bounce = request.bounced ? request.bounce! : undefined;
    if (bounce === undefined && memory.writeObserver === undefined) return; // nothing to mark
    this.#walk(request, start, bytes, (gpa, len, at) => {
      if (bounce !== undefined) {
        this.#guestBytes(request, gpa, len).set(bounce.bytes.subarray(at, at + len));
      }
      memory.markWritten(gpa, len);
      return true;
    });
  }

  // ---------------------------------------------------------------------------
  // DISCARD and WRITE_ZEROES.

  #startDiscard(
    chain: DescriptorChain,
    memory: GuestMemory,
    queueIndex: number,
    statusOffset: number,
    type: number,
  ): HandleResult {
    const isDiscard = type === BlkRequestType.DISCARD;
    if (this.#p.readOnly) {
      throw new RequestFailure(BlkStatus.IOERR, "discard/write-zeroes on a read-only disk");
    }
    const payload = chain.readableLength() - REQUEST_HEADER_SIZE;
    if (payload <= 0 || payload % DISCARD_SEGMENT_SIZE !== 0) {
      throw new RequestFailure(BlkStatus.IOERR, `discard payload of ${payload} bytes`);
    }
    const count = payload / DISCARD_SEGMENT_SIZE;
    if (count > this.#p.maxDiscardSegments) {
      throw new RequestFailure(
        BlkStatus.IOERR,
        `${count} discard segments, at most ${this.#p.maxDiscardSegments}`,
      );
    }
    const raw = new Uint8Array(payload);
    chain.readFrom(memory, REQUEST_HEADER_SIZE, raw);
    const view = new DataView(raw.buffer);
    const ranges: number[] = [];
    for (let i = 0; i < count; i++) {
      const sectors = view.getUint32(i * DISCARD_SEGMENT_SIZE + 8, true);
      const flags = view.getUint32(i * DISCARD_SEGMENT_SIZE + 12, true);
      if (sectors > this.#p.maxDiscardSectors) {
        throw new RequestFailure(BlkStatus.IOERR, `discard of ${sectors} sectors is too large`);
      }
      // Discard must not set flags; write-zeroes only knows UNMAP.
      if ((isDiscard && flags !== 0) || (!isDiscard && (flags & ~WRITE_ZEROES_FLAG_UNMAP) !== 0)) {
        throw new RequestFailure(BlkStatus.UNSUPP, `unknown segment flags 0x${flags.toString(16)}`);
      }
      const length = sectors * SECTOR_SIZE;
      const offset = this.#checkRange(view, i * DISCARD_SEGMENT_SIZE, length);
      if (length > 0) ranges.push(offset, length, flags & WRITE_ZEROES_FLAG_UNMAP);
    }
    const request = this.#acquire(chain, memory, queueIndex, statusOffset, type);
    request.ranges = ranges;
    request.rangeIndex = 0;
    request.modeIndex = 0;
    return this.#guarded(request, () => this.#nextRange(request));
  }

  /** The fallocate modes to try for the current range, in order. */
  #modes(request: BlkRequest): readonly number[] {
    if (request.type === BlkRequestType.DISCARD) return DISCARD_MODES;
    return request.ranges[request.rangeIndex * 3 + 2] !== 0 ? ZERO_UNMAP_MODES : ZERO_MODES;
  }

  /** Submits the fallocate of the current range and mode, or ends the request. */
  #nextRange(request: BlkRequest): void {
    const i = request.rangeIndex * 3;
    if (i >= request.ranges.length) {
      if (!this.#shared.writeback) {
        request.stage = Stage.SyncAfter;
        return this.#fsync(request);
      }
      return this.#discardDone(request);
    }
    request.stage = Stage.Fallocate;
    this.#queued++;
    this.#engine!.fallocate(
      this.#shared.backingFd,
      this.#modes(request)[request.modeIndex],
      request.ranges[i],
      request.ranges[i + 1],
      request.onDone,
    );
  }

  #fallocated(request: BlkRequest, result: number): void {
    if (result === -EOPNOTSUPP) {
      // Discard is a hint: a file system without hole punching still succeeds.
      if (request.type === BlkRequestType.DISCARD) return this.#rangeDone(request);
      if (++request.modeIndex < this.#modes(request).length) return this.#nextRange(request);
      request.stage = Stage.ZeroWrite;
      request.zeroDone = 0;
      request.zeroLength = request.ranges[request.rangeIndex * 3 + 1];
      return this.#writeZeroes(request);
    }
    if (result < 0) return this.#fail(request, `fallocate: ${errnoText(result)}`);
    this.#rangeDone(request);
  }

  #rangeDone(request: BlkRequest): void {
    request.rangeIndex++;
    request.modeIndex = 0;
    request.retries = 0;
    this.#nextRange(request);
  }

  /** Writes the next run of zeroes of the current range. */
  #writeZeroes(request: BlkRequest): void {
    this.#zeroPool ??= new BouncePool(ZERO_CHUNK, 1);
    this.#zeroes ??= this.#zeroPool.acquire();
    const offset = request.ranges[request.rangeIndex * 3] + request.zeroDone;
    const length = Math.min(ZERO_CHUNK, request.zeroLength - request.zeroDone);
    const direct = this.#direct;
    const fd = direct !== undefined && direct.bufferedFd >= 0 &&
        !isAligned(offset, length, direct.offsetAlign)
      ? direct.bufferedFd
      : this.#shared.backingFd;
    request.iov.set(0, this.#zeroes.address, length);
    request.pieceLength = length;
    this.#queued++;
    this.#engine!.writev(fd, request.iov, 1, offset, false, request.onDone);
  }

  #zeroesWritten(request: BlkRequest, result: number): void {
    if (result < 0) return this.#fail(request, `writev of zeroes: ${errnoText(result)}`);
    if (result < request.pieceLength) return this.#fail(request, "short write of zeroes");
    request.zeroDone += result;
    if (request.zeroDone < request.zeroLength) return this.#writeZeroes(request);
    this.#rangeDone(request);
  }

  #discardDone(request: BlkRequest): void {
    const isDiscard = request.type === BlkRequestType.DISCARD;
    this.#shared.countSlot(isDiscard ? CounterSlot.discards : CounterSlot.writeZeroes, 1n);
    this.#finish(request, BlkStatus.OK, 0);
  }

  // ---------------------------------------------------------------------------

  /** Runs the completions the engine has, then submits what they queued. */
  #reap(): void {
    const engine = this.#engine;
    if (engine === undefined) return;
    engine.reap();
    this.submitQueued();
  }

  #warn(queueIndex: number, chain: DescriptorChain, reason: string): void {
    this.#shared.countSlot(CounterSlot.errors, 1n);
    this.#failures.warn(queueIndex, chain.head, reason);
  }
}

const DISCARD_MODES = [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE] as const;
const ZERO_MODES = [FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE] as const;
const ZERO_UNMAP_MODES = [
  FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
] as const;

/** True when `offset` and `length` are multiples of `align`. */
function isAligned(offset: number, length: number, align: number): boolean {
  return offset % align === 0 && length % align === 0;
}

function errnoText(result: number): string {
  return errnoName(-result);
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Factory used by the Worker registry. */
export function createBlkRequestHandler(setup: WorkerSetup): QueueHandler {
  return new BlkRequestHandler(setup);
}
