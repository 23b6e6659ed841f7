/**
 * Non-blocking host Unix socket calls for the vsock data half, with errors
 * as negative errno values instead of exceptions: a full or empty socket
 * (EAGAIN) is an ordinary outcome there, and a peer that vanished (EPIPE,
 * ECONNRESET) is peer input that must never throw.
 *
 * @module
 */

import {
  acceptConnection,
  closeQuietly,
  connectUnix,
  EAGAIN,
  EINVAL,
  MSG_PEEK,
  readFd,
  receiveBytes,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  socketUnix,
  SyscallError,
  writeFd,
} from "../../../ffi/mod.ts";

/** The value of a call that would have blocked. */
export const WOULD_BLOCK = -EAGAIN;

function negativeErrno(e: unknown): number {
  if (e instanceof SyscallError) return -e.errno;
  return -EINVAL;
}

/** `read`: bytes read (0 at EOF), or a negative errno (WOULD_BLOCK when empty). */
export function readSome(fd: number, buf: Uint8Array): number {
  try {
    return readFd(fd, buf);
  } catch (e) {
    return negativeErrno(e);
  }
}

/** `write`: bytes written (maybe short), or a negative errno (WOULD_BLOCK when full). */
export function writeSome(fd: number, buf: Uint8Array): number {
  try {
    return writeFd(fd, buf);
  } catch (e) {
    return negativeErrno(e);
  }
}

/** `recv(MSG_PEEK)`: bytes visible without consuming them, 0 at EOF, or a negative errno. */
export function peekSome(fd: number, buf: Uint8Array): number {
  try {
    return receiveBytes(fd, buf, MSG_PEEK);
  } catch (e) {
    return negativeErrno(e);
  }
}

/** Accepts one pending connection as a non-blocking fd; a negative errno when none or failing. */
export function acceptNonBlocking(listenFd: number): number {
  try {
    return acceptConnection(listenFd, SOCK_CLOEXEC | SOCK_NONBLOCK);
  } catch (e) {
    return negativeErrno(e);
  }
}

/**
 * Connects a new non-blocking Unix stream socket to `path`; returns its fd,
 * or a negative errno (ENOENT, ECONNREFUSED, EAGAIN for a full backlog...).
 */
export function connectNonBlocking(path: string): number {
  let fd = -1;
  try {
    fd = socketUnix(SOCK_STREAM, SOCK_CLOEXEC | SOCK_NONBLOCK);
    connectUnix(fd, path);
    return fd;
  } catch (e) {
    closeQuietly(fd);
    return negativeErrno(e);
  }
}
