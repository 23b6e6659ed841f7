/**
 * Extended attributes (`getxattr(2)` and friends) through Deno FFI.
 *
 * Each operation comes in three forms, as in libc: on an open fd (`f*`),
 * on a path following a final symbolic link, and on a path not following
 * one (`l*`). An O_PATH fd does not work with the `f*` forms (EBADF); for
 * one, pass `/proc/self/fd/N` to the following path form, which reaches the
 * inode the fd holds, a symbolic link included, without a path lookup.
 *
 * Names and paths are `string | Uint8Array` (bytes pass untouched, a NUL
 * inside is EINVAL). Reads take the caller's buffer: an empty one (or null)
 * asks for the size only, one too small fails with ERANGE. Every failure
 * throws {@linkcode SyscallError} carrying the host errno.
 *
 * @module
 */

import { libc, throwLastError } from "./libc.ts";
import { type PathArg, pathBytes } from "./fs.ts";

/** `setxattr` flag: fail with EEXIST when the attribute exists. */
export const XATTR_CREATE = 1;
/** `setxattr` flag: fail with ENODATA when the attribute does not exist. */
export const XATTR_REPLACE = 2;
/** Longest attribute name Linux accepts (`XATTR_NAME_MAX`). */
export const XATTR_NAME_MAX = 255;
/** Largest attribute value Linux accepts (`XATTR_SIZE_MAX`). */
export const XATTR_SIZE_MAX = 65536;
/** Largest name list `listxattr` returns (`XATTR_LIST_MAX`). */
export const XATTR_LIST_MAX = 65536;

/** How a path form treats a final symbolic link. */
export type XattrFollow = "follow" | "nofollow";

const lossy = new TextDecoder("utf-8", { fatal: false });

function detail(where: string, name?: PathArg): string {
  if (name === undefined) return where;
  const text = typeof name === "string" ? name : lossy.decode(name);
  return `${where}, ${JSON.stringify(text)}`;
}

function fdWhere(fd: number): string {
  return `fd ${fd}`;
}

function pathWhere(path: PathArg): string {
  return typeof path === "string" ? path : lossy.decode(path);
}

/** The buffer argument and its size: null and 0 for a size query. */
function outBuffer(
  buffer: Uint8Array<ArrayBuffer> | null,
): [Uint8Array<ArrayBuffer> | null, bigint] {
  if (buffer === null || buffer.byteLength === 0) return [null, 0n];
  return [buffer, BigInt(buffer.byteLength)];
}

function sizeResult(result: number | bigint, syscall: string, where: string): number {
  if (result < 0) throwLastError(syscall, where);
  return Number(result);
}

/**
 * Reads attribute `name` of open file `fd` into `value`; returns the value's
 * length (with an empty or null `value`: the length it would need).
 */
export function fgetxattr(
  fd: number,
  name: PathArg,
  value: Uint8Array<ArrayBuffer> | null,
): number {
  const [buffer, size] = outBuffer(value);
  const result = libc().fgetxattr(fd, pathBytes("fgetxattr", name), buffer, size);
  return sizeResult(result, "fgetxattr", detail(fdWhere(fd), name));
}

/** {@linkcode fgetxattr} on a path (`getxattr`, or `lgetxattr` with "nofollow"). */
export function getxattr(
  path: PathArg,
  name: PathArg,
  value: Uint8Array<ArrayBuffer> | null,
  follow: XattrFollow = "follow",
): number {
  const syscall = follow === "follow" ? "getxattr" : "lgetxattr";
  const [buffer, size] = outBuffer(value);
  const result = libc()[syscall](
    pathBytes(syscall, path),
    pathBytes(syscall, name),
    buffer,
    size,
  );
  return sizeResult(result, syscall, detail(pathWhere(path), name));
}

/**
 * Lists the attribute names of open file `fd` into `list` (each name
 * followed by a NUL); returns the list's length (with an empty or null
 * `list`: the length it would need).
 */
export function flistxattr(fd: number, list: Uint8Array<ArrayBuffer> | null): number {
  const [buffer, size] = outBuffer(list);
  return sizeResult(libc().flistxattr(fd, buffer, size), "flistxattr", fdWhere(fd));
}

/** {@linkcode flistxattr} on a path (`listxattr`, or `llistxattr` with "nofollow"). */
export function listxattr(
  path: PathArg,
  list: Uint8Array<ArrayBuffer> | null,
  follow: XattrFollow = "follow",
): number {
  const syscall = follow === "follow" ? "listxattr" : "llistxattr";
  const [buffer, size] = outBuffer(list);
  const result = libc()[syscall](pathBytes(syscall, path), buffer, size);
  return sizeResult(result, syscall, pathWhere(path));
}

/** Sets attribute `name` of open file `fd` to `value` (`flags`: XATTR_CREATE, XATTR_REPLACE). */
export function fsetxattr(fd: number, name: PathArg, value: Uint8Array, flags: number): void {
  const bytes = valueBytes(value);
  const result = libc().fsetxattr(
    fd,
    pathBytes("fsetxattr", name),
    bytes,
    BigInt(value.byteLength),
    flags,
  );
  if (result < 0) throwLastError("fsetxattr", detail(fdWhere(fd), name));
}

/** {@linkcode fsetxattr} on a path (`setxattr`, or `lsetxattr` with "nofollow"). */
export function setxattr(
  path: PathArg,
  name: PathArg,
  value: Uint8Array,
  flags: number,
  follow: XattrFollow = "follow",
): void {
  const syscall = follow === "follow" ? "setxattr" : "lsetxattr";
  const result = libc()[syscall](
    pathBytes(syscall, path),
    pathBytes(syscall, name),
    valueBytes(value),
    BigInt(value.byteLength),
    flags,
  );
  if (result < 0) throwLastError(syscall, detail(pathWhere(path), name));
}

/** Removes attribute `name` of open file `fd` (ENODATA when it has none). */
export function fremovexattr(fd: number, name: PathArg): void {
  if (libc().fremovexattr(fd, pathBytes("fremovexattr", name)) < 0) {
    throwLastError("fremovexattr", detail(fdWhere(fd), name));
  }
}

/** {@linkcode fremovexattr} on a path (`removexattr`, or `lremovexattr` with "nofollow"). */
export function removexattr(path: PathArg, name: PathArg, follow: XattrFollow = "follow"): void {
  const syscall = follow === "follow" ? "removexattr" : "lremovexattr";
  if (libc()[syscall](pathBytes(syscall, path), pathBytes(syscall, name)) < 0) {
    throwLastError(syscall, detail(pathWhere(path), name));
  }
}

/**
 * Splits a `listxattr` result (names each followed by a NUL) into the
 * names; bytes after the last NUL (none from the kernel) are ignored.
 */
export function splitXattrList(list: Uint8Array): Uint8Array[] {
  const names: Uint8Array[] = [];
  let start = 0;
  for (;;) {
    const nul = list.indexOf(0, start);
    if (nul === -1) return names;
    if (nul > start) names.push(list.subarray(start, nul));
    start = nul + 1;
  }
}

/** A value as a buffer FFI can pass (an empty value is a null pointer with size 0). */
function valueBytes(value: Uint8Array): Uint8Array | null {
  return value.byteLength === 0 ? null : value;
}
