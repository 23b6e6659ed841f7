/**
 * Creating an entry (MKNOD, MKDIR, SYMLINK, CREATE) as the guest caller:
 * the host kernel makes the permission checks it would make for that user,
 * and the file is born with the caller as owner (the group of a setgid
 * parent directory wins, as the host kernel decides). Its permission bits
 * are then set to exactly those asked for (`mode & ~umask`), as vhostd's
 * own umask applied at creation too; in a directory whose default ACL the
 * host applies, the ACL decides them instead. A new entry whose mode cannot
 * be set is removed again.
 *
 * @module
 */

import {
  AT_REMOVEDIR,
  chmodProcFd,
  closeQuietly,
  EEXIST,
  O_CLOEXEC,
  O_CREAT,
  O_EXCL,
  O_NOFOLLOW,
  openat,
  S_IFMT,
  type StatxResult,
  unlinkat,
} from "../../../../ffi/mod.ts";
import type { CallerScope } from "./caller_scope.ts";
import { openComponent, openCreated, statFd } from "./confined_open.ts";
import type { Caller } from "./credentials.ts";
import type { EntryLookup } from "./entry_lookup.ts";
import { errnoOf } from "./fs_errors.ts";
import type { CreateArgs, EntryResult, OpenResult } from "./fs_types.ts";
import { groupOfEntry, groupOfFd, SETGID_BIT } from "./group_claims.ts";
import type { Inode } from "./inode_table.ts";
import type { OpenHandles } from "./open_handles.ts";
import { hostOpenFlags } from "./open_flags.ts";
import { openForIo } from "./open_for_io.ts";
import type { XattrOps } from "./xattr_ops.ts";
import { PERMISSION_BITS } from "./fs_attr.ts";

/** rwx for user, group and others: the bits a umask decides. */
const ACCESS_BITS = 0o777;

/**
 * What CREATE made or opened: the inode (with the guest's new lookup
 * reference), its status, and the open handle.
 */
export interface CreatedFile {
  /** The file's inode. */
  inode: Inode;
  /** Its status, as the entry reports it. */
  st: StatxResult;
  /** The handle the guest got. */
  open: OpenResult;
}

/** Creates entries in the directories of one filesystem. */
export class EntryCreator {
  readonly #scope: CallerScope;
  readonly #entries: EntryLookup;
  readonly #handles: OpenHandles;
  readonly #xattr: XattrOps;

  /**
   * Creates as the callers `scope` runs, looks new entries up in `entries`,
   * registers CREATE's handle in `handles`,
   * and asks `xattr` whether a directory's default ACL decides the mode.
   */
  constructor(
    scope: CallerScope,
    entries: EntryLookup,
    handles: OpenHandles,
    xattr: XattrOps,
  ) {
    this.#scope = scope;
    this.#entries = entries;
    this.#handles = handles;
    this.#xattr = xattr;
  }

  /**
   * The permission bits to create a file in `dir` with (`wanted`) and to
   * fix it to afterwards (`exact`): `mode & ~umask` both, or, in a directory
   * whose default ACL the host applies (POSIX ACL session), the unmasked
   * mode and no fix-up. `dir` may be unknown or broken (the creation then
   * fails on it).
   */
  creationMode(
    dir: Inode | undefined,
    mode: number,
    umask: number,
  ): { wanted: number; exact: number | null } {
    if (dir !== undefined && dir.broken === null && this.#xattr.inheritsDefaultAcl(dir)) {
      return { wanted: mode & PERMISSION_BITS, exact: null };
    }
    const wanted = mode & ~umask & PERMISSION_BITS;
    return { wanted, exact: wanted };
  }

  /**
   * Creates `name` in directory `dir` with `make` as `caller` (so it is born
   * with the caller's ids), gives it exactly the `wanted` permission bits
   * (null: none to apply, as for a symbolic link or a file inheriting a
   * default ACL), and looks it up. When the mode cannot be applied the new
   * entry is removed.
   */
  createEntry(
    dir: Inode,
    name: Uint8Array,
    wanted: number | null,
    caller: Caller,
    isDir: boolean,
    make: (dirFd: number) => void,
  ): EntryResult {
    this.#scope.asCallerClaiming(
      caller,
      () => [groupOfFd(dir.fd)],
      () => make(dir.fd),
      wanted !== null && (wanted & SETGID_BIT) !== 0,
    );
    const fd = openComponent(dir.fd, name);
    let st: StatxResult | undefined;
    try {
      if (wanted !== null) {
        st = statFd(fd);
        if (settlePermissions(fd, wanted, st)) st = undefined;
      }
    } catch (error) {
      closeQuietly(fd);
      unlinkQuietly(dir.fd, name, isDir ? AT_REMOVEDIR : 0);
      throw error;
    }
    return this.#entries.adopt(dir, name, fd, st);
  }

  /**
   * CREATE in directory `dir`: creates and opens `args.name` with the
   * guest's open flags, or with no O_EXCL opens the file already there (not
   * following a link: ELOOP), as `caller`; with `killSuidgid` that runs
   * without CAP_FSETID. A file it created is removed again when it cannot
   * be given its mode.
   */
  createAndOpen(dir: Inode, args: CreateArgs, caller: Caller, killSuidgid: boolean): CreatedFile {
    const { name, flags, mode, umask } = args;
    const hostFlags = hostOpenFlags(flags);
    const { wanted, exact } = this.creationMode(dir, mode, umask);
    let fd = -1;
    let pathFd = -1;
    let created = true;
    let createdStat: StatxResult | undefined;
    const openAsCaller = () => {
      // Runs again when the host refused it: start from nothing opened.
      closeQuietly(pathFd);
      pathFd = -1;
      created = true;
      try {
        fd = openat(dir.fd, name, hostFlags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, wanted);
      } catch (error) {
        if (errnoOf(error) !== EEXIST || (flags & O_EXCL) !== 0) throw error;
        created = false;
        pathFd = openComponent(dir.fd, name);
        fd = openForIo(pathFd, statFd(pathFd).mode & S_IFMT, hostFlags);
      }
    };
    try {
      if (!killSuidgid && this.#scope.runsAsSelf(caller)) {
        openAsCaller(); // as vhostd itself: no claim or privilege closures to make
      } else {
        this.#scope.asCallerClaiming(
          caller,
          () => [groupOfFd(dir.fd), groupOfEntry(dir.fd, name)],
          () => this.#scope.maybeKillingPrivileges(killSuidgid, openAsCaller),
          (wanted & SETGID_BIT) !== 0,
        );
      }
      if (created) {
        // One statx of the new file serves the mode fix-up and the entry.
        createdStat = statFd(fd);
        pathFd = openCreated(dir.fd, name, fd, createdStat);
        if (exact !== null && settlePermissions(pathFd, exact, createdStat)) {
          createdStat = undefined;
        }
      }
    } catch (error) {
      closeQuietly(fd);
      closeQuietly(pathFd);
      if (created && fd >= 0) unlinkQuietly(dir.fd, name, 0);
      throw error;
    }
    let st: StatxResult;
    try {
      st = createdStat ?? statFd(pathFd);
    } catch (error) {
      closeQuietly(fd);
      closeQuietly(pathFd);
      throw error;
    }
    let inode: Inode;
    try {
      inode = this.#entries.adoptInode(dir, name, pathFd, st);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
    return { inode, st, open: this.#handles.add(fd, inode, hostFlags, false) };
  }
}

/**
 * Sets the rwx bits of a new file to exactly `wanted`'s: vhostd's own
 * umask may have cleared some the guest asked for. Runs as vhostd, after
 * the caller's creation, and keeps the special bits the host kernel chose
 * (the setgid bit a directory inherits, a setgid bit it refused a caller
 * outside the group). `st` is the file's status. True when it changed
 * the mode (`st` is then stale).
 */
function settlePermissions(fd: number, wanted: number, st: StatxResult): boolean {
  const mode = st.mode & PERMISSION_BITS;
  const expected = (mode & ~ACCESS_BITS) | (wanted & ACCESS_BITS);
  if (mode === expected) return false;
  chmodProcFd(fd, expected);
  return true;
}

function unlinkQuietly(dirFd: number, name: Uint8Array, flags: number): void {
  try {
    unlinkat(dirFd, name, flags);
  } catch {
    // Best effort: the entry may already be gone.
  }
}
