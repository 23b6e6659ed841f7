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
import { closeQuietly, EVENTFD_TARGET, fdTarget, setNonBlocking } from "../../ffi/mod.ts";
import { NO_FD } from "./worker_protocol.ts";

/** Which notification fd of a ring: SET_VRING_KICK, SET_VRING_CALL or SET_VRING_ERR. */
export type NotificationFdKind = "kick" | "call" | "err";

/**
 * Checks a notification fd (kick, call or err) as it arrives and readies it
 * for the queue Workers; returns why it is refused, or undefined when it is
 * accepted. The fd stays the caller's either way (close it on refusal).
 *
 * vhost-user.rst asks for an eventfd, and only an eventfd is accepted: a
 * regular file, a directory or /dev/null cannot be polled (epoll refuses
 * them, so the ring could never start), a pipe fills up and blocks its
 * writer, a socket or another anonymous inode means something else.
 *
 * Every accepted fd gets O_NONBLOCK, so that no write or read of it can ever
 * stop a Worker: a signal at the counter's maximum gives EAGAIN (the eventfd
 * is signalled already: see ffi/events.ts signalEventfd), a kick the front-end
 * read away under the Worker's feet reads as 0. O_NONBLOCK belongs to the open
 * file description, which the front-end's copy of the fd shares, and this is
 * safe for QEMU: it makes all its notifiers with eventfd(0, EFD_NONBLOCK |
 * EFD_CLOEXEC) (util/event_notifier-posix.c), so the flag is set already, and
 * its event_notifier_set/test_and_clear take EAGAIN as "already signalled" /
 * "nothing pending"; when KVM consumes a call fd (irqfd) or signals a kick fd
 * (ioeventfd) it does so in the kernel, where the flag does not apply. Only a
 * front-end that blocks in read() on its own call fd would notice: its read
 * of a zero counter returns EAGAIN instead of waiting (poll the fd first).
 */
export function acceptNotificationFd(fd: number): string | undefined {
  let target: string;
  try {
    target = fdTarget(fd);
  } catch (e) {
    return `cannot tell what fd ${fd} is: ${e instanceof Error ? e.message : e}`;
  }
  if (target !== EVENTFD_TARGET) return `it is not an eventfd (${target})`;
  try {
    setNonBlocking(fd, true);
  } catch (e) {
    return `cannot make it non-blocking: ${e instanceof Error ? e.message : e}`;
  }
  return undefined;
}

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
