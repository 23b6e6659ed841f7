/**
 * Migration by file handle (`--migration-mode file-handles`, as virtiofsd):
 * the source adds each inode's file handle to its snapshot record, and the
 * destination opens that handle before it tries the path. Both must see the
 * same filesystem (the same host, or the same shared block device): a
 * handle means nothing elsewhere, and then the path is used. What this
 * adds over paths: a file the guest holds that was unlinked (still open on
 * the source during the switch-over) or renamed on the host behind the
 * guest's back is found again.
 *
 * Only files on the shared directory's own mount get a handle (the
 * destination opens them through its root's mount). A handle arrives from
 * outside and open_by_handle_at reaches any file of the filesystem, so the
 * destination accepts an opened file only when the kernel's name for it
 * (`/proc/self/fd/N`) lies inside the shared directory; anything else, a
 * disconnected name included, is refused and the path is tried instead.
 *
 * @module
 */

import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  closeQuietly,
  EXDEV,
  nameToHandleAt,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  O_RDONLY,
  openByHandleAt,
  procSelfFdPath,
  readlinkat,
  reopenFd,
} from "../../../../ffi/mod.ts";
import { FsError } from "./fs_errors.ts";
import type { Inode } from "./inode_table.ts";

/**
 * Source side: a function giving the handle of an inode's file when it lies
 * on the same mount as the root `rootFd` holds, else null (and null for
 * every inode when the root gives no handle).
 */
export function handlesOnRootMount(rootFd: number): (inode: Inode) => Uint8Array | null {
  let rootMount: bigint;
  try {
    rootMount = nameToHandleAt(rootFd, "", AT_EMPTY_PATH).mountId;
  } catch {
    return () => null;
  }
  return (inode) => {
    if (inode.broken !== null) return null;
    try {
      const named = nameToHandleAt(inode.fd, "", AT_EMPTY_PATH);
      return named.mountId === rootMount ? named.handle : null;
    } catch {
      return null; // The path alone will have to do.
    }
  };
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/** Destination side: opens handles from a snapshot, for files inside the shared directory only. */
export class HandleOpener {
  readonly #mountFd: number;
  /** The shared directory's name as the kernel prints it, with a trailing `/`. */
  readonly #inside: Uint8Array;

  private constructor(mountFd: number, inside: Uint8Array) {
    this.#mountFd = mountFd;
    this.#inside = inside;
  }

  /**
   * An opener for the shared directory whose O_PATH root fd is `rootFd`, or
   * undefined when none can be had (records are then found by path only).
   */
  static tryOpen(rootFd: number): HandleOpener | undefined {
    try {
      const where = readlinkat(AT_FDCWD, procSelfFdPath(rootFd));
      const inside = where.at(-1) === 0x2f ? where : Uint8Array.of(...where, 0x2f);
      return new HandleOpener(reopenFd(rootFd, O_RDONLY | O_DIRECTORY | O_CLOEXEC), inside);
    } catch {
      return undefined;
    }
  }

  /**
   * An O_PATH fd of the file `handle` (a whole `struct file_handle`) names.
   * Throws SyscallError (ESTALE: the file is gone, EPERM: no
   * CAP_DAC_READ_SEARCH, EINVAL: a malformed handle) or FsError EXDEV when
   * the file does not lie inside the shared directory.
   */
  openHandle(handle: Uint8Array): number {
    const fd = openByHandleAt(this.#mountFd, handle, O_PATH | O_CLOEXEC);
    try {
      const where = readlinkat(AT_FDCWD, procSelfFdPath(fd));
      if (!startsWith(where, this.#inside)) {
        throw new FsError(EXDEV, "the file handle names a file outside the shared directory");
      }
      return fd;
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  }

  /** Closes the mount fd. */
  close(): void {
    closeQuietly(this.#mountFd);
  }
}
