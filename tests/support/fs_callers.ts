/**
 * Requests in the name of an unprivileged guest caller, for the
 * credentials tests: an INIT that negotiates what those tests need, a way
 * to send requests as another uid and gid, and host-side owner and mode
 * checks.
 *
 * @module
 */

import type { FsDriver } from "../../src/frontend/mod.ts";
import {
  decodeInitOut,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FuseInitFlag,
  FuseInitFlag2,
  FuseOpcode,
} from "../../src/devices/fs/fuse/mod.ts";

/**
 * A raw SETATTR with exactly the `valid` bits (FATTR_*) the driver's
 * `setattr` cannot express, such as FATTR_ATIME_NOW or FATTR_KILL_SUIDGID;
 * every value but `size` is zero.
 */
export function setattrRaw(d: FsDriver, nodeid: bigint, valid: number, size = 0n): void {
  d.call(FuseOpcode.SETATTR, {
    valid,
    fh: 0n,
    size,
    lockOwner: 0n,
    atime: 0n,
    mtime: 0n,
    ctime: 0n,
    atimensec: 0,
    mtimensec: 0,
    ctimensec: 0,
    mode: 0,
    uid: 0,
    gid: 0,
  }, { nodeid });
}

/** INIT offering what a Linux 6.x guest offers, plus HANDLE_KILLPRIV_V2 and CREATE_SUPP_GROUP. */
export function initWith(d: FsDriver): { flags: number; flags2: number } {
  const flags = FuseInitFlag.ASYNC_READ | FuseInitFlag.BIG_WRITES | FuseInitFlag.DO_READDIRPLUS |
    FuseInitFlag.MAX_PAGES | FuseInitFlag.INIT_EXT | FuseInitFlag.HANDLE_KILLPRIV_V2;
  const reply = decodeInitOut(d.call(FuseOpcode.INIT, {
    major: FUSE_KERNEL_VERSION,
    minor: FUSE_KERNEL_MINOR_VERSION,
    maxReadahead: 128 * 1024,
    flags: flags >>> 0,
    flags2: FuseInitFlag2.CREATE_SUPP_GROUP,
  }));
  return { flags: reply.flags, flags2: reply.flags2 };
}

/** Runs `body` with requests sent as `uid`:`gid`, then back as root. */
export function as<T>(d: FsDriver, uid: number, gid: number, body: () => T): T {
  d.uid = uid;
  d.gid = gid;
  try {
    return body();
  } finally {
    d.uid = 0;
    d.gid = 0;
  }
}

/** Owner uid and gid of `path` (not following a link). */
export function owner(path: string): [number, number] {
  const st = Deno.lstatSync(path);
  return [st.uid!, st.gid!];
}

/** The permission bits of `path`, setuid, setgid and sticky included. */
export function modeOf(path: string): number {
  return Deno.statSync(path).mode! & 0o7777;
}
