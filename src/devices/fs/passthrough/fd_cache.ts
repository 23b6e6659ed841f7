/**
 * A bounded cache of O_PATH fds, least recently used out first: the fds of
 * inodes that are known by file handle and opened again on demand.
 *
 * Why eviction never closes an fd still in use: an operation reads an
 * inode's fd right before the system call that uses it, and no operation
 * holds the fds of more than four inodes at once (RENAME: two directories;
 * LINK: the file and a directory; READDIRPLUS looks up many names but takes
 * the directory's fd anew for each). A miss closes only the least recently
 * used fd, and every fd the running operation holds was read within its
 * last few reads, so it is among the most recent {@linkcode MIN_FD_CACHE_SIZE}
 * entries and never the least recent one. Requests are served one at a time
 * (one Worker, synchronous calls), so no other operation interleaves.
 *
 * Running out of fds: when opening fails with EMFILE or ENFILE (the guest
 * holds many files open, or the limit is low) the cache halves its capacity
 * for good, closing its least recently used half, and tries once more. It
 * never shrinks below {@linkcode MIN_FD_CACHE_SIZE}, so the argument above
 * still holds.
 *
 * @module
 */

import { closeQuietly, EMFILE, ENFILE, SyscallError } from "../../../../ffi/mod.ts";

/** Smallest accepted capacity: far more than the fds one operation holds at once. */
export const MIN_FD_CACHE_SIZE = 16;

/** Default capacity: a working set of a thousand files, a quarter of a 4,096 fd limit. */
export const DEFAULT_FD_CACHE_SIZE = 1024;

/** O_PATH fds by key, at most `capacity` of them open. */
export class FdCache<K> {
  /** Insertion order is recency order: the first entry is the least recently used. */
  readonly #fds = new Map<K, number>();
  #capacity: number;

  /** A cache of at most `capacity` fds (at least {@linkcode MIN_FD_CACHE_SIZE}). */
  constructor(capacity: number = DEFAULT_FD_CACHE_SIZE) {
    if (!Number.isSafeInteger(capacity) || capacity < MIN_FD_CACHE_SIZE) {
      throw new RangeError(`the fd cache needs room for at least ${MIN_FD_CACHE_SIZE} fds`);
    }
    this.#capacity = capacity;
  }

  /** Number of fds open in the cache. */
  get size(): number {
    return this.#fds.size;
  }

  /** Most fds the cache keeps open. */
  get capacity(): number {
    return this.#capacity;
  }

  /** True when `key` has an open fd here (does not count as a use). */
  has(key: K): boolean {
    return this.#fds.has(key);
  }

  /**
   * The fd of `key`, now the most recently used; on a miss `open()` makes
   * one (its throw passes through, nothing cached) and the least recently
   * used fd beyond capacity is closed. When `open()` runs out of fds the
   * cache shrinks and calls it once more (see the module doc).
   */
  get(key: K, open: () => number): number {
    const cached = this.#fds.get(key);
    if (cached !== undefined) {
      this.#fds.delete(key);
      this.#fds.set(key, cached);
      return cached;
    }
    let fd: number;
    try {
      fd = open();
    } catch (error) {
      if (!this.#shrinkAfter(error)) throw error;
      fd = open();
    }
    this.put(key, fd);
    return fd;
  }

  /** Caches `fd` (owned from now on) as the most recently used fd of `key`, replacing any other. */
  put(key: K, fd: number): void {
    const previous = this.#fds.get(key);
    if (previous !== undefined) {
      this.#fds.delete(key);
      if (previous !== fd) closeQuietly(previous);
    }
    this.#fds.set(key, fd);
    this.#evictBeyondCapacity();
  }

  /** Closes and forgets the fd of `key`, if any. */
  drop(key: K): void {
    const fd = this.#fds.get(key);
    if (fd === undefined) return;
    this.#fds.delete(key);
    closeQuietly(fd);
  }

  #evictBeyondCapacity(): void {
    while (this.#fds.size > this.#capacity) {
      const [oldest, oldestFd] = this.#fds.entries().next().value!;
      this.#fds.delete(oldest);
      closeQuietly(oldestFd);
    }
  }

  /** After `error` from an open: true when it was EMFILE/ENFILE and the cache made room. */
  #shrinkAfter(error: unknown): boolean {
    if (!(error instanceof SyscallError) || (error.errno !== EMFILE && error.errno !== ENFILE)) {
      return false;
    }
    const smaller = Math.max(MIN_FD_CACHE_SIZE, Math.floor(this.#fds.size / 2));
    if (smaller >= this.#fds.size) return false;
    this.#capacity = smaller;
    this.#evictBeyondCapacity();
    return true;
  }

  /** Closes every fd. */
  clear(): void {
    for (const fd of this.#fds.values()) closeQuietly(fd);
    this.#fds.clear();
  }
}
