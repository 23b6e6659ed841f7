/**
 * Typed-array views over guest memory for ring fields that another process
 * reads or writes concurrently; those fields are accessed with `Atomics`.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";

/**
 * True when the host is little-endian. Typed arrays use host byte order while
 * virtio rings are little-endian, so the ring code refuses big-endian hosts.
 */
export const HOST_IS_LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Where an aligned typed view over a guest range starts, or why there is none. */
function locate(
  memory: GuestMemory,
  gpa: number,
  byteLen: number,
  element: number,
  what: string,
): { buffer: ArrayBufferLike; byteOffset: number } | string {
  if (!HOST_IS_LITTLE_ENDIAN) return "virtqueues need a little-endian host";
  if (gpa % element !== 0) {
    return `${what} at 0x${gpa.toString(16)} is not ${element}-byte aligned`;
  }
  const hit = memory.resolve(gpa, byteLen);
  if (hit === undefined) {
    return `${what} [0x${gpa.toString(16)}, +${byteLen}) is not inside guest memory`;
  }
  const bytes = hit.region.bytes;
  const byteOffset = bytes.byteOffset + hit.offset;
  // The guest address is aligned, but a region's host view need not be.
  if (byteOffset % element !== 0) {
    return `${what} at 0x${gpa.toString(16)} is not aligned in its host mapping`;
  }
  return { buffer: bytes.buffer, byteOffset };
}

/** A Uint16Array over guest `[gpa, gpa+byteLen)` (length rounded down), or an error string. */
export function guestU16View(
  memory: GuestMemory,
  gpa: number,
  byteLen: number,
  what: string,
): Uint16Array | string {
  const at = locate(memory, gpa, byteLen, 2, what);
  return typeof at === "string" ? at : new Uint16Array(at.buffer, at.byteOffset, byteLen >>> 1);
}

/** A Uint32Array over guest `[gpa, gpa+byteLen)` (length rounded down), or an error string. */
export function guestU32View(
  memory: GuestMemory,
  gpa: number,
  byteLen: number,
  what: string,
): Uint32Array | string {
  const at = locate(memory, gpa, byteLen, 4, what);
  return typeof at === "string" ? at : new Uint32Array(at.buffer, at.byteOffset, byteLen >>> 2);
}
