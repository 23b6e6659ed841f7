/**
 * Event notification: eventfd, epoll and poll.
 *
 * A Worker that serves queues blocks in {@linkcode epollWait}; another
 * thread wakes it by writing an eventfd registered in the same epoll set.
 *
 * @module
 */

import { EFD_CLOEXEC, EPOLL_CLOEXEC } from "./constants.ts";
import { EAGAIN, EINTR } from "./errno.ts";
import { lastErrno, libc, throwLastError } from "./libc.ts";
import { allocateBytes } from "./struct.ts";

const TWO_POW_32 = 0x1_0000_0000;
const EPOLL_EVENT_SIZE = 12;

/** Per-isolate buffers for the small structs these calls pass. */
class EventScratch {
  readonly counter = new Uint32Array(new ArrayBuffer(8));
  readonly epollEvent = allocateBytes(EPOLL_EVENT_SIZE);
  readonly epollEventView = new DataView(this.epollEvent.buffer);
  readonly pollFd = allocateBytes(8);
  readonly pollFdView = new DataView(this.pollFd.buffer);
}

let scratch: EventScratch | undefined;

/** Creates an eventfd (`eventfd`) with the given initial counter; returns its fd. */
export function eventfd(initval: number = 0, flags: number = EFD_CLOEXEC): number {
  const fd = libc().eventfd(initval, flags);
  if (fd < 0) throwLastError("eventfd");
  return fd;
}

/**
 * Adds `value` (up to 0xffff_ffff_ffff_fffe; a bigint for more than 2^53) to
 * an eventfd's counter (`eventfd_write`), waking its readers. A non-blocking
 * eventfd whose counter would overflow throws EAGAIN; a blocking one waits
 * for a read.
 */
export function eventfdWrite(fd: number, value: number | bigint = 1): void {
  const symbols = libc();
  const amount = BigInt(value);
  for (;;) {
    if (symbols.eventfd_write(fd, amount) >= 0) return;
    if (lastErrno() !== EINTR) throwLastError("eventfd_write", `fd ${fd}`);
  }
}

/**
 * Signals an eventfd (adds 1 to its counter) for a thread that must never
 * stop: never throws, and returns true when the eventfd is signalled — also
 * when the write failed with EAGAIN, which on a non-blocking eventfd means
 * the counter is at its maximum: it is signalled already and its reader has
 * a wake-up pending. Returns false when the write failed otherwise (EBADF for
 * a closed fd, EINVAL for an fd that takes no 8-byte writes...).
 *
 * It never blocks on an fd with O_NONBLOCK. vhostd sets O_NONBLOCK on every
 * notification fd it accepts (src/backend/vring.ts acceptNotificationFd); a
 * blocking eventfd at its maximum would make this wait for a read.
 */
export function signalEventfd(fd: number): boolean {
  const symbols = libc();
  for (;;) {
    if (symbols.eventfd_write(fd, 1n) >= 0) return true;
    const errno = lastErrno();
    if (errno === EAGAIN) return true;
    if (errno !== EINTR) return false;
  }
}

/**
 * Reads and resets an eventfd's counter (`eventfd_read`); returns it. Returns
 * 0 when the eventfd is non-blocking and the counter is 0; a blocking
 * eventfd waits for a write.
 */
export function eventfdRead(fd: number): number {
  const s = scratch ??= new EventScratch();
  const symbols = libc();
  for (;;) {
    if (symbols.eventfd_read(fd, s.counter) >= 0) {
      return s.counter[0] + s.counter[1] * TWO_POW_32;
    }
    const errno = lastErrno();
    if (errno === EAGAIN) return 0;
    if (errno !== EINTR) throwLastError("eventfd_read", `fd ${fd}`);
  }
}

/** Creates an epoll instance with close-on-exec (`epoll_create1`). */
export function epollCreate(): number {
  const fd = libc().epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) throwLastError("epoll_create1");
  return fd;
}

/**
 * Adds, changes or removes `fd` in an epoll set (`epoll_ctl`, EPOLL_CTL_*).
 * `data` (an integer below 2^53) comes back with each of its events.
 */
export function epollCtl(epfd: number, op: number, fd: number, events: number, data: number): void {
  const s = scratch ??= new EventScratch();
  const view = s.epollEventView;
  view.setUint32(0, events >>> 0, true);
  view.setUint32(4, data >>> 0, true);
  view.setUint32(8, Math.floor(data / TWO_POW_32), true);
  if (libc().epoll_ctl(epfd, op, fd, s.epollEvent) < 0) {
    throwLastError("epoll_ctl", `epfd ${epfd}, op ${op}, fd ${fd}`);
  }
}

/**
 * Room for the events one {@linkcode epollWait} returns: packed 12-byte
 * `struct epoll_event { u32 events; u64 data; }` as on x86-64.
 */
export class EpollEvents {
  /** Maximum events per wait. */
  readonly capacity: number;
  /** The raw `struct epoll_event[]` memory. */
  readonly buffer: Uint8Array<ArrayBuffer>;
  readonly #view: DataView;

  /** Allocates room for `capacity` events (at least 1). */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`EpollEvents capacity must be a positive integer, got ${capacity}`);
    }
    this.capacity = capacity;
    this.buffer = allocateBytes(capacity * EPOLL_EVENT_SIZE);
    this.#view = new DataView(this.buffer.buffer);
  }

  /** Event mask (EPOLLIN, ...) of entry `i`. */
  events(i: number): number {
    return this.#view.getUint32(i * EPOLL_EVENT_SIZE, true);
  }

  /** The `data` registered with {@linkcode epollCtl} for entry `i`. */
  data(i: number): number {
    const offset = i * EPOLL_EVENT_SIZE + 4;
    return this.#view.getUint32(offset, true) +
      this.#view.getUint32(offset + 4, true) * TWO_POW_32;
  }
}

/**
 * Waits up to `timeoutMs` (-1: forever, 0: poll) for events (`epoll_wait`),
 * blocking this thread; returns how many entries of `out` were filled, 0 on
 * timeout or when a signal interrupted the wait.
 */
export function epollWait(epfd: number, out: EpollEvents, timeoutMs: number): number {
  const n = libc().epoll_wait(epfd, out.buffer, out.capacity, timeoutMs);
  if (n >= 0) return n;
  if (lastErrno() === EINTR) return 0;
  return throwLastError("epoll_wait", `epfd ${epfd}`);
}

/**
 * Waits up to `timeoutMs` for `events` (POLLIN, ...) on one fd (`poll`);
 * returns the revents mask, 0 on timeout or interruption by a signal.
 * A closed fd gives POLLNVAL.
 */
export function pollFd(fd: number, events: number, timeoutMs: number): number {
  const s = scratch ??= new EventScratch();
  const view = s.pollFdView;
  view.setInt32(0, fd, true);
  view.setInt16(4, events, true);
  view.setInt16(6, 0, true);
  const n = libc().poll(s.pollFd, 1n, timeoutMs);
  if (n > 0) return view.getUint16(6, true);
  if (n === 0 || lastErrno() === EINTR) return 0;
  return throwLastError("poll", `fd ${fd}`);
}

/**
 * Waits up to `timeoutMs` (-1: no limit) for events on several fds at once
 * (`poll`); returns each entry's revents mask, all 0 on timeout or when a
 * signal interrupted the wait. A closed fd gives POLLNVAL.
 */
export function pollFds(
  entries: readonly { fd: number; events: number }[],
  timeoutMs: number,
): number[] {
  const buffer = allocateBytes(8 * entries.length);
  const view = new DataView(buffer.buffer);
  entries.forEach(({ fd, events }, i) => {
    view.setInt32(i * 8, fd, true);
    view.setInt16(i * 8 + 4, events, true);
  });
  const n = libc().poll(buffer, BigInt(entries.length), timeoutMs);
  if (n < 0 && lastErrno() !== EINTR) {
    throwLastError("poll", `fds ${entries.map((e) => e.fd).join(", ")}`);
  }
  return entries.map((_, i) => n > 0 ? view.getUint16(i * 8 + 6, true) : 0);
}
