/**
 * Errors of the passthrough filesystem: {@linkcode FsError} is a failure the
 * guest sees as `-errno`; {@linkcode FsRestoreError} is a migration restore
 * that cannot go on.
 *
 * @module
 */

import { errnoName, SyscallError } from "../../../../ffi/mod.ts";

/** A guest-visible failure of a filesystem operation: the FUSE reply carries `-errno`. */
export class FsError extends Error {
  /** Positive errno for the reply. */
  readonly errno: number;

  /** Creates an error answering `errno`, with an optional description for logs. */
  constructor(errno: number, message?: string) {
    super(message ?? errnoName(errno));
    this.name = "FsError";
    this.errno = errno;
  }
}

const plainErrors = new Map<number, FsError>();

/**
 * The FsError answering `errno` with no detail, one instance per errno
 * (thrown again each time): for failures that are ordinary answers on a hot
 * path, such as ENOENT for a LOOKUP of a missing name. Constructing an Error
 * costs about 1.3 µs in Deno, stack trace limit or not; its stack says
 * nothing here, and these errors are never logged.
 */
export function plainFsError(errno: number): FsError {
  let error = plainErrors.get(errno);
  if (error === undefined) {
    error = new FsError(errno);
    plainErrors.set(errno, error);
  }
  return error;
}

/**
 * Translates a host failure into a guest-visible one: a SyscallError becomes
 * an FsError with the same errno, an FsError stays as it is. Anything else is
 * returned unchanged: it is a bug, which the request handler logs and answers
 * with EIO.
 */
export function toFsError(error: unknown): unknown {
  if (error instanceof FsError) return error;
  if (error instanceof SyscallError) return new FsError(error.errno, error.message);
  return error;
}

/** The errno of a host or guest-visible failure, or undefined for anything else. */
export function errnoOf(error: unknown): number | undefined {
  if (error instanceof FsError || error instanceof SyscallError) return error.errno;
  return undefined;
}

/** A migration restore that failed (a malformed snapshot, or a file that cannot be found again). */
export class FsRestoreError extends Error {
  /** Creates a restore error; the message says what could not be restored and why. */
  constructor(message: string) {
    super(message);
    this.name = "FsRestoreError";
  }
}
