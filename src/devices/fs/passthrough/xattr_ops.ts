/**
 * Extended attributes and POSIX ACLs of the passthrough filesystem
 * (GETXATTR, LISTXATTR, SETXATTR, REMOVEXATTR), as virtiofsd serves them.
 *
 * Off unless `xattr` (or `posixAcl`, or a mapping) is set: then every call
 * is ENOSYS, which the guest kernel remembers and stops asking.
 *
 * Host calls: an inode holds an O_PATH fd, on which the f*xattr calls fail
 * (EBADF). A regular file or directory is reopened read-only and
 * non-blocking through `/proc/self/fd/N` for the f* call; anything else (a
 * symbolic link, a device node, a FIFO, a socket) is never opened: the path
 * call on `/proc/self/fd/N` reaches the inode itself through the magic link.
 *
 * Names pass to the host as the guest sent them (`user.*`, `trusted.*`,
 * `security.*`, `system.*`); the host kernel decides, so `trusted.*` and
 * most of `security.*` need vhostd to hold CAP_SYS_ADMIN, as with
 * virtiofsd. `security.capability` stays what it is on the host, so the host
 * kernel drops it on writes, truncation and chown. An optional
 * {@linkcode XattrMapping} renames or hides names.
 *
 * POSIX ACLs (`posixAcl`): accepted at INIT with DONT_MASK and SETXATTR_EXT
 * (a guest that cannot do all three is refused with EPROTO, as virtiofsd
 * does). Without them the ACL attributes (`system.posix_acl_access`,
 * `system.posix_acl_default`) are refused with ENOTSUP and hidden from
 * lists, so the guest never half-sees ACLs it does not enforce. With them,
 * SETXATTR_ACL_KILL_SGID on `system.posix_acl_access` clears the setgid bit
 * first (vhostd's own privilege would keep it), and a new file in a
 * directory with a default ACL is created with the guest's unmasked mode so
 * that the host kernel applies the inherited ACL instead of the umask.
 *
 * @module
 */

import {
  chmodProcFd,
  closeQuietly,
  E2BIG,
  ENODATA,
  ENOSYS,
  ENOTSUP,
  EPERM,
  EPROTO,
  ERANGE,
  EROFS,
  fgetxattr,
  flistxattr,
  fremovexattr,
  fsetxattr,
  getxattr,
  listxattr,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  procSelfFdPath,
  removexattr,
  reopenFd,
  S_IFDIR,
  S_IFREG,
  setxattr,
  splitXattrList,
  SyscallError,
  XATTR_SIZE_MAX,
} from "../../../../ffi/mod.ts";
import { FuseInitFlag, FuseSetxattrFlag } from "../fuse/fuse_abi.ts";
import { statFd } from "./confined_open.ts";
import { FsError, FsRestoreError } from "./fs_errors.ts";
import type { Inode } from "./inode_table.ts";
import { parseXattrMapping, type XattrMapping } from "./xattr_mapping.ts";
import { PERMISSION_BITS } from "./fs_attr.ts";

/** The INIT flags `posixAcl` needs the guest to accept together (virtiofsd's set). */
export const POSIX_ACL_INIT_FLAGS: number = FuseInitFlag.POSIX_ACL | FuseInitFlag.DONT_MASK |
  FuseInitFlag.SETXATTR_EXT;

/** How a share serves extended attributes (the xattr part of FsOptions). */
export interface XattrSettings {
  /** Serve extended attributes at all. */
  xattr?: boolean;
  /** Offer POSIX ACLs (implies `xattr`). */
  posixAcl?: boolean;
  /** A mapping in virtiofsd's `--xattrmap` syntax (implies `xattr`). */
  xattrMapping?: string;
  /** Refuse SETXATTR and REMOVEXATTR with EROFS. */
  readOnly: boolean;
}

/** True when `settings` serve extended attributes at all (else every xattr request is ENOSYS). */
export function xattrServed(settings: Omit<XattrSettings, "readOnly">): boolean {
  return settings.xattr === true || settings.posixAcl === true ||
    settings.xattrMapping !== undefined;
}

/** GETXATTR/LISTXATTR result: the size asked for by a size-0 request, or the bytes. */
export type XattrReply = { size: number } | { value: Uint8Array };

const encoder = new TextEncoder();
const ACL_ACCESS = encoder.encode("system.posix_acl_access");
const ACL_DEFAULT = encoder.encode("system.posix_acl_default");
const S_ISGID = 0o2000;
/** Attempts at reading a name list that keeps growing between its size query and the read. */
const LIST_ATTEMPTS = 4;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function isAclName(name: Uint8Array): boolean {
  return sameBytes(name, ACL_ACCESS) || sameBytes(name, ACL_DEFAULT);
}

/**
 * Runs `byFd` on a read-only reopen of a regular file or directory, or
 * `byPath` on `/proc/self/fd/N` for any other inode.
 */
function onInode<T>(inode: Inode, byFd: (fd: number) => T, byPath: (path: string) => T): T {
  if (inode.type !== S_IFREG && inode.type !== S_IFDIR) return byPath(procSelfFdPath(inode.fd));
  const fd = reopenFd(inode.fd, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  try {
    return byFd(fd);
  } finally {
    closeQuietly(fd);
  }
}

/** A whole name list through `list` (null: size query), retried when it grows meanwhile. */
function readList(list: (buffer: Uint8Array<ArrayBuffer> | null) => number): Uint8Array {
  for (let attempt = 1;; attempt++) {
    const size = list(null);
    if (size === 0) return new Uint8Array(0);
    const buffer = new Uint8Array(size);
    try {
      return buffer.subarray(0, list(buffer));
    } catch (error) {
      if (!(error instanceof SyscallError) || error.errno !== ERANGE) throw error;
      if (attempt === LIST_ATTEMPTS) throw error;
    }
  }
}

function joinNames(names: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(names.reduce((sum, name) => sum + name.length + 1, 0));
  let at = 0;
  for (const name of names) {
    out.set(name, at);
    at += name.length + 1; // the NUL is already there
  }
  return out;
}

/** The extended attribute operations of one filesystem. */
export class XattrOps {
  readonly #enabled: boolean;
  readonly #posixAcl: boolean;
  readonly #readOnly: boolean;
  readonly #mapping: XattrMapping | null;
  readonly #aclActive: () => boolean;

  /**
   * Builds the operations for `settings`; `aclActive` says whether the
   * current session negotiated POSIX_ACL (read from the INIT result, so a
   * restored session is covered). Throws XattrMappingError for a bad mapping.
   */
  constructor(settings: XattrSettings, aclActive: () => boolean) {
    const mapping = settings.xattrMapping;
    this.#mapping = mapping === undefined ? null : parseXattrMapping(mapping);
    this.#posixAcl = settings.posixAcl === true;
    this.#enabled = xattrServed(settings);
    this.#readOnly = settings.readOnly;
    this.#aclActive = aclActive;
  }

  /** True when the operations are served (not ENOSYS). */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * The INIT flags to accept from `offered`: POSIX_ACL_INIT_FLAGS with
   * `posixAcl`, else none. EPROTO when `posixAcl` is set and the guest does
   * not offer all of them (it could not enforce the ACLs vhostd serves).
   */
  initFlags(offered: number): number {
    if (!this.#posixAcl) return 0;
    if ((offered & POSIX_ACL_INIT_FLAGS) !== POSIX_ACL_INIT_FLAGS) {
      throw new FsError(
        EPROTO,
        "--posix-acl needs a guest that offers POSIX_ACL, DONT_MASK and SETXATTR_EXT",
      );
    }
    return POSIX_ACL_INIT_FLAGS;
  }

  /** Refuses a restored session that uses POSIX ACLs this filesystem does not serve. */
  checkRestoredFlags(flags: number): void {
    if ((flags & FuseInitFlag.POSIX_ACL) !== 0 && !this.#posixAcl) {
      throw new FsRestoreError(
        "the migrated session uses POSIX ACLs: start the destination with --posix-acl",
      );
    }
  }

  /** GETXATTR of `name`; `size` 0 asks for the value's size, a smaller value is ERANGE. */
  get(inode: Inode, name: Uint8Array, size: number): XattrReply {
    this.#requireEnabled();
    const hostName = this.#hostName(name, ENODATA);
    const buffer = size === 0 ? null : new Uint8Array(Math.min(size, XATTR_SIZE_MAX));
    const length = onInode(
      inode,
      (fd) => fgetxattr(fd, hostName, buffer),
      (path) => getxattr(path, hostName, buffer),
    );
    return buffer === null ? { size: length } : { value: buffer.subarray(0, length) };
  }

  /** LISTXATTR; `size` 0 asks for the list's size, a smaller list is ERANGE. */
  list(inode: Inode, size: number): XattrReply {
    this.#requireEnabled();
    const host = onInode(
      inode,
      (fd) => readList((buffer) => flistxattr(fd, buffer)),
      (path) => readList((buffer) => listxattr(path, buffer)),
    );
    const shown = this.#guestList(host);
    if (size === 0) return { size: shown.length };
    if (shown.length > size) throw new FsError(ERANGE);
    return { value: shown };
  }

  /** SETXATTR of `name` to `value` (`flags`: XATTR_CREATE/REPLACE; FuseSetxattrFlag bits). */
  set(
    inode: Inode,
    name: Uint8Array,
    value: Uint8Array,
    flags: number,
    setxattrFlags: number,
  ): void {
    this.#requireEnabled();
    if (this.#readOnly) throw new FsError(EROFS);
    if (value.length > XATTR_SIZE_MAX) throw new FsError(E2BIG);
    const hostName = this.#hostName(name, EPERM);
    if (
      (setxattrFlags & FuseSetxattrFlag.ACL_KILL_SGID) !== 0 && this.#aclActive() &&
      sameBytes(hostName, ACL_ACCESS)
    ) {
      // The guest found that its caller may not keep setgid; vhostd's own privilege would.
      const mode = statFd(inode.fd).mode;
      if ((mode & S_ISGID) !== 0) chmodProcFd(inode.fd, mode & PERMISSION_BITS & ~S_ISGID);
    }
    onInode(
      inode,
      (fd) => fsetxattr(fd, hostName, value, flags),
      (path) => setxattr(path, hostName, value, flags),
    );
  }

  /** REMOVEXATTR of `name` (ENODATA when the inode has none). */
  remove(inode: Inode, name: Uint8Array): void {
    this.#requireEnabled();
    if (this.#readOnly) throw new FsError(EROFS);
    const hostName = this.#hostName(name, EPERM);
    onInode(
      inode,
      (fd) => fremovexattr(fd, hostName),
      (path) => removexattr(path, hostName),
    );
  }

  /**
   * True when the session enforces POSIX ACLs and directory `dir` has a
   * default ACL: a file created there must get the guest's mode unmasked,
   * and no mode fix-up, so that the host kernel applies the inherited ACL.
   */
  inheritsDefaultAcl(dir: Inode): boolean {
    if (!this.#aclActive()) return false;
    try {
      return getxattr(procSelfFdPath(dir.fd), ACL_DEFAULT, null) > 0;
    } catch (error) {
      if (error instanceof SyscallError && (error.errno === ENODATA || error.errno === ENOTSUP)) {
        return false;
      }
      throw error;
    }
  }

  #requireEnabled(): void {
    if (!this.#enabled) throw new FsError(ENOSYS);
  }

  /** The host name for a guest name; `deniedErrno` answers a mapping's `bad` rule. */
  #hostName(name: Uint8Array, deniedErrno: number): Uint8Array {
    if (!this.#aclActive() && isAclName(name)) {
      throw new FsError(ENOTSUP, "POSIX ACLs are not enabled (--posix-acl)");
    }
    if (this.#mapping === null) return name;
    const mapped = this.#mapping.toHost(name);
    if ("errno" in mapped) throw new FsError(mapped.errno === EPERM ? deniedErrno : mapped.errno);
    return mapped.name;
  }

  /** The host's name list as the guest may see it. */
  #guestList(host: Uint8Array): Uint8Array {
    const hideAcls = !this.#aclActive();
    if (this.#mapping === null && !hideAcls) return host;
    const shown: Uint8Array[] = [];
    for (const name of splitXattrList(host)) {
      const guest = this.#mapping === null ? name : this.#mapping.toGuest(name);
      if (guest !== null && !(hideAcls && isAclName(guest))) shown.push(guest);
    }
    return joinNames(shown);
  }
}
