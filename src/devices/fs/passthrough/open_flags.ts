/**
 * The open(2) flags vhostd passes to the host for a guest's OPEN or CREATE,
 * and the flags a restored handle is reopened with.
 *
 * @module
 */

import {
  O_ACCMODE,
  O_APPEND,
  O_CREAT,
  O_DSYNC,
  O_EXCL,
  O_NOATIME,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_SYNC,
  O_TRUNC,
} from "../../../../ffi/mod.ts";

/** O_LARGEFILE on x86-64 (a no-op for 64-bit processes, but guests send it). */
const O_LARGEFILE = 0o100000;

/**
 * The guest flags that keep their meaning on the host. Everything else is
 * dropped: O_CREAT/O_EXCL (CREATE handles creation itself), O_NOFOLLOW,
 * O_DIRECTORY, O_PATH, O_TMPFILE and O_NOCTTY (vhostd decides how names are
 * resolved), O_DIRECT (the guest's page cache already sits in front; host
 * direct I/O would only add alignment failures), O_ASYNC and O_CLOEXEC
 * (vhostd adds O_CLOEXEC itself).
 */
const PASSED_FLAGS = O_ACCMODE | O_APPEND | O_TRUNC | O_NONBLOCK | O_DSYNC | O_SYNC | O_NOATIME |
  O_LARGEFILE;

/** The host open flags for a guest's OPEN/CREATE flags (without O_CLOEXEC). */
export function hostOpenFlags(guestFlags: number): number {
  const flags = guestFlags & PASSED_FLAGS;
  // Access mode 3 is Linux's "ioctl only" mode: treat it as read-write.
  return (flags & O_ACCMODE) === O_ACCMODE ? (flags & ~O_ACCMODE) | O_RDWR : flags;
}

/** True when an open with `flags` may change the file: write access or O_TRUNC. */
export function opensForChange(flags: number): boolean {
  return (flags & O_ACCMODE) !== O_RDONLY || (flags & O_TRUNC) !== 0;
}

/**
 * The flags a migrated handle is reopened with: the saved ones minus
 * O_CREAT, O_EXCL and O_TRUNC, which already took effect on the source (a
 * second O_TRUNC would wipe what the guest wrote since).
 */
export function reopenFlags(savedFlags: number): number {
  return savedFlags & ~(O_CREAT | O_EXCL | O_TRUNC);
}
