/**
 * Conversions between host file status and the FUSE attribute and entry
 * structs.
 *
 * @module
 */

import type { StatxResult } from "../../../../ffi/mod.ts";
import type { FuseAttr, FuseEntryOut } from "../fuse/fuse_reply.ts";
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
