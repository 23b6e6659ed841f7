/**
 * Opening an inode's file for I/O (OPEN, OPENDIR, CREATE of an existing
 * file, a migrated handle): a reopen of its O_PATH fd, never a walk by name.
 *
 * vhostd opens only regular files and directories for I/O: device nodes,
 * FIFOs and sockets can be created and listed but opening one is EPERM (the
 * guest kernel serves them itself; a host device opened for a guest would
 * bypass the host's access control), and a symbolic link is ELOOP (the
 * guest kernel resolves link targets in its own namespace).
 *
 * @module
 */

import {
  EISDIR,
  ELOOP,
  ENOTDIR,
  EPERM,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOATIME,
  reopenFd,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
} from "../../../../ffi/mod.ts";
import { errnoOf, FsError } from "./fs_errors.ts";

/**
 * Opens the file an O_PATH fd holds for I/O. Only regular files and (with
 * O_DIRECTORY in `flags`) directories: anything else opened as a directory
 * is ENOTDIR, a link ELOOP, a directory opened as a file EISDIR, anything
 * else EPERM. O_NOATIME is dropped when the host
 * refuses it (EPERM: vhostd does not own the file).
 */
export function openForIo(pathFd: number, type: number, flags: number): number {
  const wantsDir = (flags & O_DIRECTORY) !== 0;
  if (wantsDir && type !== S_IFDIR) throw new FsError(ENOTDIR);
  if (type === S_IFLNK) throw new FsError(ELOOP, "symbolic links are not opened");
  if (!wantsDir && type === S_IFDIR) throw new FsError(EISDIR);
  if (type !== S_IFREG && type !== S_IFDIR) {
    throw new FsError(EPERM, "device nodes, FIFOs and sockets are not opened on the host");
  }
  try {
    return reopenFd(pathFd, flags | O_CLOEXEC);
  } catch (error) {
    if (errnoOf(error) !== EPERM || (flags & O_NOATIME) === 0) throw error;
    return reopenFd(pathFd, (flags & ~O_NOATIME) | O_CLOEXEC);
  }
}
