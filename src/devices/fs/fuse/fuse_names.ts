/**
 * NUL-terminated strings inside FUSE requests: framing and the checks that
 * belong to the ABI layer (length limits, `/` and NUL bytes). Whether a name
 * is `.` or `..` is for the filesystem to judge.
 *
 * @module
 */

import { FUSE_NAME_MAX, FUSE_SYMLINK_MAX, FUSE_XATTR_NAME_MAX } from "./fuse_abi.ts";
import { FuseErrno, FuseNameError, FuseProtocolError } from "./fuse_errors.ts";

/**
 * What a string is, which sets its rules: a directory `entry` name (1..255
 * bytes, no `/`), an `xattr` name (1..255 bytes, `/` allowed, too long is
 * ERANGE as in setxattr(2)), or a `symlink` target (1..4095 bytes).
 */
export type FuseStringKind = "entry" | "xattr" | "symlink";

const SLASH = 0x2f;

const LIMITS: Readonly<Record<FuseStringKind, { max: number; errno: number }>> = {
  entry: { max: FUSE_NAME_MAX, errno: FuseErrno.ENAMETOOLONG },
  xattr: { max: FUSE_XATTR_NAME_MAX, errno: FuseErrno.ERANGE },
  symlink: { max: FUSE_SYMLINK_MAX, errno: FuseErrno.ENAMETOOLONG },
};

/**
 * Returns the FuseNameError that `bytes` (a string without its terminator)
 * deserves as a `kind` string, or undefined when it is acceptable.
 */
export function fuseStringProblem(
  bytes: Uint8Array,
  kind: FuseStringKind,
  what: string,
): FuseNameError | undefined {
  if (bytes.byteLength === 0) return new FuseNameError(`${what} is empty`, FuseErrno.EINVAL);
  const limit = LIMITS[kind];
  if (bytes.byteLength > limit.max) {
    return new FuseNameError(
      `${what} is ${bytes.byteLength} bytes, longer than ${limit.max}`,
      limit.errno,
    );
  }
  if (bytes.indexOf(0) !== -1) {
    return new FuseNameError(`${what} contains a NUL byte`, FuseErrno.EINVAL);
  }
  if (kind === "entry" && bytes.indexOf(SLASH) !== -1) {
    return new FuseNameError(`${what} contains '/'`, FuseErrno.EINVAL);
  }
  return undefined;
}

/**
 * The directory entry name that fills `bytes` from `start` to `end` with
 * its NUL as the last byte (a LOOKUP's or UNLINK's whole body), as a view,
 * when it passes every check {@linkcode readLastFuseString} makes;
 * undefined for anything else, which that decoder then reports.
 */
export function wellFormedLastName(
  bytes: Uint8Array,
  start: number,
  end: number,
): Uint8Array | undefined {
  const length = end - 1 - start;
  if (!(length >= 1 && length <= FUSE_NAME_MAX) || end > bytes.length || bytes[end - 1] !== 0) {
    return undefined;
  }
  for (let i = start; i < end - 1; i++) {
    const byte = bytes[i];
    if (byte === 0 || byte === SLASH) return undefined;
  }
  return bytes.subarray(start, end - 1);
}

/** A string taken out of a request, and where the bytes after its NUL start. */
export interface FuseStringSpan {
  /**
   * The string's bytes without the NUL: a copy, so the guest cannot change
   * it after the checks; with `view`, a view of the body (for a caller that
   * copied the request out of guest memory already).
   */
  bytes: Uint8Array;
  /** Index just past the terminating NUL. */
  end: number;
}

/**
 * Reads the NUL-terminated string that starts at `start` of `body` and
 * checks it. A missing NUL is a framing fault (FuseProtocolError); a bad
 * string is a FuseNameError. With `view` the bytes are a view of `body`
 * rather than a copy.
 */
export function readFuseString(
  body: Uint8Array,
  start: number,
  kind: FuseStringKind,
  what: string,
  view = false,
): FuseStringSpan {
  const nul = start <= body.byteLength ? body.indexOf(0, start) : -1;
  if (nul === -1) {
    throw new FuseProtocolError(`${what}: no terminating NUL in the request`);
  }
  // Check the length first so an over-long name costs no more than the limit.
  const limit = LIMITS[kind];
  if (nul - start > limit.max) {
    throw new FuseNameError(
      `${what} is ${nul - start} bytes, longer than ${limit.max}`,
      limit.errno,
    );
  }
  // A copy is an ArrayBuffer, so a malloc and a free, per name: skipped when asked.
  const bytes = view ? body.subarray(start, nul) : body.slice(start, nul);
  const problem = fuseStringProblem(bytes, kind, what);
  if (problem) throw problem;
  return { bytes, end: nul + 1 };
}

/**
 * Reads the string that must end the request: bytes after its NUL mean the
 * name held a NUL byte (FuseNameError, EINVAL).
 */
export function readLastFuseString(
  body: Uint8Array,
  start: number,
  kind: FuseStringKind,
  what: string,
  view = false,
): Uint8Array {
  const span = readFuseString(body, start, kind, what, view);
  if (span.end !== body.byteLength) {
    throw new FuseNameError(
      `${what} contains a NUL byte (${body.byteLength - span.end} bytes follow its first NUL)`,
      FuseErrno.EINVAL,
    );
  }
  return span.bytes;
}
