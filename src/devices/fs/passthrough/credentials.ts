/**
 * Running one filesystem operation as the guest process that asked for it.
 *
 * A FUSE request carries the caller's fsuid and fsgid (and, for the calls
 * that create a file, the one supplementary group the guest kernel found
 * it needs: FUSE_CREATE_SUPP_GROUP). {@linkcode ThreadCredentials.asCaller}
 * switches the calling thread's filesystem ids and supplementary groups to
 * them for the duration of one operation and always back afterwards, so
 * the host kernel creates files with the caller as owner and makes the
 * permission checks it would make for that user. Changing the fsuid away
 * from 0 also clears the filesystem capabilities (CAP_DAC_OVERRIDE,
 * CAP_FOWNER, CAP_FSETID, ...) from the thread's effective set; changing it
 * back to 0 restores them (capabilities(7)). FUSE never sends the caller's
 * other groups: `group_claims.ts` retries a refused operation with the
 * groups of the inodes it involves.
 *
 * Everything is per thread (raw system calls, see `ffi/credentials.ts`):
 * the fs device serves its queues from one Worker, one request at a time,
 * so a switch never overlaps another request.
 *
 * Switching needs root (CAP_SETUID and CAP_SETGID). A vhostd that is not
 * root, or cannot switch, runs every operation as itself: files belong to
 * its user and the host checks its permissions.
 *
 * @module
 */

import {
  CAP_FSETID,
  capabilityBit,
  type CapabilitySets,
  EIO,
  EPERM,
  setThreadCapabilities,
  setThreadFsgid,
  setThreadFsuid,
  setThreadGroups,
  threadCapabilities,
  threadGroups,
} from "../../../../ffi/mod.ts";
import { FsError } from "./fs_errors.ts";

/** Who a request runs as: the guest caller's ids from the FUSE in-header. */
export interface Caller {
  /** The caller's fsuid. */
  uid: number;
  /** The caller's fsgid. */
  gid: number;
  /** Supplementary groups the guest sent (the FUSE_EXT_GROUPS extension); none when absent. */
  groups?: readonly number[];
}

/** The system calls a {@linkcode ThreadCredentials} makes (real ones by default; tests fake them). */
export interface CredentialCalls {
  /** setfsuid: sets the thread's fsuid, returns the previous one (never fails visibly). */
  setFsuid(uid: number): number;
  /** setfsgid: likewise for the fsgid. */
  setFsgid(gid: number): number;
  /** The thread's supplementary groups. */
  groups(): number[];
  /** setgroups for this thread only; throws when refused. */
  setGroups(groups: readonly number[]): void;
  /** capget of this thread. */
  capabilities(): CapabilitySets;
  /** capset of this thread; throws when refused. */
  setCapabilities(sets: CapabilitySets): void;
}

/** The real per-thread system calls of `ffi/credentials.ts`. */
export const THREAD_CREDENTIAL_CALLS: CredentialCalls = {
  setFsuid: setThreadFsuid,
  setFsgid: setThreadFsgid,
  groups: threadGroups,
  setGroups: setThreadGroups,
  capabilities: threadCapabilities,
  setCapabilities: setThreadCapabilities,
};

/** `setfsuid(-1)` changes nothing and returns the current id. */
const QUERY = 0xffff_ffff;
/** The id the start-up probe switches to and back. */
const NOBODY = 65534;
const FSETID = capabilityBit(CAP_FSETID);

/**
 * The credentials of the thread that constructed it: switches to a caller
 * for one operation, or drops CAP_FSETID for one operation. Use it only on
 * the thread that constructed it.
 */
export class ThreadCredentials {
  readonly #calls: CredentialCalls;
  /** vhostd's own fsuid, fsgid and groups on this thread: what every switch returns to. */
  readonly #uid: number;
  readonly #gid: number;
  readonly #groups: readonly number[];
  readonly #enabled: boolean;
  /** Set when switching back failed: the thread's ids are unknown, nothing more runs. */
  #broken: string | null = null;

  /**
   * Records this thread's ids and finds out whether it can switch: only
   * when its fsuid is 0 and a probe switch to another uid and back takes.
   */
  constructor(calls: CredentialCalls = THREAD_CREDENTIAL_CALLS) {
    this.#calls = calls;
    this.#uid = calls.setFsuid(QUERY);
    this.#gid = calls.setFsgid(QUERY);
    this.#groups = calls.groups();
    this.#enabled = this.#uid === 0 && this.#probe();
  }

  /** True when operations run as their caller (vhostd is root and the probe switch took). */
  get switching(): boolean {
    return this.#enabled;
  }

  /**
   * True when running as `caller` changes nothing on this thread: switching
   * is off, there is no caller, or its fsuid and fsgid are vhostd's own (a
   * root caller, most requests). {@linkcode asCaller} then runs its
   * operation as it is, and a caller may run it straight (no closure). EIO
   * once switching back failed.
   */
  runsAsSelf(caller: Caller | undefined): boolean {
    if (this.#broken !== null) throw new FsError(EIO, this.#broken);
    return !this.#enabled || caller === undefined ||
      ((caller.uid >>> 0) === this.#uid && (caller.gid >>> 0) === this.#gid);
  }

  /**
   * Runs `operation` with this thread's fsuid, fsgid and supplementary
   * groups set to `caller`'s, and switches back afterwards, also when it
   * throws. No switch when switching is off, when `caller` is undefined or
   * when the ids are already vhostd's own (a root caller costs nothing).
   * A caller running as root keeps vhostd's groups (its capabilities make
   * them moot). EPERM when a switch does not take; an Error (a bug, EIO to
   * the guest) when switching back fails, after which every call is EIO.
   */
  asCaller<T>(caller: Caller | undefined, operation: () => T): T {
    if (this.runsAsSelf(caller)) return operation();
    const uid = caller!.uid >>> 0;
    const gid = caller!.gid >>> 0;
    const switchUid = uid !== this.#uid;
    const switchGid = gid !== this.#gid;
    let groupsSet = false;
    let gidSet = false;
    let uidSet = false;
    try {
      if (switchUid) {
        this.#calls.setGroups(caller!.groups ?? []);
        groupsSet = true;
      }
      if (switchGid) {
        gidSet = true;
        this.#calls.setFsgid(gid);
        this.#expect("fsgid", this.#calls.setFsgid(QUERY), gid);
      }
      if (switchUid) {
        uidSet = true;
        this.#calls.setFsuid(uid);
        this.#expect("fsuid", this.#calls.setFsuid(QUERY), uid);
      }
      return operation();
    } finally {
      this.#restore(uidSet, gidSet, groupsSet);
    }
  }

  /**
   * Runs `operation` without CAP_FSETID in this thread's effective set, so
   * the host kernel clears setuid (and group-executable setgid) bits on a
   * write or truncate, as it does for an unprivileged writer; restores the
   * set afterwards. Costs nothing when the thread has no CAP_FSETID (not
   * root, or switched to a non-root caller).
   */
  withoutFsetid<T>(operation: () => T): T {
    if (this.#broken !== null) throw new FsError(EIO, this.#broken);
    const sets = this.#calls.capabilities();
    if ((sets.effective & FSETID) === 0n) return operation();
    this.#calls.setCapabilities({ ...sets, effective: sets.effective & ~FSETID });
    try {
      return operation();
    } finally {
      try {
        this.#calls.setCapabilities(sets);
      } catch (error) {
        this.#fail(`cannot raise CAP_FSETID again: ${messageOf(error)}`);
      }
    }
  }

  #expect(what: string, actual: number, wanted: number): void {
    if (actual !== wanted) {
      throw new FsError(EPERM, `the ${what} switch to ${wanted} did not take (still ${actual})`);
    }
  }

  #restore(uid: boolean, gid: boolean, groups: boolean): void {
    const problems: string[] = [];
    if (uid) {
      this.#calls.setFsuid(this.#uid);
      const now = this.#calls.setFsuid(QUERY);
      if (now !== this.#uid) problems.push(`fsuid is ${now}, not ${this.#uid}`);
    }
    if (gid) {
      this.#calls.setFsgid(this.#gid);
      const now = this.#calls.setFsgid(QUERY);
      if (now !== this.#gid) problems.push(`fsgid is ${now}, not ${this.#gid}`);
    }
    if (groups) {
      try {
        this.#calls.setGroups(this.#groups);
      } catch (error) {
        problems.push(`groups not restored: ${messageOf(error)}`);
      }
    }
    if (problems.length > 0) this.#fail(`switching back failed: ${problems.join("; ")}`);
  }

  #fail(why: string): never {
    this.#broken = `thread credentials are unknown (${why})`;
    throw new Error(this.#broken);
  }

  /** Switches to an unprivileged uid and gid and back: true when both took and came back. */
  #probe(): boolean {
    try {
      this.#calls.setGroups(this.#groups);
    } catch {
      return false; // no CAP_SETGID
    }
    this.#calls.setFsgid(NOBODY);
    const gidTook = this.#calls.setFsgid(QUERY) === NOBODY;
    this.#calls.setFsgid(this.#gid);
    this.#calls.setFsuid(NOBODY);
    const uidTook = this.#calls.setFsuid(QUERY) === NOBODY;
    this.#calls.setFsuid(this.#uid);
    const back = this.#calls.setFsuid(QUERY) === this.#uid &&
      this.#calls.setFsgid(QUERY) === this.#gid;
    if (!back) this.#fail("the start-up probe could not switch back");
    return gidTook && uidTook;
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
