/**
 * Little-endian field access and range checks shared by the codecs.
 *
 * Internal to `src/protocol/`: not re-exported by `mod.ts`.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";

/** Largest value a u32 field can carry. */
export const U32_MAX = 0xffff_ffff;
/** Largest value a u64 field can carry. */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** A DataView over exactly the bytes of `bytes`, wherever it sits in its buffer. */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Throws ProtocolError unless `payload` is exactly `expected` bytes long. */
export function expectLength(what: string, payload: Uint8Array, expected: number): void {
  if (payload.byteLength !== expected) {
    throw new ProtocolError(
      `${what}: payload is ${payload.byteLength} bytes, expected ${expected}`,
    );
  }
}

/** Checks that `value` fits a u16 field; encoders use it on caller-supplied values. */
export function checkU16(what: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new RangeError(`${what}: ${value} does not fit in a u16`);
  }
  return value;
}

/** Checks that `value` fits a u32 field; encoders use it on caller-supplied values. */
export function checkU32(what: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new RangeError(`${what}: ${value} does not fit in a u32`);
  }
  return value;
}

/** Checks that `value` fits a u64 field and returns it as a bigint. */
export function checkU64(what: string, value: bigint | number): bigint {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`${what}: ${value} is not a non-negative safe integer`);
    }
    return BigInt(value);
  }
  if (value < 0n || value > U64_MAX) {
    throw new RangeError(`${what}: ${value} does not fit in a u64`);
  }
  return value;
}

/** Formats a bigint address or size as hex for error messages. */
export function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}
