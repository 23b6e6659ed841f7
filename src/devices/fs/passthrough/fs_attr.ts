/**
 * Conversions between host file status and the FUSE attribute and entry
 * structs.
 *
 * @module
 */

import { makedev, STATX_FIELD, type StatxResult } from "../../../../ffi/mod.ts";
import { writeU64 } from "../../../../ffi/struct.ts";
import type { FuseAttr, FuseEntryOut } from "../fuse/fuse_reply.ts";
import { FUSE_ATTR } from "../fuse/fuse_layouts.ts";
import type { EntryResult } from "./fs_types.ts";

/** The permission bits of a mode (rwx for all three, setuid, setgid, sticky): what chmod sets. */
export const PERMISSION_BITS = 0o7777;

const U32 = 2 ** 32;

/**
 * The guest's view of a host file's status. `ino` is the host inode number
 * (so `ls -i` and hard-link detection in the guest see real numbers); node
 * ids are ours and travel separately.
 */
export function attrFromStatx(st: StatxResult): FuseAttr {
  return {
    ino: st.ino,
    size: st.size,
    blocks: st.blocks,
    atime: st.atimeSec,
    mtime: st.mtimeSec,
    ctime: st.ctimeSec,
    atimensec: st.atimeNsec,
    mtimensec: st.mtimeNsec,
    ctimensec: st.ctimeNsec,
    mode: st.mode,
    nlink: st.nlink,
    uid: st.uid,
    gid: st.gid,
    // fuse_attr.rdev is the kernel's 32-bit new_encode_dev form, which is
    // glibc's makedev for every device number that fits in 32 bits.
    rdev: st.rdev % U32,
    blksize: st.blksize,
    // Present (not left to the encoder's default): the encoder then takes this object as is.
    flags: 0,
  };
}

/** Where fuse_attr's fields are, and struct statx's. */
const ATTR = FUSE_ATTR.offsets;
const STX = STATX_FIELD;

/** Copies a 64-bit field as its two 32-bit halves: exact at any value, no bigint. */
function copy64(from: DataView, at: number, to: DataView, dest: number): void {
  to.setUint32(dest, from.getUint32(at, true), true);
  to.setUint32(dest + 4, from.getUint32(at + 4, true), true);
}

/**
 * Writes the fuse_attr of a raw `struct statx` (ffi's statxViewOrErrno) at
 * `at` in `target`, all 88 bytes: what encodeAttr(attrFromStatx(st)) writes,
 * with no status or attribute object in between (GETATTR, the request a
 * guest sends most, answers straight from it).
 */
export function writeAttrFromStatx(statx: DataView, target: DataView, at: number): void {
  copy64(statx, STX.ino, target, at + ATTR.ino);
  copy64(statx, STX.size, target, at + ATTR.size);
  copy64(statx, STX.blocks, target, at + ATTR.blocks);
  copy64(statx, STX.atimeSec, target, at + ATTR.atime);
  copy64(statx, STX.mtimeSec, target, at + ATTR.mtime);
  copy64(statx, STX.ctimeSec, target, at + ATTR.ctime);
  target.setUint32(at + ATTR.atimensec, statx.getUint32(STX.atimeNsec, true), true);
  target.setUint32(at + ATTR.mtimensec, statx.getUint32(STX.mtimeNsec, true), true);
  target.setUint32(at + ATTR.ctimensec, statx.getUint32(STX.ctimeNsec, true), true);
  target.setUint32(at + ATTR.mode, statx.getUint16(STX.mode, true), true);
  target.setUint32(at + ATTR.nlink, statx.getUint32(STX.nlink, true), true);
  target.setUint32(at + ATTR.uid, statx.getUint32(STX.uid, true), true);
  target.setUint32(at + ATTR.gid, statx.getUint32(STX.gid, true), true);
  const major = statx.getUint32(STX.rdevMajor, true);
  target.setUint32(
    at + ATTR.rdev,
    makedev(major, statx.getUint32(STX.rdevMinor, true)) % U32,
    true,
  );
  target.setUint32(at + ATTR.blksize, statx.getUint32(STX.blksize, true), true);
  target.setUint32(at + ATTR.flags, 0, true);
}

/**
 * Writes the fuse_attr of `st` at `at` in `target`, all 88 bytes: what
 * encodeAttr(attrFromStatx(st)) writes, with no attribute object (an entry
 * a creation answers with, whose status was read already).
 */
export function writeAttrFromStat(st: StatxResult, target: DataView, at: number): void {
  target.setBigUint64(at + ATTR.ino, st.ino, true);
  writeU64(target, at + ATTR.size, st.size);
  writeU64(target, at + ATTR.blocks, st.blocks);
  writeU64(target, at + ATTR.atime, st.atimeSec);
  writeU64(target, at + ATTR.mtime, st.mtimeSec);
  writeU64(target, at + ATTR.ctime, st.ctimeSec);
  target.setUint32(at + ATTR.atimensec, st.atimeNsec, true);
  target.setUint32(at + ATTR.mtimensec, st.mtimeNsec, true);
  target.setUint32(at + ATTR.ctimensec, st.ctimeNsec, true);
  target.setUint32(at + ATTR.mode, st.mode, true);
  target.setUint32(at + ATTR.nlink, st.nlink, true);
  target.setUint32(at + ATTR.uid, st.uid, true);
  target.setUint32(at + ATTR.gid, st.gid, true);
  target.setUint32(at + ATTR.rdev, st.rdev % U32, true);
  target.setUint32(at + ATTR.blksize, st.blksize, true);
  target.setUint32(at + ATTR.flags, 0, true);
}

/** Attributes of an entry we do not describe (READDIRPLUS "." and ".."): zero but for `ino` and the type. */
export function placeholderAttr(ino: bigint, type: number): FuseAttr {
  return {
    ino,
    size: 0,
    blocks: 0,
    atime: 0,
    mtime: 0,
    ctime: 0,
    atimensec: 0,
    mtimensec: 0,
    ctimensec: 0,
    mode: (type & 0xf) << 12,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 0,
    flags: 0,
  };
}

/** Splits a timeout in seconds into the whole seconds and nanoseconds FUSE carries. */
export function splitTimeout(seconds: number): { sec: number; nsec: number } {
  if (!(seconds > 0) || !Number.isFinite(seconds)) return { sec: 0, nsec: 0 };
  const sec = Math.floor(seconds);
  return { sec, nsec: Math.min(999_999_999, Math.round((seconds - sec) * 1e9)) };
}

/** An entry result as the `fuse_entry_out` the reply encoders take. */
export function entryOut(entry: EntryResult): FuseEntryOut {
  const entryValid = splitTimeout(entry.entryTimeoutSec);
  const attrValid = splitTimeout(entry.attrTimeoutSec);
  return {
    nodeid: entry.nodeid,
    generation: entry.generation,
    entryValid: entryValid.sec,
    entryValidNsec: entryValid.nsec,
    attrValid: attrValid.sec,
    attrValidNsec: attrValid.nsec,
    attr: entry.attr,
  };
}
