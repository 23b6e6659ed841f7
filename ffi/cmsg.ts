/**
 * Packing and parsing of SCM_RIGHTS control messages (`struct cmsghdr` on
 * x86-64: u64 len, i32 level, i32 type, then data padded to 8 bytes).
 *
 * @module
 */

import { SCM_RIGHTS, SOL_SOCKET } from "./constants.ts";
import { readU64, writeU64 } from "./struct.ts";

/** Size of the `cmsghdr` header. */
export const CMSG_HEADER_SIZE = 16;

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** CMSG_LEN: header plus `dataLength` bytes, unpadded (the value of `cmsg_len`). */
export function cmsgLen(dataLength: number): number {
  return CMSG_HEADER_SIZE + dataLength;
}

/** CMSG_SPACE: header plus `dataLength` bytes padded to 8 (room taken in the buffer). */
export function cmsgSpace(dataLength: number): number {
  return CMSG_HEADER_SIZE + align8(dataLength);
}

/**
 * Writes one SCM_RIGHTS message carrying `fds` at `offset` of `view`, padding
 * zeroed; returns its CMSG_SPACE. The view must have room for it.
 */
export function writeRights(view: DataView, offset: number, fds: readonly number[]): number {
  const dataLength = fds.length * 4;
  writeU64(view, offset, cmsgLen(dataLength));
  view.setInt32(offset + 8, SOL_SOCKET, true);
  view.setInt32(offset + 12, SCM_RIGHTS, true);
  const data = offset + CMSG_HEADER_SIZE;
  for (let i = 0; i < fds.length; i++) view.setInt32(data + 4 * i, fds[i], true);
  const space = cmsgSpace(dataLength);
  for (let p = data + dataLength; p < offset + space; p++) view.setUint8(p, 0);
  return space;
}

/**
 * The fds of every SCM_RIGHTS message in the first `length` bytes of `view`,
 * in order; other control messages are skipped. A message whose length runs
 * past `length` (truncated) yields the fds that are wholly inside it.
 */
export function collectRights(view: DataView, length: number): number[] {
  const fds: number[] = [];
  let offset = 0;
  while (offset + CMSG_HEADER_SIZE <= length) {
    const messageLength = readU64(view, offset);
    if (messageLength < CMSG_HEADER_SIZE) break;
    const end = Math.min(offset + messageLength, length);
    if (
      view.getInt32(offset + 8, true) === SOL_SOCKET &&
      view.getInt32(offset + 12, true) === SCM_RIGHTS
    ) {
      for (let p = offset + CMSG_HEADER_SIZE; p + 4 <= end; p += 4) {
        fds.push(view.getInt32(p, true));
      }
    }
    offset += align8(messageLength);
  }
  return fds;
}
