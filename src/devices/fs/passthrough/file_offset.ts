/**
 * The u64 file offsets and lengths the guest sends (SETATTR's size,
 * FALLOCATE) as the numbers host calls take.
 *
 * @module
 */

import { EFBIG } from "../../../../ffi/mod.ts";
import { FsError } from "./fs_errors.ts";

/** A u64 file offset or length as a number; EFBIG past 2^53. */
export function fileOffset(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new FsError(EFBIG, `offset ${value}`);
  return Number(value);
}
