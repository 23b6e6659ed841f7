/**
 * The interface of a file I/O engine: how a device's data half submits file
 * I/O without waiting for it. Two engines implement it: io_uring (many
 * operations in flight, completions signalled on an eventfd the queue Worker
 * watches) and a synchronous fallback (each operation runs inside the call and
 * its completion is reported before the call returns).
 *
 * @module
 */

import type { IovecArray } from "../../ffi/mod.ts";

/** Names of the engines, as `--aio` spells them. */
export type FileIoEngineKind = "io_uring" | "sync";

/**
 * Receives the result of one operation: bytes moved (readv/writev), 0
 * (fsync, fallocate), or a negative errno (`-EIO`).
 */
export type IoCompletion = (result: number) => void;

/**
 * Submits file operations and reports their completions.
 *
 * Iovec arrays passed in must stay alive and unchanged until their completion
 * ran (the engine may rewrite them to resume a short transfer); the memory
 * they point at must stay mapped until then too.
 */
export interface FileIoEngine {
  /** Which engine this is. */
  readonly kind: FileIoEngineKind;
  /**
   * The fd to watch for readability: it becomes readable when completions
   * are waiting, then call {@linkcode reap}. `undefined` when completions are
   * always reported before the submitting call returns (the sync engine).
   */
  readonly completionFd: number | undefined;
  /** Operations submitted (or queued) whose completion has not run yet. */
  readonly inflight: number;
  /**
   * Reads into the first `count` entries of `iov` from `fd` at `offset`. A
   * short read is resumed until every byte arrived, end of file, or an error;
   * the result is the bytes moved, or the negative errno when none moved.
   */
  readv(fd: number, iov: IovecArray, count: number, offset: number, done: IoCompletion): void;
  /**
   * Writes the first `count` entries of `iov` to `fd` at `offset`, resumed
   * like `readv`. With `dsync` the data is durable before `done` runs
   * (RWF_DSYNC: a write-through cache).
   */
  writev(
    fd: number,
    iov: IovecArray,
    count: number,
    offset: number,
    dsync: boolean,
    done: IoCompletion,
  ): void;
  /** fsync(2), or fdatasync(2) when `dataOnly`. */
  fsync(fd: number, dataOnly: boolean, done: IoCompletion): void;
  /** fallocate(2) with `mode` (FALLOC_FL_* bits). */
  fallocate(fd: number, mode: number, offset: number, length: number, done: IoCompletion): void;
  /** Hands queued operations to the kernel (one system call for a batch). */
  submit(): void;
  /**
   * Optional: true when completions are waiting for {@linkcode reap}, found
   * without a system call (so an event loop may poll instead of sleeping).
   */
  hasCompletions?(): boolean;
  /** Runs the completions of every finished operation; returns how many ran. */
  reap(): number;
  /** Releases the engine (after its in-flight operations completed). */
  close(): void;
}
