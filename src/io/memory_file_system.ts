/**
 * Whether a file lives in memory (tmpfs, ramfs): there a read is a memory
 * copy with no latency for an asynchronous engine to hide, and io_uring
 * hands most such reads to kernel worker threads, so the synchronous engine
 * is the better default (measured, README "Where vhostd departs from the
 * design brief").
 *
 * @module
 */

import { closeQuietly, fstatfs, O_CLOEXEC, O_PATH, openFile } from "../../ffi/mod.ts";

/** statfs f_type of tmpfs (memfds live there too). */
const TMPFS_MAGIC = 0x01021994;
/** statfs f_type of ramfs. */
const RAMFS_MAGIC = 0x858458f6;

/** True when `fd` (a file or directory) is on tmpfs or ramfs; false when that cannot be told. */
export function isOnMemoryFileSystem(fd: number): boolean {
  try {
    const type = fstatfs(fd).type;
    return type === TMPFS_MAGIC || type === RAMFS_MAGIC;
  } catch {
    return false;
  }
}

/** {@linkcode isOnMemoryFileSystem} for a path (false when it cannot be opened). */
export function pathIsOnMemoryFileSystem(path: string): boolean {
  let fd: number;
  try {
    fd = openFile(path, O_PATH | O_CLOEXEC);
  } catch {
    return false;
  }
  try {
    return isOnMemoryFileSystem(fd);
  } finally {
    closeQuietly(fd);
  }
}
