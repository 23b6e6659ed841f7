/**
 * Small helpers for packing C structs into byte buffers (x86-64, little
 * endian). 64-bit fields are handled as JS numbers split into two 32-bit
 * halves: addresses and sizes here stay below 2^53, and this avoids a BigInt
 * per field.
 *
 * @module
 */

import { EINVAL, SyscallError } from "./errno.ts";

const TWO_POW_32 = 0x1_0000_0000;

/** Writes a non-negative integer below 2^53 as a little-endian u64. */
export function writeU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value >>> 0, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_POW_32), true);
}

/** Reads a little-endian u64 as a number (exact below 2^53). */
export function readU64(view: DataView, offset: number): number {
  return view.getUint32(offset, true) + view.getUint32(offset + 4, true) * TWO_POW_32;
}

/** A fresh zeroed byte array with its own off-heap ArrayBuffer (a stable host address). */
export function allocateBytes(length: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(length));
}

const encoder = new TextEncoder();

/**
 * UTF-8 bytes of `text` followed by a NUL, for C string arguments. Refuses
 * text containing NUL (C would silently cut it there) with EINVAL.
 */
export function cString(syscall: string, text: string): Uint8Array<ArrayBuffer> {
  if (text.includes("\0")) {
    throw new SyscallError(syscall, EINVAL, "string contains a NUL byte");
  }
  const bytes = allocateBytes(text.length * 3 + 1);
  const { written } = encoder.encodeInto(text, bytes);
  return bytes.subarray(0, written + 1);
}
