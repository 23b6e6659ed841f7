/**
 * virtio-blk, data half: turns one descriptor chain into one I/O on the
 * backing. Runs inside a queue Worker; everything it touches of the guest is
 * bounds-checked (the chain's segments were checked against guest memory when
 * it was read), and every failure becomes a status byte, never an exception.
 *
 * @module
 */

import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocate,
  fdatasync,
  pwrite,
  SyscallError,
} from "../../../ffi/mod.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { DescriptorChain, Segment } from "../../virtqueue/descriptor_chain.ts";
import type { QueueHandler, WorkerSetup } from "../device.ts";
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
import { GuestBufferError, GuestFileIo } from "../guest_file_io.ts";
import { RequestFailureLog } from "../request_failure_log.ts";

/** Largest run of zeroes written at once when fallocate cannot zero a range. */
const ZERO_CHUNK = 1 << 20;

/** A request that failed: the status to report and why (for the log). */
class RequestFailure {
  constructor(readonly status: number, readonly reason: string) {}
}

/** Handles virtio-blk requests for one Worker. */
export class BlkRequestHandler implements QueueHandler {
  readonly #p: BlkWorkerParams;
  readonly #shared: BlkSharedState;
  readonly #io: GuestFileIo;
  readonly #header = new Uint8Array(REQUEST_HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #status = new Uint8Array(1);
  readonly #serial: Uint8Array;
  #zeroes: Uint8Array | undefined;
  readonly #failures = new RequestFailureLog();

  /** Builds the handler from the device's Worker setup. */
  constructor(setup: WorkerSetup) {
    this.#p = setup.params as BlkWorkerParams;
    this.#shared = new BlkSharedState(setup.shared);
    this.#io = new GuestFileIo(Math.max(this.#p.segMax, 1) + 2);
    const serial = new TextEncoder().encode(this.#p.serial);
    this.#serial = new Uint8Array(DEVICE_ID_LENGTH);
    this.#serial.set(serial.subarray(0, DEVICE_ID_LENGTH));
  }

  /** Processes one request; returns the number of bytes written to the guest. */
  handle(chain: DescriptorChain, memory: GuestMemory, queueIndex: number): number {
    const writable = chain.writableLength();
    // The status byte is the last device-writable byte; without one nothing can be reported.
    if (writable < 1) {
      this.#fail(queueIndex, chain, "request has no writable status byte");
      return 0;
    }
    const dataWritable = writable - 1;
    let written = 0;
    let status: number = BlkStatus.OK;
    try {
      if (chain.error !== undefined) throw new RequestFailure(BlkStatus.IOERR, chain.error);
      if (chain.readFrom(memory, 0, this.#header) < REQUEST_HEADER_SIZE) {
        throw new RequestFailure(BlkStatus.IOERR, "request header shorter than 16 bytes");
      }
      const type = this.#headerView.getUint32(0, true);
      const sector = this.#headerView.getBigUint64(8, true);
      switch (type) {
        case BlkRequestType.IN:
          written = this.#read(chain, memory, sector, dataWritable);
          break;
        case BlkRequestType.OUT:
          this.#write(chain, memory, sector);
          break;
        case BlkRequestType.FLUSH:
          this.#flush();
          break;
        case BlkRequestType.GET_ID:
          written = chain.writeTo(
            memory,
            0,
            this.#serial.subarray(0, Math.min(dataWritable, DEVICE_ID_LENGTH)),
          );
          this.#shared.countSlot(CounterSlot.getIds, 1n);
          break;
        case BlkRequestType.DISCARD:
        case BlkRequestType.WRITE_ZEROES:
          this.#discardOrZero(chain, memory, type);
          break;
        default:
          this.#shared.countSlot(CounterSlot.unsupported, 1n);
          status = BlkStatus.UNSUPP;
      }
    } catch (e) {
      if (e instanceof RequestFailure) {
        status = e.status;
        this.#fail(queueIndex, chain, e.reason);
      } else if (e instanceof SyscallError) {
        status = BlkStatus.IOERR;
        this.#fail(queueIndex, chain, `${e.syscall}: ${e.code}`);
      } else {
        status = BlkStatus.IOERR;
        this.#fail(queueIndex, chain, e instanceof Error ? e.message : String(e));
      }
      written = 0;
    }
    this.#status[0] = status;
    chain.writeTo(memory, dataWritable, this.#status);
    return written + 1;
  }

  #checkRange(sector: bigint, length: number): number {
    if (length % SECTOR_SIZE !== 0) {
      throw new RequestFailure(BlkStatus.IOERR, `length ${length} is not a multiple of 512`);
    }
    const offset = sector * BigInt(SECTOR_SIZE);
    if (offset + BigInt(length) > BigInt(this.#p.size)) {
      throw new RequestFailure(
        BlkStatus.IOERR,
        `sectors ${sector}+${length / SECTOR_SIZE} beyond the end of the disk`,
      );
    }
    return Number(offset);
  }

  #read(chain: DescriptorChain, memory: GuestMemory, sector: bigint, length: number): number {
    const offset = this.#checkRange(sector, length);
    // The chain's bytes are one stream, readable part first: skipping it reaches the data
    // buffers without building a segment list per request.
    this.#transfer(chain.segments, memory, chain.readableLength(), length, offset, false);
    this.#shared.countSlot(CounterSlot.reads, 1n);
    this.#shared.countSlot(CounterSlot.bytesRead, BigInt(length));
    return length;
  }

  #write(chain: DescriptorChain, memory: GuestMemory, sector: bigint): void {
    if (this.#p.readOnly) throw new RequestFailure(BlkStatus.IOERR, "write to a read-only disk");
    const length = chain.readableLength() - REQUEST_HEADER_SIZE;
    const offset = this.#checkRange(sector, length);
    this.#transfer(chain.segments, memory, REQUEST_HEADER_SIZE, length, offset, true);
    if (!this.#shared.writeback) fdatasync(this.#shared.backingFd);
    this.#shared.countSlot(CounterSlot.writes, 1n);
    this.#shared.countSlot(CounterSlot.bytesWritten, BigInt(length));
  }

  #flush(): void {
    if (!this.#p.readOnly) fdatasync(this.#shared.backingFd);
    this.#shared.countSlot(CounterSlot.flushes, 1n);
  }

  /** Moves exactly `length` bytes between the backing and the guest buffers, or fails the request. */
  #transfer(
    segments: readonly Segment[],
    memory: GuestMemory,
    skip: number,
    length: number,
    fileOffset: number,
    toFile: boolean,
  ): void {
    let moved: number;
    try {
      moved = this.#io.transfer(
        this.#shared.backingFd,
        segments,
        memory,
        skip,
        length,
        fileOffset,
        toFile,
      );
    } catch (e) {
      if (e instanceof GuestBufferError) throw new RequestFailure(BlkStatus.IOERR, e.message);
      throw e;
    }
    if (moved < length) {
      throw new RequestFailure(BlkStatus.IOERR, toFile ? "short write" : "read past end of file");
    }
  }

  #discardOrZero(chain: DescriptorChain, memory: GuestMemory, type: number): void {
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
    for (let i = 0; i < count; i++) {
      const sector = view.getBigUint64(i * DISCARD_SEGMENT_SIZE, true);
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
      const offset = this.#checkRange(sector, length);
      if (length === 0) continue;
      if (isDiscard) this.#punchHole(offset, length);
      else this.#zeroRange(offset, length, (flags & WRITE_ZEROES_FLAG_UNMAP) !== 0);
    }
    if (!this.#shared.writeback) fdatasync(this.#shared.backingFd);
    this.#shared.countSlot(isDiscard ? CounterSlot.discards : CounterSlot.writeZeroes, 1n);
  }

  #punchHole(offset: number, length: number): void {
    try {
      fallocate(this.#shared.backingFd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    } catch (e) {
      // Discard is a hint: a file system without hole punching still succeeds.
      if (!(e instanceof SyscallError && (e.code === "EOPNOTSUPP" || e.code === "ENOTSUP"))) {
        throw e;
      }
    }
  }

  #zeroRange(offset: number, length: number, mayUnmap: boolean): void {
    const modes = mayUnmap
      ? [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]
      : [FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE];
    for (const mode of modes) {
      try {
        fallocate(this.#shared.backingFd, mode, offset, length);
        return;
      } catch (e) {
        if (!(e instanceof SyscallError && (e.code === "EOPNOTSUPP" || e.code === "ENOTSUP"))) {
          throw e;
        }
      }
    }
    this.#zeroes ??= new Uint8Array(ZERO_CHUNK);
    for (let done = 0; done < length;) {
      const n = pwrite(
        this.#shared.backingFd,
        this.#zeroes.subarray(0, Math.min(ZERO_CHUNK, length - done)),
        offset + done,
      );
      if (n <= 0) throw new RequestFailure(BlkStatus.IOERR, "short write of zeroes");
      done += n;
    }
  }

  #fail(queueIndex: number, chain: DescriptorChain, reason: string): void {
    this.#shared.countSlot(CounterSlot.errors, 1n);
    this.#failures.warn(queueIndex, chain.head, reason);
  }
}

/** Factory used by the Worker registry. */
export function createBlkRequestHandler(setup: WorkerSetup): QueueHandler {
  return new BlkRequestHandler(setup);
}
