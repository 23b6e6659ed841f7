/**
 * Inodes known by file handle instead of by a held fd (`--inode-file-handles
 * prefer|mandatory`, as virtiofsd): at lookup the inode records the file's
 * handle (name_to_handle_at on the lookup fd) and gives the fd to a bounded
 * cache ({@linkcode FdCache}); later uses reopen it with open_by_handle_at
 * when it was evicted. So a guest may know any number of files while vhostd
 * keeps at most the cache's worth of fds open for them.
 *
 * Mount fds: open_by_handle_at needs an fd on the handle's mount, and not an
 * O_PATH one (the kernel answers EBADF). vhostd keeps one per mount id for
 * its lifetime: the shared directory's own, and for a mount below it, a
 * read-only reopen of the first directory seen with that mount id (a
 * lookup walks down from the root, so that is the mount's root). Only
 * directories are reopened for this: opening a FIFO or a device has side
 * effects. A mount first met through a non-directory (a bind-mounted file)
 * gets no handles. While vhostd holds a mount fd the mount stays alive, so
 * its id cannot be given to another mount.
 *
 * Identity: the table still dedupes by (device, inode number), but without
 * an fd pinning it a file can be deleted and its inode number reused by a
 * new file. The handle carries the inode's generation, so a lookup that
 * finds a known inode compares handles ({@linkcode InodeFileHandles.sameFile})
 * and a mismatch means a new file.
 *
 * Privilege: open_by_handle_at needs CAP_DAC_READ_SEARCH. Without it
 * "prefer" falls back to holding fds (with a warning) and "mandatory"
 * refuses to start. Handles never come from the guest: vhostd makes every
 * handle it opens, so the capability cannot be used to reach files outside
 * the shared directory.
 *
 * @module
 */

import {
  AT_EMPTY_PATH,
  closeQuietly,
  EOPNOTSUPP,
  EPERM,
  nameToHandleAt,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  O_RDONLY,
  openByHandleAt,
  reopenFd,
  S_IFDIR,
} from "../../../../ffi/mod.ts";
import { log } from "../../../log.ts";
import { FdCache } from "./fd_cache.ts";
import { errnoOf, FsError } from "./fs_errors.ts";
import { type InodeFileHandleMode, isInodeFileHandleMode } from "./fs_types.ts";

/** The file handle an inode is known by, and the fd of its mount. */
export interface InodeHandle {
  /** The whole `struct file_handle`. */
  readonly bytes: Uint8Array;
  /** A non-O_PATH fd on the file's mount (owned by {@linkcode InodeFileHandles}). */
  readonly mountFd: number;
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Handles, mount fds and the fd cache of one filesystem in "prefer" or "mandatory" mode. */
export class InodeFileHandles {
  /** The mode in effect. */
  readonly mode: "prefer" | "mandatory";
  readonly #cache: FdCache<object>;
  readonly #mountFds = new Map<bigint, number>();

  private constructor(mode: "prefer" | "mandatory", cacheSize: number | undefined) {
    this.mode = mode;
    this.#cache = new FdCache(cacheSize);
  }

  /**
   * The file handle support for `mode` over a shared directory whose root
   * O_PATH fd is `rootFd`, or null when inodes hold fds: in "never" mode,
   * and in "prefer" mode when vhostd lacks CAP_DAC_READ_SEARCH (logged).
   * Throws an Error saying why in "mandatory" mode when the root gives no
   * handle that opens again.
   */
  static open(
    mode: InodeFileHandleMode,
    rootFd: number,
    cacheSize?: number,
  ): InodeFileHandles | null {
    if (!isInodeFileHandleMode(mode)) {
      throw new Error(`inodeFileHandles must be never, prefer or mandatory`);
    }
    if (mode === "never") return null;
    const handles = new InodeFileHandles(mode, cacheSize);
    let probeFd = -1;
    try {
      const handle = handles.handleOf(rootFd, S_IFDIR);
      if (handle === null) return handles; // "prefer" on a root without handles: per inode.
      probeFd = openByHandleAt(handle.mountFd, handle.bytes, O_PATH | O_CLOEXEC);
      return handles;
    } catch (error) {
      handles.close();
      const why = errnoOf(error) === EPERM
        ? "open_by_handle_at needs CAP_DAC_READ_SEARCH"
        : reasonOf(error);
      if (mode === "mandatory") throw new Error(`--inode-file-handles mandatory: ${why}`);
      log.warn(`--inode-file-handles prefer: ${why}; every known inode holds an fd`);
      return null;
    } finally {
      closeQuietly(probeFd);
    }
  }

  /**
   * The handle of the file O_PATH fd `fd` holds (`type`: its S_IFMT bits),
   * or null when it has none usable ("prefer": the inode holds the fd).
   * "mandatory" throws FsError EOPNOTSUPP instead of answering null.
   */
  handleOf(fd: number, type: number): InodeHandle | null {
    let named;
    try {
      named = nameToHandleAt(fd, "", AT_EMPTY_PATH);
    } catch (error) {
      return this.#without(`the filesystem gives no file handle (${reasonOf(error)})`);
    }
    let mountFd = this.#mountFds.get(named.mountId);
    if (mountFd === undefined) {
      if (type !== S_IFDIR) {
        return this.#without(`mount ${named.mountId} was first reached through a non-directory`);
      }
      try {
        mountFd = reopenFd(fd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      } catch (error) {
        return this.#without(`mount ${named.mountId} cannot be opened (${reasonOf(error)})`);
      }
      this.#mountFds.set(named.mountId, mountFd);
    }
    return { bytes: named.handle, mountFd };
  }

  /** True unless the file `fd` holds has a handle other than `handle` (a new file, same number). */
  sameFile(handle: InodeHandle, fd: number): boolean {
    let bytes;
    try {
      bytes = nameToHandleAt(fd, "", AT_EMPTY_PATH).handle;
    } catch {
      return true; // No handle to compare: the identity match stands.
    }
    return bytes.length === handle.bytes.length && bytes.every((b, i) => b === handle.bytes[i]);
  }

  /**
   * The O_PATH fd of the inode `key` known by `handle`, from the cache or
   * opened by handle (SyscallError ESTALE when the file is gone). The fd
   * stays valid for the running operation (see fd_cache.ts); never close it.
   */
  fdOf(key: object, handle: InodeHandle): number {
    return this.#cache.get(
      key,
      () => openByHandleAt(handle.mountFd, handle.bytes, O_PATH | O_CLOEXEC),
    );
  }

  /** Caches `fd` (owned from now on: the lookup's fd) as the fd of inode `key`. */
  adoptFd(key: object, fd: number): void {
    this.#cache.put(key, fd);
  }

  /** Closes the cached fd of inode `key` (the inode was dropped). */
  forget(key: object): void {
    this.#cache.drop(key);
  }

  /** Closes the cached fds and the mount fds. */
  close(): void {
    this.#cache.clear();
    for (const fd of this.#mountFds.values()) closeQuietly(fd);
    this.#mountFds.clear();
  }

  #without(why: string): null {
    if (this.mode === "mandatory") throw new FsError(EOPNOTSUPP, `no file handle: ${why}`);
    return null;
  }
}
