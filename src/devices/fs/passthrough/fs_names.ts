/**
 * Rules for the single path components the guest sends (LOOKUP, MKDIR,
 * RENAME...): one component, never a path. Nothing here touches the host.
 *
 * @module
 */

import { EINVAL, ENAMETOOLONG } from "../../../../ffi/mod.ts";
import { FUSE_NAME_MAX } from "../fuse/fuse_abi.ts";
import { FsError } from "./fs_errors.ts";

const SLASH = 0x2f;
const DOT = 0x2e;
const NUL = 0;

/** What a valid component is: "." , ".." or an ordinary name. */
export type ComponentKind = "dot" | "dotdot" | "name";

/** True for "." and "..". */
export function isDotName(name: Uint8Array): boolean {
  return (name.length === 1 && name[0] === DOT) ||
    (name.length === 2 && name[0] === DOT && name[1] === DOT);
}

/**
 * Checks a component the guest looks up: EINVAL when empty or holding `/` or
 * NUL, ENAMETOOLONG past 255 bytes. Returns whether it is ".", ".." or a name.
 */
export function classifyComponent(name: Uint8Array): ComponentKind {
  if (name.length === 0) throw new FsError(EINVAL, "empty name");
  if (name.length > FUSE_NAME_MAX) {
    throw new FsError(ENAMETOOLONG, `name of ${name.length} bytes`);
  }
  // One plain loop: TypedArray includes() is a call into the runtime (~5x the loop on a short name).
  for (let i = 0; i < name.length; i++) {
    const byte = name[i];
    if (byte === SLASH) throw new FsError(EINVAL, "name contains '/'");
    if (byte === NUL) throw new FsError(EINVAL, "name contains a NUL byte");
  }
  if (name.length === 1 && name[0] === DOT) return "dot";
  if (name.length === 2 && name[0] === DOT && name[1] === DOT) return "dotdot";
  return "name";
}

/**
 * Checks a component that names an entry to create, remove or rename: the
 * rules of {@linkcode classifyComponent}, and "." or ".." are EINVAL too.
 */
export function checkEntryName(name: Uint8Array): void {
  if (classifyComponent(name) !== "name") {
    throw new FsError(EINVAL, `"${name.length === 1 ? "." : ".."}" cannot be changed`);
  }
}

/** True when two names hold the same bytes. */
export function sameName(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const lossyDecoder = new TextDecoder("utf-8", { fatal: false });

/** A printable form of name bytes for messages (invalid UTF-8 becomes U+FFFD). */
export function printableName(name: Uint8Array): string {
  return lossyDecoder.decode(name);
}

/** Lower-case hex of `bytes` (how names travel in snapshots: exact and readable). */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

/** The bytes of a hex string from {@linkcode toHex}; undefined when it is not even-length hex. */
export function fromHex(text: string): Uint8Array | undefined {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return undefined;
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}
