/**
 * Open file and directory handles: the number the guest holds (`fh`), the
 * host fd behind it, and for directories where a listing stands.
 *
 * @module
 */

import { DIRECT_WRITER_UNKNOWN } from "./direct_writer.ts";
import type { Inode } from "./inode_table.ts";
import { IdMap } from "./id_map.ts";

/**
 * Where a directory listing stands between READDIR requests: the records
 * getdents64 read from the host and not sent yet stay in `buffer`, from
 * byte `next` to `filled`.
 */
export interface DirCursor {
  /**
   * Directory offset where the next reply starts (the `off` of the last
   * entry sent), once the record at `sentAt` is taken into it.
   */
  position: bigint;
  /** getdents64 buffer, allocated on first use. */
  buffer: Uint8Array | null;
  /** Bytes of `buffer` the last getdents64 filled. */
  filled: number;
  /** Byte in `buffer` where the next record to send starts. */
  next: number;
  /**
   * Byte in `buffer` of the last record sent, whose `d_off` is the position
   * (read when it is needed, not per entry), or -1 when `position` is it.
   */
  sentAt: number;
}

/** A new cursor at the start of a directory. */
export function newDirCursor(): DirCursor {
  return { position: 0n, buffer: null, filled: 0, next: 0, sentAt: -1 };
}

/** An open file or directory. */
export interface Handle {
  /** The number the guest holds. */
  readonly fh: bigint;
  /** The host fd (a real open fd, not O_PATH); -1 for a broken placeholder. */
  fd: number;
  /**
   * The O_DIRECT descriptor io_uring WRITEs use on a FUSE host file system
   * (direct_writer.ts), or DIRECT_WRITER_UNKNOWN / DIRECT_WRITER_NONE.
   */
  directFd: number;
  /**
   * False once a direct write was refused: writes go to `fd`, but `directFd`
   * stays open until the handle closes (writes queued on it may not have
   * reached the kernel yet, and a closed number could name another file by then).
   */
  directUsable: boolean;
  /** The inode it was opened from (the handle holds an internal reference on it). */
  readonly inode: Inode;
  /** Host open flags it was opened with (O_CLOEXEC aside): what a restore reopens with. */
  readonly flags: number;
  /** True for OPENDIR handles. */
  readonly isDir: boolean;
  /** Listing state, for directories. */
  readonly dir: DirCursor | null;
  /** Why this handle is unusable after a restore, or null. */
  broken: string | null;
}

/** Handles by number. Numbers start at 1 and are never reused. */
export class HandleTable {
  readonly #handles = new IdMap<Handle>();
  #nextFh = 1n;

  /** Number of open handles. */
  get size(): number {
    return this.#handles.size;
  }

  /** The number the next handle gets. */
  get nextFh(): bigint {
    return this.#nextFh;
  }

  /**
   * Registers an open fd (the table owns it from now on). With `fh` (a
   * restore) that number is used; it must be free.
   */
  add(
    fd: number,
    inode: Inode,
    flags: number,
    isDir: boolean,
    fh?: bigint,
    broken: string | null = null,
  ): Handle {
    const number = fh ?? this.#nextFh;
    if (this.#handles.has(number)) throw new Error(`file handle ${number} is already in use`);
    const handle: Handle = {
      fh: number,
      fd,
      directFd: DIRECT_WRITER_UNKNOWN,
      directUsable: true,
      inode,
      flags,
      isDir,
      dir: isDir ? newDirCursor() : null,
      broken,
    };
    this.#handles.set(number, handle);
    if (number >= this.#nextFh) this.#nextFh = number + 1n;
    return handle;
  }

  /** Makes sure new handle numbers start at `fh` or later (after a restore). */
  reserveHandles(fh: bigint): void {
    if (fh > this.#nextFh) this.#nextFh = fh;
  }

  /** The handle with this number, if open. */
  get(fh: bigint): Handle | undefined {
    return this.#handles.get(fh);
  }

  /** Removes a handle and returns it; the caller closes its fd and releases its inode. */
  remove(fh: bigint): Handle | undefined {
    const handle = this.#handles.get(fh);
    this.#handles.delete(fh);
    return handle;
  }

  /** Every open handle, in the order they were opened. */
  values(): IterableIterator<Handle> {
    return this.#handles.values();
  }
}
