/**
 * The control-plane state of one vring, kept by the main thread: what the
 * front-end configured (size, addresses, base, eventfds) and where the ring
 * is in its life cycle (stopped/started × disabled/enabled).
 *
 * While a ring runs, its position lives in the Worker; `position` holds it
 * whenever the ring is not running, so GET_VRING_BASE and a restart always
 * continue from the exact place.
 *
 * @module
 */

import type { VringAddress } from "../protocol/mod.ts";
import { closeQuietly } from "../../ffi/mod.ts";
import { NO_FD } from "./worker_protocol.ts";

/** The position of a ring between runs. */
export interface RingPosition {
  /** Next available-ring index the device will read. */
  nextAvail: number;
  /** Next used-ring index the device will write; undefined means "read it from the ring at start". */
  nextUsed: number | undefined;
}

/** One vring's configuration and life-cycle state. */
export class Vring {
  /** Ring index. */
  readonly index: number;
  /** Queue size from SET_VRING_NUM (0 until set). */
  size = 0;
  /** Addresses from SET_VRING_ADDR. */
  address: VringAddress | undefined;
  /** Position while not running. */
  position: RingPosition = { nextAvail: 0, nextUsed: undefined };
  /** Kick eventfd, or NO_FD. */
  kickFd = NO_FD;
  /** Call eventfd, or NO_FD (the driver polls). */
  callFd = NO_FD;
  /** Error eventfd, or NO_FD. */
  errFd = NO_FD;
  /** A kick (fd or no-fd) arrived since the last stop. */
  started = false;
  /** SET_VRING_ENABLE state. */
  enabled = false;
  /** A Worker is serving the ring now. */
  running = false;
  /** The ring was found corrupt and is not served until reconfigured. */
  broken = false;

  /** A ring in its initial state: stopped and disabled. */
  constructor(index: number) {
    this.index = index;
  }

  /** Replaces an eventfd slot, closing the previous descriptor. */
  static replaceFd(current: number, next: number): number {
    if (current !== NO_FD && current !== next) closeQuietly(current);
    return next;
  }

  /** Closes every eventfd and returns to the initial state. */
  reset(): void {
    this.kickFd = Vring.replaceFd(this.kickFd, NO_FD);
    this.callFd = Vring.replaceFd(this.callFd, NO_FD);
    this.errFd = Vring.replaceFd(this.errFd, NO_FD);
    this.size = 0;
    this.address = undefined;
    this.position = { nextAvail: 0, nextUsed: undefined };
    this.started = false;
    this.enabled = false;
    this.running = false;
    this.broken = false;
  }
}
