/**
 * Descriptor chains of a split virtqueue: walking the descriptor table from a
 * head index, following one level of indirect table, validating everything
 * the guest controls, and copying request/response bytes.
 *
 * Guest data never makes this module throw: a malformed chain comes back with
 * `error` set and the segments parsed before the fault.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import {
  DESC_ADDR_OFFSET,
  DESC_FLAGS_OFFSET,
  DESC_LEN_OFFSET,
  DESC_NEXT_OFFSET,
  DESC_SIZE,
  descTableSize,
  isValidQueueSize,
  MAX_INDIRECT_DESCRIPTORS,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "./layout.ts";

/** One guest buffer of a chain. */
export interface Segment {
  /** Guest-physical address of the first byte. */
  addr: number;
  /** Length in bytes. */
  len: number;
  /** True for a device-writable buffer, false for a device-readable one. */
  writable: boolean;
}

/** Limits a caller may put on a chain beyond the ones virtio imposes. */
export interface ChainLimits {
  /**
   * Most descriptors (indirect-table pointers excluded) a chain may have.
   * Without it a chain is bounded by the queue size for the main table plus
   * the length of its indirect table; a longer chain gets an error.
   */
  maxSegments?: number;
}

/** Options of {@linkcode readDescriptorChain}. */
export interface ReadChainOptions extends ChainLimits {
  /** True when VIRTIO_F_RING_INDIRECT_DESC was negotiated; otherwise INDIRECT is an error. */
  indirect?: boolean;
}

const TWO_POW_32 = 0x1_0000_0000;
/** High word limit that keeps a u64 address exact as a JS number (2^53). */
const MAX_ADDR_HIGH = 0x20_0000;
/** Largest total chain length: used.len is a u32. */
const MAX_CHAIN_BYTES = 0xffff_ffff;

/**
 * A parsed descriptor chain. Readable segments always come before writable
 * ones. Zero-length descriptors are skipped (they count towards the limits
 * but produce no segment and are not address-checked). A descriptor whose
 * buffer spans two adjacent memory regions becomes one segment per region, so
 * every segment resolves inside a single region.
 */
export class DescriptorChain {
  /** Head descriptor index: the id to put in the used ring. */
  readonly head: number;
  /** Buffers in chain order; readable ones first. */
  readonly segments: Segment[];
  /** Why the chain is malformed; `segments` then holds what was parsed before the fault. */
  readonly error: string | undefined;
  /** Descriptors walked (indirect-table pointers excluded, zero-length ones included). */
  readonly descriptorCount: number;
  readonly #readableCount: number;
  readonly #readableBytes: number;
  readonly #writableBytes: number;

  /** Builds a chain from already validated parts; use {@linkcode readDescriptorChain}. */
  constructor(
    head: number,
    segments: Segment[],
    error: string | undefined,
    descriptorCount = segments.length,
  ) {
    this.head = head;
    this.segments = segments;
    this.error = error;
    this.descriptorCount = descriptorCount;
    let readableCount = 0;
    let readableBytes = 0;
    let writableBytes = 0;
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i];
      if (s.writable) {
        writableBytes += s.len;
      } else {
        readableBytes += s.len;
        readableCount = i + 1;
      }
    }
    this.#readableCount = readableCount;
    this.#readableBytes = readableBytes;
    this.#writableBytes = writableBytes;
  }

  /** Total bytes of the device-readable segments. */
  readableLength(): number {
    return this.#readableBytes;
  }

  /** Total bytes of the device-writable segments. */
  writableLength(): number {
    return this.#writableBytes;
  }

  /** The device-readable segments, in order. */
  readableSegments(): Segment[] {
    return this.segments.slice(0, this.#readableCount);
  }

  /** The device-writable segments, in order. */
  writableSegments(): Segment[] {
    return this.segments.slice(this.#readableCount);
  }

  /**
   * Copies readable bytes starting `offset` bytes into the readable part
   * (across segment boundaries) into `dest`. Returns the bytes copied: fewer
   * than `dest.length` when the readable part ends first, or when a segment no
   * longer resolves (memory table changed under the chain).
   */
  readFrom(memory: GuestMemory, offset: number, dest: Uint8Array): number {
    if (!(offset >= 0) || offset >= this.#readableBytes) return 0;
    const length = Math.min(dest.length, this.#readableBytes - offset);
    const first = this.segments[0];
    if (offset + length <= first.len) {
      // All in the first segment (a request header, most requests): one copy, no walk.
      return memory.copyOut(first.addr + offset, dest, 0, length) ? length : 0;
    }
    let copied = 0;
    forEachPiece(this.segments, offset, length, (gpa, len, at) => {
      if (!memory.copyOut(gpa, dest, at, len)) return false;
      copied += len;
      return true;
    });
    return copied;
  }

  /**
   * Copies `src` into the writable part starting `offset` bytes into it
   * (across segment boundaries), reporting every written range to
   * `memory.markWritten`. Returns the bytes copied (short at the end of the
   * writable part or when a segment no longer resolves).
   */
  writeTo(memory: GuestMemory, offset: number, src: Uint8Array): number {
    if (!(offset >= 0)) return 0;
    const first = this.segments[this.#readableCount];
    if (first !== undefined && offset + src.length <= first.len) {
      // All in the first writable segment (most replies): one copy, no walk.
      if (src.length === 0) return 0;
      const gpa = first.addr + offset;
      if (!memory.copyIn(gpa, src)) return 0;
      memory.markWritten(gpa, src.length);
      return src.length;
    }
    let copied = 0;
    // Writable segments follow the readable ones in the chain's byte stream.
    forEachPiece(this.segments, this.#readableBytes + offset, src.length, (gpa, len, at) => {
      if (!memory.copyIn(gpa, src.subarray(at, at + len))) return false;
      memory.markWritten(gpa, len);
      copied += len;
      return true;
    });
    return copied;
  }
}

/**
 * Visits the guest pieces of bytes `[start, start + length)` of the byte
 * stream that `segments` form (all of a chain's buffers in order, readable
 * ones first): `visit(gpa, len, at)` gets each piece's guest address, its
 * length and its offset inside the range, in order, until it returns false.
 * Returns the bytes visited: less than `length` when the segments end first
 * or `visit` stopped. The walk every copy uses; the iovec builder of
 * file I/O (guest_file_io.ts pointIovecsAt) walks the same way without a
 * callback, once per READ and WRITE.
 */
export function forEachPiece(
  segments: readonly Segment[],
  start: number,
  length: number,
  visit: (gpa: number, len: number, at: number) => boolean,
): number {
  let toSkip = start;
  let at = 0;
  for (let i = 0; i < segments.length && at < length; i++) {
    const seg = segments[i];
    if (toSkip >= seg.len) {
      toSkip -= seg.len;
      continue;
    }
    const len = Math.min(seg.len - toSkip, length - at);
    const more = visit(seg.addr + toSkip, len, at);
    at += len;
    toSkip = 0;
    if (!more) return at;
  }
  return at;
}

/**
 * Appends `[addr, addr+len)` to `segments`, split at region boundaries when
 * it spans adjacent regions. Returns false (leaving `segments` unchanged)
 * when any byte lies outside guest memory.
 */
function pushSegment(
  memory: GuestMemory,
  segments: Segment[],
  addr: number,
  len: number,
  writable: boolean,
): boolean {
  if (memory.contains(addr, len)) {
    segments.push({ addr, len, writable });
    return true;
  }
  const before = segments.length;
  let at = addr;
  let left = len;
  while (left > 0) {
    const hit = memory.resolve(at, 0);
    if (hit === undefined) {
      segments.length = before;
      return false;
    }
    const piece = Math.min(left, hit.region.size - hit.offset);
    segments.push({ addr: at, len: piece, writable });
    at += piece;
    left -= piece;
  }
  return true;
}

/** How an error names a descriptor; built only for errors (not a string per descriptor walked). */
function descriptorName(inIndirect: boolean, index: number): string {
  return inIndirect ? `indirect descriptor ${index}` : `descriptor ${index}`;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * Walks a chain through a descriptor table already resolved to `tableView`
 * at byte `tableOffset` (the split queue caches this). Same rules as
 * {@linkcode readDescriptorChain}; `maxDescriptors` is the caller's extra cap.
 */
export function walkDescriptorChain(
  memory: GuestMemory,
  tableView: DataView,
  tableOffset: number,
  queueSize: number,
  head: number,
  indirectAllowed: boolean,
  maxDescriptors: number,
): DescriptorChain {
  const segments: Segment[] = [];
  if (!(head >= 0 && head < queueSize)) {
    return new DescriptorChain(head, segments, `head index ${head} >= queue size ${queueSize}`, 0);
  }
  let view = tableView;
  let base = tableOffset;
  let tableLen = queueSize;
  let index = head;
  // ttl: descriptors this table may still yield; running out with NEXT set means a loop.
  let ttl = queueSize;
  let inIndirect = false;
  let count = 0;
  let total = 0;
  let sawWritable = false;
  let error: string | undefined;
  // A chain longer than the queue size (virtio 1.2, 2.7.5.3.1: "A driver MUST NOT create a
  // descriptor chain longer than the Queue Size of the device") is malformed, but its links
  // are sound and bounded (the indirect table is in guest memory and at most
  // MAX_INDIRECT_DESCRIPTORS long): the walk goes on so that the caller still learns the
  // chain's buffers (and can write an error status), and `error` reports it unless a
  // structural fault, which stops the walk, comes later.
  let tooLong: string | undefined;

  for (;;) {
    if (ttl === 0) {
      error = inIndirect
        ? `indirect chain longer than its table of ${tableLen} (loop?)`
        : `chain longer than the queue size ${queueSize} (loop?)`;
      break;
    }
    ttl--;
    const at = base + index * DESC_SIZE;
    const addrLow = view.getUint32(at + DESC_ADDR_OFFSET, true);
    const addrHigh = view.getUint32(at + DESC_ADDR_OFFSET + 4, true);
    const len = view.getUint32(at + DESC_LEN_OFFSET, true);
    const flags = view.getUint16(at + DESC_FLAGS_OFFSET, true);
    const next = view.getUint16(at + DESC_NEXT_OFFSET, true);

    if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
      if (!indirectAllowed) {
        error = `${
          descriptorName(inIndirect, index)
        }: INDIRECT flag but indirect descriptors were not negotiated`;
        break;
      }
      if (inIndirect) {
        error = `${descriptorName(inIndirect, index)}: nested indirect table`;
        break;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
        error = `${descriptorName(inIndirect, index)}: INDIRECT together with NEXT`;
        break;
      }
      if (len === 0 || len % DESC_SIZE !== 0 || len > DESC_SIZE * MAX_INDIRECT_DESCRIPTORS) {
        error = `${descriptorName(inIndirect, index)}: bad indirect table length ${len}`;
        break;
      }
      const tableGpa = addrHigh * TWO_POW_32 + addrLow;
      const table = addrHigh < MAX_ADDR_HIGH ? memory.resolve(tableGpa, len) : undefined;
      if (table === undefined) {
        error = `${descriptorName(inIndirect, index)}: indirect table [${
          hex(tableGpa)
        }, +${len}) is not inside guest memory`;
        break;
      }
      view = table.region.view;
      base = table.offset;
      tableLen = len / DESC_SIZE;
      if (tableLen > queueSize) {
        tooLong = `${
          descriptorName(inIndirect, index)
        }: indirect table of ${tableLen} descriptors is longer than the queue size ${queueSize}`;
      }
      index = 0;
      ttl = tableLen;
      inIndirect = true;
      continue;
    }

    count++;
    if (count > maxDescriptors) {
      error = `chain has more than ${maxDescriptors} descriptors`;
      break;
    }
    if (len > 0) {
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!writable && sawWritable) {
        error = `${descriptorName(inIndirect, index)}: readable descriptor after a writable one`;
        break;
      }
      total += len;
      if (total > MAX_CHAIN_BYTES) {
        error = `chain length ${total} exceeds 2^32 - 1 bytes`;
        break;
      }
      const addr = addrHigh * TWO_POW_32 + addrLow;
      if (addrHigh >= MAX_ADDR_HIGH || !pushSegment(memory, segments, addr, len, writable)) {
        error = `${descriptorName(inIndirect, index)}: buffer [${
          hex(addr)
        }, +${len}) is not inside guest memory`;
        break;
      }
      if (writable) sawWritable = true;
    }
    if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
    if (next >= tableLen) {
      error = `${descriptorName(inIndirect, index)}: next index ${next} >= ${
        inIndirect ? "indirect table" : "queue"
      } size ${tableLen}`;
      break;
    }
    index = next;
  }
  if (tooLong === undefined && count > queueSize) {
    tooLong = `chain of ${count} descriptors is longer than the queue size ${queueSize}`;
  }
  return new DescriptorChain(head, segments, error ?? tooLong, count);
}

/**
 * Reads the chain starting at descriptor `head` of the table at guest-physical
 * `descTableGpa`. Follows NEXT links at most `queueSize` times in the main
 * table, and one level of INDIRECT (only with `options.indirect`). Refuses:
 * head or next out of range, loops, INDIRECT with NEXT, nested INDIRECT, an
 * indirect table that is empty, not a multiple of 16 bytes, over 65536
 * entries or outside guest memory, a readable descriptor after a writable
 * one, a buffer outside guest memory, and a total length over 2^32 - 1; the
 * walk stops at the first of these and `segments` holds the buffers before
 * it. Also refuses a chain longer than the queue size: an indirect table of
 * more entries than the queue size, or more descriptors in all (direct ones
 * plus the table's); that fault does not stop the walk, so `segments` is the
 * whole chain (unless a fault of the first kind follows, whose message wins).
 * Never throws for guest data: the result's `error` says what was wrong.
 */
export function readDescriptorChain(
  memory: GuestMemory,
  descTableGpa: number,
  queueSize: number,
  head: number,
  options: ReadChainOptions = {},
): DescriptorChain {
  if (!isValidQueueSize(queueSize)) {
    return new DescriptorChain(head, [], `invalid queue size ${queueSize}`, 0);
  }
  const table = memory.resolve(descTableGpa, descTableSize(queueSize));
  if (table === undefined) {
    return new DescriptorChain(
      head,
      [],
      `descriptor table at ${hex(descTableGpa)} is not inside guest memory`,
      0,
    );
  }
  return walkDescriptorChain(
    memory,
    table.region.view,
    table.offset,
    queueSize,
    head,
    options.indirect ?? false,
    options.maxSegments ?? Infinity,
  );
}
