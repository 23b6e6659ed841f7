/**
 * Request extensions (FUSE 7.38): `fuse_in_header.total_extlen` counts
 * 8-byte units at the end of a request, after its op-specific input, made
 * of records that each start with `struct fuse_ext_header` (size including
 * the header, type). The one vhostd reads is FUSE_EXT_GROUPS, the
 * supplementary group a create-type request carries when
 * FUSE_CREATE_SUPP_GROUP was negotiated; other types are skipped.
 *
 * @module
 */

import { FUSE_EXT_HEADER_SIZE, FuseExtType } from "./fuse_abi.ts";
import { FuseProtocolError } from "./fuse_errors.ts";

/** What the extensions of one request said. */
export interface FuseRequestExtensions {
  /** Supplementary groups of the caller (FUSE_EXT_GROUPS), when sent. */
  groups?: number[];
}

/** A request's op-specific input with its extensions cut off and decoded. */
export interface FuseExtendedBody {
  /** The input before the extensions: a view, not a copy. */
  args: Uint8Array;
  /** The decoded extensions. */
  extensions: FuseRequestExtensions;
}

/**
 * Cuts the last `totalExtlen` × 8 bytes off `body` (a request's bytes after
 * fuse_in_header) and decodes them. FuseProtocolError (EINVAL) when they do
 * not fit the body, a record's size is not a multiple of 8 of at least the
 * header, overruns the area, or a group list does not fit its record.
 */
export function splitExtensions(body: Uint8Array, totalExtlen: number): FuseExtendedBody {
  if (totalExtlen === 0) return { args: body, extensions: {} };
  const length = totalExtlen * 8;
  if (length > body.byteLength) {
    throw new FuseProtocolError(
      `total_extlen ${totalExtlen} (${length} bytes) exceeds the ${body.byteLength}-byte body`,
    );
  }
  const start = body.byteLength - length;
  const view = new DataView(body.buffer, body.byteOffset + start, length);
  const extensions: FuseRequestExtensions = {};
  for (let at = 0; at < length;) {
    if (length - at < FUSE_EXT_HEADER_SIZE) {
      throw new FuseProtocolError(`request extension at ${at}: ${length - at} bytes left`);
    }
    const size = view.getUint32(at, true);
    const type = view.getUint32(at + 4, true);
    if (size < FUSE_EXT_HEADER_SIZE || size % 8 !== 0 || size > length - at) {
      throw new FuseProtocolError(
        `request extension at ${at}: size ${size} in a ${length - at}-byte remainder`,
      );
    }
    if (type === FuseExtType.GROUPS) extensions.groups = readGroups(view, at, size);
    at += size;
  }
  return { args: body.subarray(0, start), extensions };
}

/** `struct fuse_supp_groups` of the record at `at`: nr_groups, then the gids. */
function readGroups(view: DataView, at: number, size: number): number[] {
  const room = size - FUSE_EXT_HEADER_SIZE;
  if (room < 4) throw new FuseProtocolError("FUSE_EXT_GROUPS without a group count");
  const count = view.getUint32(at + FUSE_EXT_HEADER_SIZE, true);
  if (count > (room - 4) / 4) {
    throw new FuseProtocolError(`FUSE_EXT_GROUPS: ${count} groups in a ${size}-byte record`);
  }
  const groups: number[] = [];
  for (let i = 0; i < count; i++) {
    groups.push(view.getUint32(at + FUSE_EXT_HEADER_SIZE + 4 + i * 4, true));
  }
  return groups;
}

/**
 * The bytes of a FUSE_EXT_GROUPS extension for `groups`, padded to 8 bytes,
 * as a guest kernel appends it (for drivers and tests).
 */
export function encodeGroupsExtension(groups: readonly number[]): Uint8Array {
  const size = Math.ceil((FUSE_EXT_HEADER_SIZE + 4 + groups.length * 4) / 8) * 8;
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, size, true);
  view.setUint32(4, FuseExtType.GROUPS, true);
  view.setUint32(8, groups.length, true);
  groups.forEach((gid, i) => view.setUint32(12 + i * 4, gid >>> 0, true));
  return bytes;
}
