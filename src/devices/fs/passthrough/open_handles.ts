/**
 * The guest's open file and directory handles as the operations use them:
 * an fd registered as a new handle (holding its inode, answered with the
 * cache policy's FOPEN_* flags), the handle a request names, and closing.
 *
 * @module
 */

import { closeQuietly, EBADF, EIO, EISDIR, ENOTDIR } from "../../../../ffi/mod.ts";
import { closeDirectWriter } from "./direct_writer.ts";
import { FsError } from "./fs_errors.ts";
import type { OpenResult } from "./fs_types.ts";
import { type Handle, HandleTable } from "./handle_table.ts";
import type { Inode, InodeTable } from "./inode_table.ts";

/** Handles of one filesystem over the inodes of one table. */
export class OpenHandles {
  /** The handles by number, as they are (snapshots read it, restores fill it). */
  readonly table: HandleTable = new HandleTable();
  readonly #inodes: InodeTable;
  readonly #fileOpenFlags: number;
  readonly #dirOpenFlags: number;

  /** Handles of `inodes`' inodes, opened with these FOPEN_* flags (from the cache policy). */
  constructor(inodes: InodeTable, fileOpenFlags: number, dirOpenFlags: number) {
    this.#inodes = inodes;
    this.#fileOpenFlags = fileOpenFlags;
    this.#dirOpenFlags = dirOpenFlags;
  }

  /** Registers `fd` (owned from now on) as a new handle of `inode`, which it holds. */
  add(fd: number, inode: Inode, flags: number, isDir: boolean): OpenResult {
    const handle = this.table.add(fd, inode, flags, isDir);
    this.#inodes.hold(inode);
    return { fh: handle.fh, openFlags: isDir ? this.#dirOpenFlags : this.#fileOpenFlags };
  }

  /** The open file handle `fh`: EBADF if unknown, EIO if broken, EISDIR for a directory's. */
  file(fh: bigint): Handle {
    const handle = this.#usable(fh);
    if (handle.isDir) throw new FsError(EISDIR, `file handle ${fh} is a directory`);
    return handle;
  }

  /** The open directory handle `fh`: EBADF if unknown, EIO if broken, ENOTDIR for a file's. */
  dir(fh: bigint): Handle {
    const handle = this.#usable(fh);
    if (!handle.isDir || handle.dir === null) {
      throw new FsError(ENOTDIR, `file handle ${fh} is not a directory`);
    }
    return handle;
  }

  /** Closes handle `fh` and releases its inode; unknown handles are ignored. */
  close(fh: bigint): void {
    const handle = this.table.remove(fh);
    if (handle === undefined) return;
    closeQuietly(handle.fd);
    closeDirectWriter(handle.directFd);
    this.#inodes.release(handle.inode);
  }

  /** Closes every handle without releasing inodes: the caller clears the inode table next. */
  closeAll(): void {
    for (const handle of [...this.table.values()]) {
      this.table.remove(handle.fh);
      closeQuietly(handle.fd);
      closeDirectWriter(handle.directFd);
    }
  }

  #usable(fh: bigint): Handle {
    const handle = this.table.get(fh);
    if (handle === undefined) throw new FsError(EBADF, `unknown file handle ${fh}`);
    if (handle.broken !== null) throw new FsError(EIO, handle.broken);
    return handle;
  }
}
