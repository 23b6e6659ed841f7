/**
 * Supplementary groups for a guest caller, claimed through the inodes an
 * operation involves.
 *
 * A FUSE request names its caller's fsuid and fsgid, and at most one
 * supplementary group (FUSE_CREATE_SUPP_GROUP, creations on 7.38+), never
 * the full list. The guest kernel mounts virtio-fs with default_permissions:
 * before it sends a request it has already checked the caller's access
 * with all of its groups. So when an operation run as the caller is refused
 * by the host (EACCES or EPERM), {@linkcode asCallerClaimingGroups} runs it
 * once more with, as supplementary groups, the group ids of the inodes it
 * involves (the file's, its directory's, a chown's new group): the only
 * groups the guest's own check could have relied on. Checks that rest on
 * the owner (chmod, explicit times, sticky directories, chown of someone
 * else's file) and modes whose group bits grant nothing (a 0600 file) stay
 * refused by the host; vhostd's own groups are never given.
 *
 * The retry is only safe for an operation that changes nothing when it is
 * refused: a single system call (or a sequence whose refused step is its
 * first change), so callers wrap each change on its own.
 *
 * Some checks do not fail but silently drop a bit: chmod and creation clear
 * a requested setgid bit when the caller is not in the group. The guest
 * kernel drops it the same way, so a request that still asks for it comes
 * from a member: with `eager` the involved groups are given from the start.
 *
 * @module
 */

import { EACCES, EPERM } from "../../../../ffi/mod.ts";
import { statEntryQuietly, statFd } from "./confined_open.ts";
import type { Caller } from "./credentials.ts";
import { errnoOf } from "./fs_errors.ts";

/** The part of `ThreadCredentials` (credentials.ts) a claim needs (tests fake it). */
export interface CallerSwitch {
  /** True when operations run as their caller. */
  readonly switching: boolean;
  /** Runs `operation` as `caller` (its fsuid, fsgid and `groups`). */
  asCaller<T>(caller: Caller | undefined, operation: () => T): T;
}

/**
 * The group ids of the inodes an operation involves, read only when they
 * are needed (after a refusal, or up front when eager); undefined entries
 * (an inode whose status could not be read) are skipped.
 */
export type InvolvedGids = () => readonly (number | undefined)[];

/** S_ISGID: the setgid bit the host silently clears for a caller outside the group. */
export const SETGID_BIT = 0o2000;

/**
 * Runs `operation` as `caller`; if the host refuses it with EACCES or
 * EPERM, runs it once more with `involved()` added to the caller's
 * supplementary groups (nothing is retried when that adds no group).
 * With `eager` the groups are added to the only run. Root callers,
 * vhostd's own ids and a vhostd that does not switch run unchanged.
 */
export function asCallerClaimingGroups<T>(
  credentials: CallerSwitch,
  caller: Caller | undefined,
  involved: InvolvedGids,
  operation: () => T,
  eager = false,
): T {
  if (caller === undefined || !credentials.switching || caller.uid >>> 0 === 0) {
    return credentials.asCaller(caller, operation);
  }
  if (eager) return credentials.asCaller(withClaims(caller, involved()) ?? caller, operation);
  try {
    return credentials.asCaller(caller, operation);
  } catch (error) {
    const errno = errnoOf(error);
    if (errno !== EACCES && errno !== EPERM) throw error;
    const claimed = withClaims(caller, involved());
    if (claimed === undefined) throw error;
    return credentials.asCaller(claimed, operation);
  }
}

/** `caller` with `gids` added to its groups, or undefined when none is new. */
function withClaims(caller: Caller, gids: readonly (number | undefined)[]): Caller | undefined {
  const groups = [...(caller.groups ?? [])];
  const known = new Set([caller.gid >>> 0, ...groups.map((gid) => gid >>> 0)]);
  for (const gid of gids) {
    if (gid === undefined || known.has(gid >>> 0)) continue;
    known.add(gid >>> 0);
    groups.push(gid >>> 0);
  }
  return groups.length === (caller.groups?.length ?? 0) ? undefined : { ...caller, groups };
}

/** The group id of the file `fd` refers to, or undefined when it cannot be read. */
export function groupOfFd(fd: number): number | undefined {
  try {
    return statFd(fd).gid;
  } catch {
    return undefined;
  }
}

/** The group id of entry `name` in directory `dirFd`, or undefined when there is none. */
export function groupOfEntry(dirFd: number, name: Uint8Array): number | undefined {
  return statEntryQuietly(dirFd, name)?.gid;
}
