/**
 * Opening one name below a directory without ever leaving the shared tree:
 * the single place where vhostd turns a guest-supplied name into a host file.
 *
 * @module
 */

import {
  AT_EMPTY_PATH,
  AT_SYMLINK_NOFOLLOW,
  closeQuietly,
  ENOSYS,
  EPERM,
  fdHoldsFile,
  fstatat,
  fstatatOrErrno,
  O_CLOEXEC,
  O_NOFOLLOW,
  O_PATH,
  openat,
  openat2,
  openat2OrErrno,
  openat2Supported,
  openatOrErrno,
  pathFdOfOrErrno,
  reopenFd,
  RESOLVE_BENEATH,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
  type StatxResult,
} from "../../../../ffi/mod.ts";

/** Path-only, never following a link, never inherited by children. */
const PATH_FLAGS = O_PATH | O_NOFOLLOW | O_CLOEXEC;
/** Resolution may not leave the directory, nor cross any symbolic or magic link. */
const CONFINED = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

/**
 * Opens `name` (one component, already checked: not empty, no `/`, not
 * "..") in directory `dirFd` as an O_PATH|O_NOFOLLOW fd. A symbolic link
 * yields an fd holding the link itself, never its target. Uses openat2 with
 * RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS; on kernels
 * without openat2 a plain openat with O_NOFOLLOW is equally confined for a
 * single component. Throws SyscallError.
 */
export function openComponent(dirFd: number, name: Uint8Array): number {
  if (openat2Supported()) return openat2(dirFd, name, { flags: PATH_FLAGS, resolve: CONFINED });
  return openat(dirFd, name, PATH_FLAGS);
}

/**
 * {@linkcode openComponent} answering a failure with its errno, negated,
 * instead of throwing: a LOOKUP of a missing name is an ordinary answer, and
 * an Error costs more to build than the system call.
 */
export function openComponentOrErrno(dirFd: number, name: Uint8Array): number {
  if (openat2Supported()) {
    return openat2OrErrno(dirFd, name, { flags: PATH_FLAGS, resolve: CONFINED });
  }
  return openatOrErrno(dirFd, name, PATH_FLAGS);
}

/** False once open_tree turned out to be missing (before Linux 5.2) or refused (seccomp). */
let openTreeUsable = true;

/**
 * An O_PATH fd of the file `fd` just created as `name` in `dirFd`, whose
 * status is `created`. From the fd itself when the kernel can
 * ({@linkcode pathFdOfOrErrno}: open_tree, no name looked up, so no race
 * with a host process replacing the name; 1.5 µs with its close, against
 * 2.2 µs for the name's openat, the identity statx and the close, C loop
 * on tmpfs, kernel 6.18); otherwise {@linkcode openCreatedByName}.
 */
export function openCreated(
  dirFd: number,
  name: Uint8Array,
  fd: number,
  created: StatxResult,
): number {
  if (openTreeUsable) {
    const own = pathFdOfOrErrno(fd);
    if (own >= 0) return own;
    if (own === -ENOSYS || own === -EPERM) openTreeUsable = false;
  }
  return openCreatedByName(dirFd, name, fd, created);
}

/**
 * {@linkcode openCreated} without open_tree: the name opened again
 * ({@linkcode openComponent}) when that finds the same host file (dev and
 * ino), else, when someone on the host replaced the name in between, the
 * fd's own file through `/proc/self/fd` (4.1–4.4 µs). Throws SyscallError
 * only when the /proc reopen fails.
 */
export function openCreatedByName(
  dirFd: number,
  name: Uint8Array,
  fd: number,
  created: StatxResult,
): number {
  let pathFd = -1;
  try {
    pathFd = openComponent(dirFd, name);
    if (fdHoldsFile(pathFd, created.dev, created.ino)) return pathFd;
  } catch {
    // Gone or unreadable under that name by now: the fd still holds the file.
  }
  closeQuietly(pathFd);
  return reopenFd(fd, O_PATH | O_CLOEXEC);
}

/** Status of the file an fd holds (O_PATH fds and symbolic links included), never following links. */
export function statFd(fd: number): StatxResult {
  return fstatat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
}

/** Status of `name` in directory `dirFd` without following a link, or undefined if it cannot be had. */
export function statEntryQuietly(dirFd: number, name: Uint8Array): StatxResult | undefined {
  try {
    // A missing name is the common answer (RENAME's target, most of the time): no Error for it.
    const st = fstatatOrErrno(dirFd, name, AT_SYMLINK_NOFOLLOW);
    return typeof st === "number" ? undefined : st;
  } catch {
    return undefined; // a name the path scratch refuses (a NUL byte, too long)
  }
}
