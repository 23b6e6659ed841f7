/**
 * What an inherited socket is (`getsockopt` SO_DOMAIN, SO_TYPE,
 * SO_ACCEPTCONN) and keeping it from the next program (FD_CLOEXEC): the
 * checks a back-end makes on a socket systemd or a parent handed it.
 *
 * @module
 */

import { F_GETFD, F_SETFD, FD_CLOEXEC, SOL_SOCKET } from "./constants.ts";
import { libc, throwLastError } from "./libc.ts";

/** Socket option: the socket's type (SOCK_STREAM, SOCK_DGRAM...). */
export const SO_TYPE = 3;
/** Socket option: 1 when the socket is listening. */
export const SO_ACCEPTCONN = 30;
/** Socket option: the socket's address family (AF_UNIX...). */
export const SO_DOMAIN = 39;

/** An int-valued SOL_SOCKET option of `fd` (`getsockopt`); ENOTSOCK when fd is no socket. */
export function socketIntOption(fd: number, option: number): number {
  const value = new Int32Array(new ArrayBuffer(4));
  const length = new Uint32Array(new ArrayBuffer(4));
  length[0] = 4;
  if (libc().getsockopt(fd, SOL_SOCKET, option, value, length) < 0) {
    throwLastError("getsockopt", `option ${option} fd ${fd}`);
  }
  return value[0];
}

/** Sets or clears close-on-exec on `fd` (`fcntl` F_GETFD/F_SETFD). */
export function setCloseOnExec(fd: number, on: boolean): void {
  const symbols = libc();
  const flags = symbols.fcntl(fd, F_GETFD, 0);
  if (flags < 0) throwLastError("fcntl", `F_GETFD fd ${fd}`);
  const wanted = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
  if (wanted !== flags && symbols.fcntl(fd, F_SETFD, wanted) < 0) {
    throwLastError("fcntl", `F_SETFD fd ${fd}`);
  }
}

/** Whether close-on-exec is set on `fd` (`fcntl` F_GETFD). */
export function closeOnExec(fd: number): boolean {
  const flags = libc().fcntl(fd, F_GETFD, 0);
  if (flags < 0) throwLastError("fcntl", `F_GETFD fd ${fd}`);
  return (flags & FD_CLOEXEC) !== 0;
}
