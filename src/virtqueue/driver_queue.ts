/**
 * The driver (guest) side of a split virtqueue. Unit tests use it as the mock
 * split queue over ArrayBuffer memory; the TypeScript front-end uses it over
 * real shared memory. Its writes are the guest's, so they are not reported to
 * the memory's write observer.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import type { Segment } from "./descriptor_chain.ts";
import {
  AVAIL_RING_ALIGN,
  availEventOffset,
  availRingSize,
  DESC_ADDR_OFFSET,
  DESC_FLAGS_OFFSET,
  DESC_LEN_OFFSET,
  DESC_NEXT_OFFSET,
  DESC_SIZE,
  DESC_TABLE_ALIGN,
  descTableSize,
  isValidQueueSize,
  MAX_INDIRECT_DESCRIPTORS,
  USED_RING_ALIGN,
  usedRingSize,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./layout.ts";
import { guestU16View, guestU32View } from "./ring_views.ts";

/** Where a driver queue's rings live. */
export interface DriverQueueOptions {
  /** Queue size (power of two, 1..32768). */
  size: number;
  /** Guest-physical address of the descriptor table (16-byte aligned). */
  descGpa: number;
  /** Guest-physical address of the available ring (2-byte aligned). */
  availGpa: number;
  /** Guest-physical address of the used ring (4-byte aligned). */
  usedGpa: number;
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx?: boolean;
}

/** Ring addresses computed by {@linkcode DriverQueue.layout}. */
export interface DriverQueueLayout {
  /** Descriptor table address. */
  descGpa: number;
  /** Available ring address. */
  availGpa: number;
  /** Used ring address. */
  usedGpa: number;
  /** First byte after the used ring. */
  end: number;
}

/** Options of {@linkcode DriverQueue.addChain}. */
export interface AddChainOptions {
  /** Write the segments as an indirect table at this guest address and use one ring descriptor. */
  indirectTableGpa?: number;
}

/** One element taken from the used ring. */
export interface UsedElement {
  /** Head descriptor index of the completed chain. */
  id: number;
  /** Bytes the device wrote. */
  len: number;
}

const TWO_POW_32 = 0x1_0000_0000;
/** End of the free list. */
const NO_DESCRIPTOR = -1;

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/** The driver side of one split virtqueue. */
export class DriverQueue {
  /** Queue size. */
  readonly size: number;
  readonly #memory: GuestMemory;
  readonly #eventIdx: boolean;
  readonly #desc: DataView;
  readonly #descOffset: number;
  readonly #avail: Uint16Array;
  readonly #used16: Uint16Array;
  readonly #used32: Uint32Array;
  /** Free list: #freeNext[i] is the free descriptor after i. */
  readonly #freeNext: Int32Array;
  #freeHead = 0;
  #freeCount: number;
  /** Descriptors allocated for each outstanding head, in chain order. */
  readonly #chains: (number[] | undefined)[];
  /** Local copy of avail.idx (only this side writes it). */
  #availIdx = 0;
  /** avail.idx at the previous `needsKick()`. */
  #availAtLastKick = 0;
  /** Next used ring index to read. */
  #lastUsed = 0;

  /** Resolves and zeroes the rings; throws on bad size, alignment or addresses. */
  constructor(memory: GuestMemory, opts: DriverQueueOptions) {
    const { size, descGpa, availGpa, usedGpa } = opts;
    if (!isValidQueueSize(size)) throw new RangeError(`invalid queue size ${size}`);
    if (descGpa % DESC_TABLE_ALIGN !== 0) throw new RangeError("descriptor table misaligned");
    if (availGpa % AVAIL_RING_ALIGN !== 0) throw new RangeError("available ring misaligned");
    if (usedGpa % USED_RING_ALIGN !== 0) throw new RangeError("used ring misaligned");
    const table = memory.resolve(descGpa, descTableSize(size));
    if (table === undefined) throw new RangeError("descriptor table outside guest memory");
    const avail = guestU16View(memory, availGpa, availRingSize(size), "available ring");
    if (typeof avail === "string") throw new RangeError(avail);
    const used16 = guestU16View(memory, usedGpa, usedRingSize(size), "used ring");
    if (typeof used16 === "string") throw new RangeError(used16);
    const used32 = guestU32View(memory, usedGpa, usedRingSize(size), "used ring");
    if (typeof used32 === "string") throw new RangeError(used32);

    this.size = size;
    this.#memory = memory;
    this.#eventIdx = opts.eventIdx ?? false;
    this.#desc = table.region.view;
    this.#descOffset = table.offset;
    this.#avail = avail;
    this.#used16 = used16;
    this.#used32 = used32;
    table.region.bytes.fill(0, table.offset, table.offset + descTableSize(size));
    avail.fill(0);
    used16.fill(0);
    this.#freeNext = new Int32Array(size);
    for (let i = 0; i < size; i++) this.#freeNext[i] = i + 1 < size ? i + 1 : NO_DESCRIPTOR;
    this.#freeCount = size;
    this.#chains = new Array(size).fill(undefined);
  }

  /** Contiguous, aligned ring addresses for a queue of `size` starting at `baseGpa`. */
  static layout(baseGpa: number, size: number): DriverQueueLayout {
    const descGpa = alignUp(baseGpa, DESC_TABLE_ALIGN);
    const availGpa = descGpa + descTableSize(size);
    const usedGpa = alignUp(availGpa + availRingSize(size), USED_RING_ALIGN);
    return { descGpa, availGpa, usedGpa, end: usedGpa + usedRingSize(size) };
  }

  /** Free descriptors left in the table. */
  freeCount(): number {
    return this.#freeCount;
  }

  /** The driver's avail.idx. */
  availIndex(): number {
    return this.#availIdx;
  }

  /** The device's used.idx. */
  usedIndex(): number {
    return Atomics.load(this.#used16, 1);
  }

  /**
   * Writes `segments` as a chain (from the free list, or as an indirect table
   * at `opts.indirectTableGpa` using one ring descriptor), publishes its head
   * in the available ring and returns it. Throws when the queue is full, the
   * chain is empty, or the indirect table does not fit in guest memory.
   */
  addChain(segments: readonly Segment[], opts: AddChainOptions = {}): number {
    if (segments.length === 0) throw new RangeError("a chain needs at least one segment");
    const tableGpa = opts.indirectTableGpa;
    const needed = tableGpa === undefined ? segments.length : 1;
    if (needed > this.#freeCount) {
      throw new RangeError(`virtqueue full: ${needed} descriptors needed, ${this.#freeCount} free`);
    }
    let head: number;
    if (tableGpa === undefined) {
      const allocated = this.#allocate(segments.length);
      for (let i = 0; i < segments.length; i++) {
        const s = segments[i];
        const last = i + 1 === segments.length;
        const flags = (s.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
        this.writeRawDescriptor(allocated[i], s.addr, s.len, flags, last ? 0 : allocated[i + 1]);
      }
      head = allocated[0];
    } else {
      if (segments.length > MAX_INDIRECT_DESCRIPTORS) {
        throw new RangeError("indirect table too long");
      }
      const tableLen = segments.length * DESC_SIZE;
      const table = this.#memory.resolve(tableGpa, tableLen);
      if (table === undefined) throw new RangeError("indirect table outside guest memory");
      const view = table.region.view;
      for (let i = 0; i < segments.length; i++) {
        const s = segments[i];
        const last = i + 1 === segments.length;
        const flags = (s.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
        writeDescriptor(view, table.offset + i * DESC_SIZE, s.addr, s.len, flags, last ? 0 : i + 1);
      }
      const allocated = this.#allocate(1);
      this.writeRawDescriptor(allocated[0], tableGpa, tableLen, VIRTQ_DESC_F_INDIRECT, 0);
      head = allocated[0];
    }
    this.publishRaw(head);
    return head;
  }

  /** Writes descriptor `index` verbatim (for hostile-chain tests); does not touch the free list. */
  writeRawDescriptor(index: number, addr: number, len: number, flags: number, next: number): void {
    if (!(index >= 0 && index < this.size)) {
      throw new RangeError(`descriptor ${index} out of range`);
    }
    writeDescriptor(this.#desc, this.#descOffset + index * DESC_SIZE, addr, len, flags, next);
  }

  /** Puts `head` (any value) in the next available slot and publishes avail.idx. */
  publishRaw(head: number): void {
    const slot = this.#availIdx & (this.size - 1);
    this.#avail[2 + slot] = head;
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    // Release: the ring element is visible before the index that covers it.
    Atomics.store(this.#avail, 1, this.#availIdx);
  }

  /**
   * Puts a freshly zeroed queue mid-stream: avail.idx = `availIdx` and
   * used.idx = `usedIdx` (both u16), as if that many chains had gone round
   * already. Test set-up for index wrap-around; the device side must start
   * with nextAvail/nextUsed equal to these.
   */
  setIndices(availIdx: number, usedIdx: number): void {
    this.#availIdx = availIdx & 0xffff;
    this.#availAtLastKick = this.#availIdx;
    this.#lastUsed = usedIdx & 0xffff;
    Atomics.store(this.#avail, 1, this.#availIdx);
    Atomics.store(this.#used16, 1, this.#lastUsed);
  }

  /**
   * Takes the next used element, returning its descriptors to the free list
   * when the head came from `addChain`; `undefined` when nothing is used.
   */
  takeUsed(): UsedElement | undefined {
    if (Atomics.load(this.#used16, 1) === this.#lastUsed) return undefined;
    const slot = this.#lastUsed & (this.size - 1);
    const id = this.#used32[1 + 2 * slot];
    const len = this.#used32[2 + 2 * slot];
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    const chain = id < this.size ? this.#chains[id] : undefined;
    if (chain !== undefined) {
      this.#chains[id] = undefined;
      for (let i = chain.length - 1; i >= 0; i--) {
        this.#freeNext[chain[i]] = this.#freeHead;
        this.#freeHead = chain[i];
      }
      this.#freeCount += chain.length;
    }
    return { id, len };
  }

  /**
   * Whether the device must be kicked for the chains published since the
   * previous call. With EVENT_IDX: whether avail.idx crossed the device's
   * avail_event; otherwise unless the device set VRING_USED_F_NO_NOTIFY.
   */
  needsKick(): boolean {
    const newIdx = this.#availIdx;
    const oldIdx = this.#availAtLastKick;
    this.#availAtLastKick = newIdx;
    if (newIdx === oldIdx) return false;
    if (this.#eventIdx) {
      const availEvent = Atomics.load(this.#used16, availEventOffset(this.size) / 2);
      return vringNeedEvent(availEvent, newIdx, oldIdx);
    }
    return (Atomics.load(this.#used16, 0) & VRING_USED_F_NO_NOTIFY) === 0;
  }

  /** Writes used_event: with EVENT_IDX, interrupt me once used.idx passes `idx`. */
  setUsedEvent(idx: number): void {
    Atomics.store(this.#avail, 2 + this.size, idx & 0xffff);
  }

  /** Sets or clears VRING_AVAIL_F_NO_INTERRUPT. */
  suppressInterrupts(on: boolean): void {
    const flags = Atomics.load(this.#avail, 0);
    Atomics.store(
      this.#avail,
      0,
      on ? flags | VRING_AVAIL_F_NO_INTERRUPT : flags & ~VRING_AVAIL_F_NO_INTERRUPT,
    );
  }

  #allocate(count: number): number[] {
    const allocated: number[] = [];
    for (let i = 0; i < count; i++) {
      const index = this.#freeHead;
      allocated.push(index);
      this.#freeHead = this.#freeNext[index];
    }
    this.#freeCount -= count;
    this.#chains[allocated[0]] = allocated;
    return allocated;
  }
}

function writeDescriptor(
  view: DataView,
  at: number,
  addr: number,
  len: number,
  flags: number,
  next: number,
): void {
  view.setUint32(at + DESC_ADDR_OFFSET, addr % TWO_POW_32, true);
  view.setUint32(at + DESC_ADDR_OFFSET + 4, Math.floor(addr / TWO_POW_32), true);
  view.setUint32(at + DESC_LEN_OFFSET, len, true);
  view.setUint16(at + DESC_FLAGS_OFFSET, flags, true);
  view.setUint16(at + DESC_NEXT_OFFSET, next, true);
}
