/**
 * The device side of a split virtqueue: pops available chains, pushes used
 * elements and decides when the driver needs an interrupt. The queue is plain
 * state ({@linkcode SplitQueueState}) plus views cached by `attach()`, so it
 * can be saved, restored and re-attached after a memory table change.
 *
 * No I/O here: the caller signals the call eventfd when
 * `needsNotification()` says so.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import { type DescriptorChain, walkDescriptorChain } from "./descriptor_chain.ts";
import {
  AVAIL_RING_ALIGN,
  availEventOffset,
  availRingSize,
  DESC_TABLE_ALIGN,
  descTableSize,
  isValidQueueSize,
  USED_ELEM_SIZE,
  USED_FLAGS_OFFSET,
  USED_IDX_OFFSET,
  USED_RING_ALIGN,
  USED_RING_OFFSET,
  usedRingSize,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./layout.ts";
import { guestU16View, guestU32View } from "./ring_views.ts";

/** Everything needed to rebuild a queue: save it for migration, pass it back to the constructor. */
export interface SplitQueueState {
  /** Queue size (power of two, 1..32768). */
  size: number;
  /** Guest-physical address of the descriptor table. */
  descGpa: number;
  /** Guest-physical address of the available ring. */
  availGpa: number;
  /** Guest-physical address of the used ring. */
  usedGpa: number;
  /** Next available ring index to read (u16, wrapping). */
  nextAvail: number;
  /** Next used ring index to write (u16, wrapping). */
  nextUsed: number;
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_RING_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /**
   * Guest-physical address at which used ring writes are logged (the ring's
   * LOG flag is set); used ring writes are reported at `usedGpa` otherwise.
   */
  logUsedGpa?: number;
}

/** What `popAvail` returns when the available index is corrupt. */
export interface RingError {
  /** Why the ring cannot be trusted; the device should stop the ring. */
  ringError: string;
}

/** The device side of one split virtqueue. */
export class SplitQueue {
  #state: SplitQueueState;
  #memory: GuestMemory | undefined;
  #descView: DataView | undefined;
  #descOffset = 0;
  #avail: Uint16Array | undefined;
  #used16: Uint16Array | undefined;
  #used32: Uint32Array | undefined;
  /** u16 index of used_event in the avail view, of avail_event in the used16 view. */
  #usedEventIndex = 0;
  #availEventIndex = 0;
  /** Used elements pushed since the last `needsNotification()`. */
  #addedSinceCheck = 0;
  #notificationsEnabled = true;
  /**
   * avail.idx as last read (with acquire semantics). Chains up to it are
   * published for good (the index only moves forward), so popAvail takes
   * them without reading the index again, one atomic load per batch instead
   * of per chain; it reads again only on reaching it. Equal to nextAvail
   * whenever nothing is known beyond it (after attach, detach, setNextAvail).
   */
  #availSeen = 0;

  /** Creates a detached queue from plain state (validated by `attach`). */
  constructor(state: SplitQueueState) {
    this.#state = { ...state };
  }

  /** Queue size. */
  get size(): number {
    return this.#state.size;
  }

  /** True when the driver published chains not popped yet (reads avail.idx; no side effect). */
  hasAvailable(): boolean {
    if (this.#avail === undefined) return false;
    return this.#availSeen !== this.#state.nextAvail ||
      Atomics.load(this.#avail, 1) !== this.#state.nextAvail;
  }

  /** Next used ring index to write (the used index once the last push is published). */
  get nextUsed(): number {
    return this.#state.nextUsed;
  }

  /** True between a successful `attach()` and `detach()`. */
  get attached(): boolean {
    return this.#memory !== undefined;
  }

  /** A copy of the plain state. */
  state(): SplitQueueState {
    return { ...this.#state };
  }

  /**
   * Resolves the three rings in `memory` and caches views over them. Checks
   * the queue size, the alignment of each ring, and that each ring lies
   * inside one guest memory region. Returns an error string (and stays
   * detached) instead of throwing.
   */
  attach(memory: GuestMemory): string | undefined {
    this.detach();
    const s = this.#state;
    if (!isValidQueueSize(s.size)) return `invalid queue size ${s.size}`;
    if (!(s.nextAvail >= 0 && s.nextAvail <= 0xffff && Number.isInteger(s.nextAvail))) {
      return `invalid next avail index ${s.nextAvail}`;
    }
    if (!(s.nextUsed >= 0 && s.nextUsed <= 0xffff && Number.isInteger(s.nextUsed))) {
      return `invalid next used index ${s.nextUsed}`;
    }
    if (s.descGpa % DESC_TABLE_ALIGN !== 0) {
      return `descriptor table at 0x${s.descGpa.toString(16)} is not 16-byte aligned`;
    }
    if (s.availGpa % AVAIL_RING_ALIGN !== 0) {
      return `available ring at 0x${s.availGpa.toString(16)} is not 2-byte aligned`;
    }
    if (s.usedGpa % USED_RING_ALIGN !== 0) {
      return `used ring at 0x${s.usedGpa.toString(16)} is not 4-byte aligned`;
    }
    const table = memory.resolve(s.descGpa, descTableSize(s.size));
    if (table === undefined) {
      return `descriptor table [0x${s.descGpa.toString(16)}, +${
        descTableSize(s.size)
      }) is not inside guest memory`;
    }
    const avail = guestU16View(memory, s.availGpa, availRingSize(s.size), "available ring");
    if (typeof avail === "string") return avail;
    const usedBytes = usedRingSize(s.size);
    const used16 = guestU16View(memory, s.usedGpa, usedBytes, "used ring");
    if (typeof used16 === "string") return used16;
    const used32 = guestU32View(memory, s.usedGpa, usedBytes, "used ring");
    if (typeof used32 === "string") return used32;

    this.#memory = memory;
    this.#descView = table.region.view;
    this.#descOffset = table.offset;
    this.#avail = avail;
    this.#used16 = used16;
    this.#used32 = used32;
    this.#usedEventIndex = 2 + s.size;
    this.#availEventIndex = availEventOffset(s.size) / 2;
    return undefined;
  }

  /** Drops every view into guest memory; call before the memory is unmapped. */
  detach(): void {
    this.#availSeen = this.#state.nextAvail;
    this.#memory = undefined;
    this.#descView = undefined;
    this.#avail = undefined;
    this.#used16 = undefined;
    this.#used32 = undefined;
  }

  /** Sets `nextUsed` from the used ring's idx (for a ring started on a live used ring). */
  syncUsedFromRing(): void {
    this.#availView();
    this.#state.nextUsed = Atomics.load(this.#used16!, 1);
  }

  /** The driver's avail.idx (read with acquire semantics). */
  availIndex(): number {
    return Atomics.load(this.#availView(), 1);
  }

  /** Chains published but not popped yet; an error string when avail.idx ran more than `size` ahead. */
  pendingCount(): number | string {
    const pending = (this.availIndex() - this.#state.nextAvail) & 0xffff;
    return pending > this.#state.size ? this.#ringError(pending) : pending;
  }

  /**
   * Takes the next available chain. Returns `undefined` when the ring is
   * empty and a {@linkcode RingError} when avail.idx is more than `size`
   * ahead. A malformed chain is still returned (with `error` set) and
   * consumed: the caller completes it with an error status or stops the ring.
   */
  popAvail(): DescriptorChain | undefined | RingError {
    const avail = this.#availView();
    const s = this.#state;
    const nextAvail = s.nextAvail;
    if (this.#availSeen === nextAvail) {
      const availIdx = Atomics.load(avail, 1);
      const pending = (availIdx - nextAvail) & 0xffff;
      if (pending === 0) return undefined;
      if (pending > s.size) return { ringError: this.#ringError(pending) };
      this.#availSeen = availIdx;
    }
    // The acquire load of avail.idx (now or for an earlier chain of this batch) orders this
    // read after the driver's store.
    const head = avail[2 + (nextAvail & (s.size - 1))];
    s.nextAvail = (nextAvail + 1) & 0xffff;
    if (s.eventIdx && this.#notificationsEnabled) this.#writeAvailEvent(s.nextAvail);
    return walkDescriptorChain(
      this.#memory!,
      this.#descView!,
      this.#descOffset,
      s.size,
      head,
      s.indirect,
      Infinity,
    );
  }

  /**
   * Reads the chain at descriptor `head` again without touching the
   * available ring: a request that was in flight when a previous back-end
   * went away is resubmitted this way (inflight tracking).
   */
  chainAt(head: number): DescriptorChain {
    this.#availView();
    const s = this.#state;
    return walkDescriptorChain(
      this.#memory!,
      this.#descView!,
      this.#descOffset,
      s.size,
      head,
      s.indirect,
      Infinity,
    );
  }

  /**
   * Moves the next available index (inflight recovery: the chains between
   * the used index and this one were popped by a previous back-end).
   */
  setNextAvail(index: number): void {
    this.#state.nextAvail = index & 0xffff;
    this.#availSeen = this.#state.nextAvail;
  }

  /**
   * Gives chain `head` back to the driver with `len` bytes written: stores
   * the used element, then publishes used.idx (element before index), and
   * reports both writes to the memory's write observer.
   */
  pushUsed(head: number, len: number): void {
    this.#availView();
    const used16 = this.#used16!;
    const used32 = this.#used32!;
    const s = this.#state;
    const slot = s.nextUsed & (s.size - 1);
    used32[1 + 2 * slot] = head >>> 0;
    used32[2 + 2 * slot] = len >>> 0;
    s.nextUsed = (s.nextUsed + 1) & 0xffff;
    // Release: the sequentially consistent store publishes the element written above.
    Atomics.store(used16, 1, s.nextUsed);
    this.#addedSinceCheck++;
    const memory = this.#memory!;
    if (memory.writeObserver !== undefined) {
      const logBase = s.logUsedGpa ?? s.usedGpa;
      memory.markWritten(logBase + USED_RING_OFFSET + USED_ELEM_SIZE * slot, USED_ELEM_SIZE);
      memory.markWritten(logBase + USED_IDX_OFFSET, 2);
    }
  }

  /**
   * Whether the driver must be interrupted for the used elements pushed
   * since the previous call. With EVENT_IDX: whether used.idx crossed the
   * driver's used_event since that call; otherwise unless the driver set
   * VRING_AVAIL_F_NO_INTERRUPT. False when nothing was pushed since.
   */
  needsNotification(): boolean {
    const avail = this.#availView();
    const added = this.#addedSinceCheck;
    this.#addedSinceCheck = 0;
    if (added === 0) return false;
    if (!this.#state.eventIdx) {
      return (Atomics.load(avail, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    }
    // 65536 pushes without a check make the u16 window ambiguous: notify to be safe.
    if (added > 0xffff) return true;
    const newIdx = this.#state.nextUsed;
    // Sequentially consistent load after the used.idx store: the driver's
    // used_event update cannot be missed (the store/load fence of the spec).
    const usedEvent = Atomics.load(avail, this.#usedEventIndex);
    return vringNeedEvent(usedEvent, newIdx, newIdx - added);
  }

  /**
   * Asks the driver not to kick. Without EVENT_IDX sets VRING_USED_F_NO_NOTIFY;
   * with it, avail_event is simply no longer advanced, so the driver's next
   * kick comes only when it passes the last published value.
   */
  disableNotifications(): void {
    this.#notificationsEnabled = false;
    if (!this.#state.eventIdx) this.#setUsedFlags(0, VRING_USED_F_NO_NOTIFY);
  }

  /**
   * Asks the driver to kick again: with EVENT_IDX writes avail_event =
   * nextAvail, otherwise clears VRING_USED_F_NO_NOTIFY. Returns true when
   * chains arrived meanwhile (the caller must process them, as no kick will
   * come for them).
   */
  enableNotifications(): boolean {
    this.#notificationsEnabled = true;
    if (this.#state.eventIdx) {
      this.#writeAvailEvent(this.#state.nextAvail);
    } else {
      this.#setUsedFlags(VRING_USED_F_NO_NOTIFY, 0);
    }
    // The store above and this load are both sequentially consistent.
    return this.availIndex() !== this.#state.nextAvail;
  }

  /** The avail view; throws (a caller bug, not guest input) when detached. */
  #availView(): Uint16Array {
    const avail = this.#avail;
    if (avail === undefined) throw new Error("virtqueue is not attached to guest memory");
    return avail;
  }

  #ringError(pending: number): string {
    return `avail index is ${pending} entries ahead of the device, more than the queue size ${this.#state.size}`;
  }

  #writeAvailEvent(value: number): void {
    Atomics.store(this.#used16!, this.#availEventIndex, value);
    this.#markUsed(this.#availEventIndex * 2, 2);
  }

  #setUsedFlags(clear: number, set: number): void {
    this.#availView();
    const used16 = this.#used16!;
    const old = Atomics.load(used16, 0);
    const flags = (old & ~clear) | set;
    if (flags === old) return;
    Atomics.store(used16, 0, flags);
    this.#markUsed(USED_FLAGS_OFFSET, 2);
  }

  #markUsed(offset: number, len: number): void {
    const s = this.#state;
    this.#memory!.markWritten((s.logUsedGpa ?? s.usedGpa) + offset, len);
  }
}
