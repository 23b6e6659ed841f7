/**
 * One virtqueue as the front-end drives it: the driver side of a split ring
 * in shared guest memory, its kick and call eventfds, how it is handed to
 * the back-end (SET_VRING_*), and blocking waits for used elements.
 *
 * @module
 */

import {
  closeQuietly,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  eventfd,
  eventfdRead,
  eventfdWrite,
  pollFd,
  POLLIN,
} from "../../ffi/mod.ts";
import type { VringAddress } from "../protocol/mod.ts";
import type { Segment } from "../virtqueue/descriptor_chain.ts";
import {
  DriverQueue,
  type DriverQueueLayout,
  type UsedElement,
} from "../virtqueue/driver_queue.ts";
import type { SharedGuestMemory } from "./shared_memory.ts";
import type { VhostUserClient } from "./vhost_user_client.ts";

/** Rings start on their own page. */
const RING_ALIGN = 4096;

/** Options of a {@linkcode DriverRing}. */
export interface DriverRingOptions {
  /** Vring index. */
  index: number;
  /** Queue size (power of two). */
  size: number;
  /** VIRTIO_F_RING_EVENT_IDX was negotiated. */
  eventIdx: boolean;
}

/** A split virtqueue in shared memory with its eventfds. */
export class DriverRing {
  /** Vring index. */
  readonly index: number;
  /** The driver side of the split ring (raw descriptor access for hostile tests). */
  readonly queue: DriverQueue;
  /** Guest-physical addresses of the three rings. */
  readonly layout: DriverQueueLayout;
  /** Eventfd the driver writes to notify the back-end. */
  readonly kickFd: number;
  /** Eventfd the back-end writes to interrupt the driver (non-blocking). */
  readonly callFd: number;
  readonly #memory: SharedGuestMemory;
  readonly #eventIdx: boolean;
  /** Used elements consumed so far (u16, wrapping): the driver's last_used_idx. */
  #lastUsed = 0;
  #closed = false;

  /** Allocates the rings in `memory` and creates the eventfds. */
  constructor(memory: SharedGuestMemory, options: DriverRingOptions) {
    const bytes = DriverQueue.layout(0, options.size).end;
    const base = memory.alloc(bytes, RING_ALIGN);
    this.layout = DriverQueue.layout(base, options.size);
    this.queue = new DriverQueue(memory.guestMemory, {
      size: options.size,
      ...this.layout,
      eventIdx: options.eventIdx,
    });
    this.index = options.index;
    this.#memory = memory;
    this.#eventIdx = options.eventIdx;
    this.kickFd = eventfd(0, EFD_CLOEXEC);
    try {
      this.callFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    } catch (e) {
      closeQuietly(this.kickFd);
      throw e;
    }
  }

  /** Queue size. */
  get size(): number {
    return this.queue.size;
  }

  /** The SET_VRING_ADDR payload: ring addresses in this process's address space. */
  vringAddress(): VringAddress {
    return {
      index: this.index,
      flags: 0,
      descUserAddr: this.#memory.userAddr(this.layout.descGpa),
      usedUserAddr: this.#memory.userAddr(this.layout.usedGpa),
      availUserAddr: this.#memory.userAddr(this.layout.availGpa),
      logGuestAddr: 0n,
    };
  }

  /**
   * Hands the ring to the back-end and starts it, as QEMU does: CALL, NUM,
   * BASE, ADDR, KICK, then ENABLE. `base` (default: the driver's avail
   * index) is where the back-end resumes reading the available ring.
   */
  start(client: VhostUserClient, base: number = this.queue.availIndex()): void {
    client.setVringCall(this.index, this.callFd);
    client.setVringNum(this.index, this.size);
    client.setVringBase(this.index, base);
    client.setVringAddr(this.vringAddress());
    client.setVringKick(this.index, this.kickFd);
    client.setVringEnable(this.index, true);
  }

  /** Stops the ring on the back-end (GET_VRING_BASE); returns the next avail index it would read. */
  stop(client: VhostUserClient): number {
    return client.getVringBase(this.index);
  }

  /** Publishes a chain (optionally as an indirect table at `indirectTableGpa`); returns its head. */
  publish(segments: readonly Segment[], indirectTableGpa?: number): number {
    return this.queue.addChain(segments, { indirectTableGpa });
  }

  /** Kicks the back-end if chains were published since the last call and it wants a kick. */
  notify(): boolean {
    if (!this.queue.needsKick()) return false;
    eventfdWrite(this.kickFd, 1);
    return true;
  }

  /** Takes the next used element, or undefined when the back-end has returned nothing new. */
  takeUsed(): UsedElement | undefined {
    const used = this.queue.takeUsed();
    if (used !== undefined) this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    return used;
  }

  /** True when a used element is waiting to be taken. */
  hasUsed(): boolean {
    return this.queue.usedIndex() !== this.#lastUsed;
  }

  /**
   * Blocks until the back-end signals the call eventfd or a used element is
   * waiting, at most until `deadline` (a `performance.now()` time). Returns
   * false on timeout. With EVENT_IDX it first asks to be interrupted at the
   * next used element.
   */
  waitForUsed(deadline: number): boolean {
    if (this.#eventIdx) this.queue.setUsedEvent(this.#lastUsed);
    // Re-check after arming: an element pushed just before would not interrupt.
    for (;;) {
      if (this.hasUsed()) return true;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return false;
      if ((pollFd(this.callFd, POLLIN, Math.ceil(remaining)) & POLLIN) !== 0) {
        eventfdRead(this.callFd);
      }
    }
  }

  /** Closes the eventfds (idempotent). The ring memory stays allocated. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.kickFd);
    closeQuietly(this.callFd);
  }
}
