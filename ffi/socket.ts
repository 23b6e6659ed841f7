/**
 * Unix domain sockets: create, bind, listen, connect, accept, and
 * `sendmsg`/`recvmsg` with file descriptors passed as SCM_RIGHTS.
 *
 * Layouts are x86-64 Linux: `sockaddr_un` is 110 bytes (u16 family + 108
 * path bytes), `msghdr` 56 bytes, a `cmsghdr` header 16 bytes (u64 len, i32
 * level, i32 type) with its data padded to 8 bytes.
 *
 * @module
 */

import {
  AF_UNIX,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_NOSIGNAL,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  SOL_SOCKET,
  UNIX_PATH_MAX,
} from "./constants.ts";
import { cmsgLen, cmsgSpace, collectRights, writeRights } from "./cmsg.ts";
import { EINTR, EINVAL, ENAMETOOLONG, SyscallError } from "./errno.ts";
import { IovecArray } from "./iovec.ts";
import { lastErrno, libc, throwLastError } from "./libc.ts";
import { pointerValue } from "./memory.ts";
import { allocateBytes, readU64, writeU64 } from "./struct.ts";

const SOCKADDR_UN_SIZE = 110;
const SUN_PATH_OFFSET = 2;
const MSGHDR_SIZE = 56;
/** Messages up to this size go through a per-isolate buffer with a known address. */
const STAGING_SIZE = 4096;

const encoder = new TextEncoder();

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** A `sockaddr_un` for `path` and its length; a leading NUL selects the abstract namespace. */
function unixAddress(syscall: string, path: string): [Uint8Array<ArrayBuffer>, number] {
  const address = allocateBytes(SOCKADDR_UN_SIZE);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  const pathBytes = encoder.encode(path);
  if (pathBytes.length === 0) {
    throw new SyscallError(syscall, EINVAL, "empty unix socket path");
  }
  if (pathBytes.length >= UNIX_PATH_MAX) {
    throw new SyscallError(
      syscall,
      ENAMETOOLONG,
      `unix socket path is ${pathBytes.length} bytes, the limit is ${UNIX_PATH_MAX - 1}: ${path}`,
    );
  }
  const abstract = pathBytes[0] === 0;
  if (!abstract && pathBytes.includes(0)) {
    throw new SyscallError(syscall, EINVAL, "unix socket path contains a NUL byte");
  }
  address.set(pathBytes, SUN_PATH_OFFSET);
  // A filesystem path is counted with its terminating NUL; an abstract name is not.
  const length = SUN_PATH_OFFSET + pathBytes.length + (abstract ? 0 : 1);
  return [address, length];
}

/** Creates an AF_UNIX socket (`socket`); returns its fd. */
export function socketUnix(type: number = SOCK_STREAM, flags: number = SOCK_CLOEXEC): number {
  const fd = libc().socket(AF_UNIX, type | flags, 0);
  if (fd < 0) throwLastError("socket");
  return fd;
}

/** Binds a unix socket to a path (`bind`); paths of 108 bytes or more give ENAMETOOLONG. */
export function bindUnix(fd: number, path: string): void {
  const [address, length] = unixAddress("bind", path);
  if (libc().bind(fd, address, length) < 0) throwLastError("bind", path);
}

/** Marks a bound socket as accepting connections (`listen`). */
export function listenSocket(fd: number, backlog: number): void {
  if (libc().listen(fd, backlog) < 0) throwLastError("listen", `fd ${fd}`);
}

/** Connects a unix socket to a path (`connect`). */
export function connectUnix(fd: number, path: string): void {
  const [address, length] = unixAddress("connect", path);
  if (libc().connect(fd, address, length) < 0) throwLastError("connect", path);
}

/**
 * Accepts a connection (`accept4`); returns the new fd. A non-blocking
 * listener with nothing pending throws EAGAIN.
 */
export function acceptConnection(fd: number, flags: number = SOCK_CLOEXEC): number {
  const symbols = libc();
  for (;;) {
    const accepted = symbols.accept4(fd, null, null, flags);
    if (accepted >= 0) return accepted;
    if (lastErrno() !== EINTR) throwLastError("accept4", `fd ${fd}`);
  }
}

/** Creates a connected pair of unix sockets (`socketpair`). */
export function socketPair(
  type: number = SOCK_STREAM,
  flags: number = SOCK_CLOEXEC,
): [number, number] {
  const fds = new Int32Array(new ArrayBuffer(8));
  if (libc().socketpair(AF_UNIX, type | flags, 0, fds) < 0) throwLastError("socketpair");
  return [fds[0], fds[1]];
}

/** Shuts down part of a full-duplex connection (`shutdown`, SHUT_RD/WR/RDWR). */
export function shutdownSocket(fd: number, how: number): void {
  if (libc().shutdown(fd, how) < 0) throwLastError("shutdown", `fd ${fd}`);
}

/** Receives into `buf` (`recv`); returns the byte count, 0 when the peer closed. */
export function receiveBytes(fd: number, buf: Uint8Array, flags: number = 0): number {
  const symbols = libc();
  const length = BigInt(buf.length);
  for (;;) {
    const n = symbols.recv(fd, buf, length, flags);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("recv", `fd ${fd}`);
  }
}

/** Credentials of the process at the other end of a connected unix socket. */
export interface PeerCredentials {
  /** Process id. */
  pid: number;
  /** User id. */
  uid: number;
  /** Group id. */
  gid: number;
}

/** Credentials of a connected unix socket's peer (`getsockopt` SO_PEERCRED). */
export function socketPeerCredentials(fd: number): PeerCredentials {
  const credentials = allocateBytes(12);
  const length = new Uint32Array(new ArrayBuffer(4));
  length[0] = credentials.length;
  const result = libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, credentials, length);
  if (result < 0) throwLastError("getsockopt", `SO_PEERCRED fd ${fd}`);
  const view = new DataView(credentials.buffer);
  return {
    pid: view.getInt32(0, true),
    uid: view.getUint32(4, true),
    gid: view.getUint32(8, true),
  };
}

/**
 * Buffers reused by every sendmsg/recvmsg of this isolate, so that a message
 * costs no allocation and, for small payloads, no pointer lookup: all their
 * addresses are computed once.
 */
class MessageScratch {
  readonly header = allocateBytes(MSGHDR_SIZE);
  readonly headerView = new DataView(this.header.buffer);
  readonly iov = new IovecArray(1);
  readonly staging = allocateBytes(STAGING_SIZE);
  readonly stagingAddress = pointerValue(this.staging);
  control = allocateBytes(64);
  controlView = new DataView(this.control.buffer);
  controlAddress = pointerValue(this.control);
  readonly #iovAddress = pointerValue(this.iov.buffer);

  /** Makes the control buffer at least `size` bytes. */
  reserveControl(size: number): void {
    if (size <= this.control.length) return;
    this.control = allocateBytes(align8(size));
    this.controlView = new DataView(this.control.buffer);
    this.controlAddress = pointerValue(this.control);
  }

  /** Fills the msghdr: no address, one iovec, `controlLength` bytes of control. */
  prepareHeader(controlLength: number): void {
    const view = this.headerView;
    writeU64(view, 0, 0); // msg_name
    view.setUint32(8, 0, true); // msg_namelen
    writeU64(view, 16, this.#iovAddress); // msg_iov
    writeU64(view, 24, 1); // msg_iovlen
    writeU64(view, 32, controlLength === 0 ? 0 : this.controlAddress); // msg_control
    writeU64(view, 40, controlLength); // msg_controllen
    view.setInt32(48, 0, true); // msg_flags
  }
}

let scratch: MessageScratch | undefined;

/**
 * Sends `data` with `fds` attached as one SCM_RIGHTS message (`sendmsg`,
 * MSG_NOSIGNAL: a closed peer gives EPIPE, not a signal). Returns the bytes
 * sent; a stream socket may send fewer than `data.length`, with the fds
 * attached to the first byte. Retries on EINTR. The fds stay open here.
 */
export function sendMessage(fd: number, data: Uint8Array, fds: readonly number[] = []): number {
  const s = scratch ??= new MessageScratch();
  if (data.length <= STAGING_SIZE) {
    s.staging.set(data);
    s.iov.set(0, s.stagingAddress, data.length);
  } else {
    s.iov.set(0, pointerValue(data), data.length);
  }
  let controlLength = 0;
  if (fds.length > 0) {
    controlLength = cmsgSpace(fds.length * 4);
    s.reserveControl(controlLength);
    writeRights(s.controlView, 0, fds);
  }
  const symbols = libc();
  for (;;) {
    s.prepareHeader(controlLength);
    const n = symbols.sendmsg(fd, s.header, MSG_NOSIGNAL);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("sendmsg", `fd ${fd}`);
  }
}

/** Result of {@linkcode receiveMessage}. */
export interface ReceivedMessage {
  /** Bytes received into the buffer; 0 means the peer closed (stream sockets). */
  bytes: number;
  /** Received fds (close-on-exec set); the caller owns and must close them. */
  fds: number[];
  /**
   * MSG_CTRUNC was set: the sender attached more fds than `maxFds` and the
   * kernel dropped the rest. The fds that did arrive are still in `fds`.
   */
  controlTruncated: boolean;
}

/**
 * Receives one message into `buf` and up to `maxFds` fds (`recvmsg`, with
 * MSG_CMSG_CLOEXEC always added to `flags`). Every SCM_RIGHTS control
 * message is collected; fds beyond `maxFds` are dropped and closed by the
 * kernel, which sets `controlTruncated`. Retries on EINTR.
 */
export function receiveMessage(
  fd: number,
  buf: Uint8Array,
  maxFds: number,
  flags: number = 0,
): ReceivedMessage {
  if (!(Number.isInteger(maxFds) && maxFds >= 0)) {
    throw new SyscallError("recvmsg", EINVAL, `maxFds must be a non-negative integer: ${maxFds}`);
  }
  const s = scratch ??= new MessageScratch();
  const staged = buf.length <= STAGING_SIZE;
  s.iov.set(0, staged ? s.stagingAddress : pointerValue(buf), buf.length);
  // CMSG_LEN rather than CMSG_SPACE: the kernel fits as many fds as the
  // length allows, and padding would let one more than maxFds through.
  const controlLength = maxFds === 0 ? 0 : cmsgLen(4 * maxFds);
  s.reserveControl(controlLength);
  const symbols = libc();
  let received: bigint;
  for (;;) {
    s.prepareHeader(controlLength);
    received = symbols.recvmsg(fd, s.header, flags | MSG_CMSG_CLOEXEC);
    if (received >= 0n) break;
    if (lastErrno() !== EINTR) throwLastError("recvmsg", `fd ${fd}`);
  }
  const bytes = Number(received);
  const messageFlags = s.headerView.getInt32(48, true);
  const returnedControl = Math.min(readU64(s.headerView, 40), controlLength);
  const fds = collectRights(s.controlView, returnedControl);
  // With MSG_TRUNC/MSG_PEEK on datagrams the count can exceed the buffer.
  if (staged) buf.set(s.staging.subarray(0, Math.min(bytes, buf.length)));
  return { bytes, fds, controlTruncated: (messageFlags & MSG_CTRUNC) !== 0 };
}
