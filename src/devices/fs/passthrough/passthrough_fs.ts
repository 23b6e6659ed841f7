/**
 * The virtio-fs passthrough filesystem: a host directory served to the guest
 * through FUSE operations, with no byte parsing (the request handler decodes
 * and encodes) and no virtqueues.
 *
 * Confinement. Every inode holds an O_PATH|O_NOFOLLOW fd, and every access
 * is an `*at` call relative to such an fd or a reopen of one through
 * `/proc/self/fd`: no path is ever built from guest names. A guest name is
 * one component (EINVAL when empty or holding `/`); it is opened with
 * openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS. A
 * symbolic link is looked up as itself and never followed by vhostd (the
 * guest kernel resolves link targets in its own namespace). LOOKUP of "."
 * is the directory itself and of ".." its recorded parent; ".." of the root
 * is the root, so the guest never gets above the shared directory. Only
 * regular files and directories are opened for I/O (`open_for_io.ts`).
 *
 * Caching: what the guest may keep follows the share's cache policy
 * (`cache_policy.ts`).
 *
 * Credentials: when vhostd runs as root, create, mknod, mkdir, symlink,
 * link, rename, unlink, rmdir, setattr and open run with the guest caller's
 * fsuid, fsgid and supplementary groups (see `caller_scope.ts`): the host
 * kernel makes the permission checks it would make for that user, and a new
 * file is born with its owner and exactly the permission bits asked for
 * (`entry_creation.ts`). Otherwise everything runs as vhostd's user. The
 * guest sends at most one supplementary group, and only for creations
 * (FUSE_CREATE_SUPP_GROUP); an operation the host refuses is tried once
 * more with the groups of the inodes it involves, the only ones the guest's
 * own permission check could have relied on (`group_claims.ts`).
 *
 * Setuid bits (HANDLE_KILLPRIV_V2): a write, truncate or chown the guest
 * flags as coming from a caller without CAP_FSETID runs without CAP_FSETID,
 * so the host kernel clears setuid, group-executable setgid and
 * `security.capability` as it does for an unprivileged writer.
 *
 * ACCESS is answered by faccessat with AT_EACCESS, i.e. with vhostd's
 * effective ids (virtio-fs guests normally check permissions themselves with
 * default_permissions, so ACCESS only serves explicit access(2) calls).
 *
 * Errors: every method throws {@linkcode FsError} (the guest gets `-errno`);
 * host failures are translated at each method's boundary. Unknown node ids
 * and handles are EBADF; inodes and handles a migration could not restore
 * (with `migrationOnError: "guest-error"`) are EIO, except for forget,
 * release and releasedir, which clean up.
 *
 * @module
 */

import {
  AT_EACCESS,
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_REMOVEDIR,
  AT_SYMLINK_FOLLOW,
  AT_SYMLINK_NOFOLLOW,
  closeFd,
  closeQuietly,
  dupFd,
  EBADF,
  EINVAL,
  EIO,
  ENOENT,
  ENOTDIR,
  EPERM,
  EROFS,
  faccessat,
  fallocate,
  fdatasync,
  fstatfs,
  fsync,
  linkat,
  lseek64,
  mkdirat,
  mknodat,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  O_RDONLY,
  openat,
  procSelfFdAt,
  readlinkat,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  renameat2,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  statxViewOrErrno,
  symlinkat,
  unlinkat,
  W_OK,
} from "../../../../ffi/mod.ts";
import { FuseInitFlag, FuseSetattrValid } from "../fuse/fuse_abi.ts";
import type { FuseInitArgs, FuseSetattrArgs } from "../fuse/fuse_request.ts";
import { cacheSettings } from "./cache_policy.ts";
import { CallerScope } from "./caller_scope.ts";
import { statEntryQuietly, statFd } from "./confined_open.ts";
import type { Caller } from "./credentials.ts";
import { readDirectoryPage } from "./dir_reader.ts";
import { DIRECT_WRITER_UNKNOWN, openDirectWriter } from "./direct_writer.ts";
import { writeU64 } from "../../../../ffi/struct.ts";
import { EntryCreator } from "./entry_creation.ts";
import { EntryLookup } from "./entry_lookup.ts";
import { fileOffset } from "./file_offset.ts";
import { attrFromStatx, entryOut, splitTimeout, writeAttrFromStatx } from "./fs_attr.ts";
import { FUSE_ATTR_OUT, FUSE_ENTRY_OUT, FUSE_OPEN_OUT } from "../fuse/fuse_layouts.ts";
import { encodeEntryOut } from "../fuse/fuse_reply.ts";
import { writeViewOf } from "../fuse/fuse_struct.ts";
import { errnoOf, FsError, FsRestoreError, toFsError } from "./fs_errors.ts";
import { checkEntryName, classifyComponent } from "./fs_names.ts";
import { type FsSnapshot, restoreSnapshot, takeSnapshot } from "./fs_snapshot.ts";
import {
  type AttrResult,
  type CreateArgs,
  type EntryResult,
  type FsInitResult,
  type FsOptions,
  isMigrationMode,
  type MigrationMode,
  type MigrationOnError,
  type OpenResult,
  type StatfsResult,
} from "./fs_types.ts";
import { groupOfFd } from "./group_claims.ts";
import { HandleOpener, handlesOnRootMount } from "./handle_migration.ts";
import type { Handle } from "./handle_table.ts";
import { negotiateInit } from "./init_negotiation.ts";
import { describeInode, type InodeInfo } from "./inode_info.ts";
import { InodeFileHandles } from "./inode_file_handles.ts";
import { type Inode, InodeTable } from "./inode_table.ts";
import { hostOpenFlags, opensForChange, reopenFlags } from "./open_flags.ts";
import { openForIo } from "./open_for_io.ts";
import { OpenHandles } from "./open_handles.ts";
import { setAttributes } from "./set_attributes.ts";
import { XattrOps, type XattrReply } from "./xattr_ops.ts";

export type { Caller } from "./credentials.ts";
export { FsError, FsRestoreError } from "./fs_errors.ts";
export type { InodeInfo } from "./inode_info.ts";
export type { FsHandleRecord, FsInodeRecord, FsSnapshot } from "./fs_snapshot.ts";
export { isCachePolicy } from "./fs_types.ts";
export type { XattrReply } from "./xattr_ops.ts";
export type {
  AttrResult,
  CachePolicy,
  CreateArgs,
  EntryResult,
  FsInitResult,
  FsOptions,
  MigrationOnError,
  OpenResult,
  StatfsResult,
} from "./fs_types.ts";
import { keepName } from "./kept_names.ts";

const RENAME_FLAGS = RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT;
/** fuse_create_out: a fuse_entry_out, then a fuse_open_out. */
const CREATE_OUT_SIZE = FUSE_ENTRY_OUT.size + FUSE_OPEN_OUT.size;
const OPEN_OUT = FUSE_OPEN_OUT.offsets;
const SEEK_WHENCE_MAX = 4;

/** RangeError (a caller bug, not guest input) unless `target` has `size` bytes at `at` for `what`. */
function checkRoom(target: Uint8Array, at: number, size: number, what: string): void {
  if (!(at >= 0 && at + size <= target.byteLength)) {
    throw new RangeError(`${what} needs ${size} bytes at ${at}`);
  }
} // SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE

/** A host directory served as a FUSE filesystem. */
export class PassthroughFs {
  readonly #readOnly: boolean;
  readonly #migrationOnError: MigrationOnError;
  readonly #migrationMode: MigrationMode;
  readonly #attrTimeoutSec: number;
  /** The attribute timeout as fuse_attr_out carries it. */
  readonly #attrValid: { sec: number; nsec: number };
  /** Runs operations as their guest caller (when vhostd is root). */
  readonly #scope: CallerScope;
  readonly #inodes: InodeTable;
  readonly #entries: EntryLookup;
  readonly #handles: OpenHandles;
  readonly #creator: EntryCreator;
  readonly #xattr: XattrOps;
  #init: FsInitResult | null = null;

  /**
   * Opens `opts.sharedDir` (an O_PATH directory fd) as the root, node id 1.
   * Throws an Error saying why when the directory cannot be used.
   */
  constructor(opts: FsOptions) {
    if (typeof opts.sharedDir !== "string" || opts.sharedDir === "") {
      throw new Error("the shared directory path is empty");
    }
    if (opts.migrationOnError !== "abort" && opts.migrationOnError !== "guest-error") {
      throw new Error(`migrationOnError must be "abort" or "guest-error"`);
    }
    this.#readOnly = opts.readOnly;
    this.#migrationOnError = opts.migrationOnError;
    const migrationMode = opts.migrationMode ?? "find-paths";
    if (!isMigrationMode(migrationMode)) {
      throw new Error(`migrationMode must be find-paths or file-handles`);
    }
    this.#migrationMode = migrationMode;
    const cache = cacheSettings(opts);
    this.#attrTimeoutSec = cache.attrTimeoutSec;
    this.#attrValid = splitTimeout(cache.attrTimeoutSec);
    this.#scope = new CallerScope();
    this.#xattr = new XattrOps(
      opts,
      () => ((this.#init?.flags ?? 0) & FuseInitFlag.POSIX_ACL) !== 0,
    );
    let fd = -1;
    try {
      fd = openat(AT_FDCWD, opts.sharedDir, O_PATH | O_DIRECTORY | O_CLOEXEC);
      const rootStat = statFd(fd);
      const fileHandles = InodeFileHandles.open(
        opts.inodeFileHandles ?? "never",
        fd,
        opts.handleFdCacheSize,
      );
      this.#inodes = new InodeTable(fd, rootStat, fileHandles);
    } catch (error) {
      closeQuietly(fd);
      const why = error instanceof Error ? error.message : String(error);
      throw new Error(`cannot share directory "${opts.sharedDir}": ${why}`);
    }
    this.#entries = new EntryLookup(this.#inodes, cache.entryTimeoutSec, cache.attrTimeoutSec);
    this.#handles = new OpenHandles(this.#inodes, cache.fileOpenFlags, cache.dirOpenFlags);
    this.#creator = new EntryCreator(
      this.#scope,
      this.#entries,
      this.#handles,
      this.#xattr,
    );
  }

  /** True when every change is refused with EROFS. */
  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** The INIT negotiated with the guest (or restored), or null before INIT. */
  get negotiated(): FsInitResult | null {
    return this.#init === null ? null : { ...this.#init };
  }

  /** Numbers of known inodes (the root included) and open handles. */
  counts(): { inodes: number; handles: number } {
    return { inodes: this.#inodes.size, handles: this.#handles.table.size };
  }

  /** Diagnostic view of an inode, or undefined when the node id is unknown. */
  inodeInfo(nodeid: bigint): InodeInfo | undefined {
    const inode = this.#inodes.get(nodeid);
    return inode === undefined ? undefined : describeInode(inode);
  }

  // -------------------------------------------------------------------------
  // Session.

  /**
   * Negotiates INIT: accepts what the guest offers of ASYNC_READ,
   * ATOMIC_O_TRUNC, BIG_WRITES, AUTO_INVAL_DATA, DO_READDIRPLUS,
   * READDIRPLUS_AUTO, ASYNC_DIO, PARALLEL_DIROPS, MAX_PAGES and
   * HANDLE_KILLPRIV_V2, and (when operations run as their caller)
   * CREATE_SUPP_GROUP in `flags2`; remembers the result (it is migrated).
   * EPROTO for a major version below 7.
   */
  init(args: FuseInitArgs): FsInitResult {
    return this.#run(() => {
      this.#init = negotiateInit(args, this.#xattr, this.#scope.switching);
      return { ...this.#init };
    });
  }

  /** DESTROY: closes every handle and forgets every inode but the root. */
  destroy(): void {
    this.#dropAll();
    this.#init = null;
  }

  /**
   * Shuts the filesystem down for good: {@linkcode destroy}, then closes the
   * root's fd. Later operations fail with EBADF.
   */
  close(): void {
    this.destroy();
    this.#inodes.close();
  }

  // -------------------------------------------------------------------------
  // Names and inodes.

  /** LOOKUP `name` in directory `parent`; the guest holds one more reference on the result. */
  lookup(parent: bigint, name: Uint8Array): EntryResult {
    return this.#run(() => this.#lookupEntry(this.#directory(parent), name));
  }

  /** LOOKUP `name` in the directory inode `dir` (see {@linkcode lookup}). */
  #lookupEntry(dir: Inode, name: Uint8Array): EntryResult {
    const kind = classifyComponent(name);
    if (kind === "name") return this.#entries.lookupIn(dir, name);
    const target = kind === "dot" || dir === this.#inodes.root ? dir : dir.location?.parent;
    if (target === undefined) throw new FsError(ENOENT, `the parent of ${dir.nodeid} is not known`);
    if (target.broken !== null) throw new FsError(EIO, target.broken);
    const st = statFd(target.fd);
    this.#inodes.addLookups(target);
    return this.#entries.entry(target, st);
  }

  /**
   * LOOKUP as {@linkcode lookup}, its fuse_entry_out written at `at` in
   * `target`: for a name that still names the file last looked up there (a
   * guest's repeated LOOKUP), straight from one statx, with no objects.
   */
  lookupInto(parent: bigint, name: Uint8Array, target: Uint8Array, at: number): void {
    checkRoom(target, at, FUSE_ENTRY_OUT.size, "fuse_entry_out");
    this.#run(() => {
      const dir = this.#directory(parent);
      const view = writeViewOf(target);
      const plain = classifyComponent(name) === "name";
      if (plain && this.#entries.lookupKnownInto(dir, name, view, target.byteOffset + at)) return;
      encodeEntryOut(entryOut(this.#lookupEntry(dir, name)), target, at);
    });
  }

  /** FORGET: drops `nlookup` references; never throws, ignores unknown node ids. */
  forget(nodeid: bigint, nlookup: bigint): void {
    try {
      this.#inodes.forget(nodeid, nlookup);
    } catch {
      // Nothing a forget could report to.
    }
  }

  /** BATCH_FORGET. */
  batchForget(items: { nodeid: bigint; nlookup: bigint }[]): void {
    for (const item of items) this.forget(item.nodeid, item.nlookup);
  }

  /** GETATTR; with `fh` (an open handle of this inode) the handle's fd is used. */
  getattr(nodeid: bigint, fh?: bigint): AttrResult {
    return this.#run(() => this.#attrResult(this.#attrFd(nodeid, fh)));
  }

  /**
   * GETATTR written straight into a reply: the fuse_attr_out of `nodeid`
   * (through `fh` as {@linkcode getattr} does) at `at` in `target`, all 104
   * bytes, from the raw statx (no status or attribute object). Fails as
   * getattr does, with nothing written.
   */
  getattrInto(nodeid: bigint, fh: bigint | undefined, target: Uint8Array, at: number): void {
    const fd = this.#attrFd(nodeid, fh);
    const statx = statxViewOrErrno(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    if (typeof statx === "number") throw new FsError(-statx, `statx of node ${nodeid}`);
    checkRoom(target, at, FUSE_ATTR_OUT.size, "fuse_attr_out");
    const view = writeViewOf(target);
    const base = target.byteOffset + at;
    const sec = this.#attrValid.sec;
    const out = FUSE_ATTR_OUT.offsets;
    writeU64(view, base + out.attrValid, sec);
    view.setUint32(base + out.attrValidNsec, this.#attrValid.nsec, true);
    view.setUint32(base + out.attrValidNsec + 4, 0, true); // fuse_attr_out.dummy
    writeAttrFromStatx(statx, view, base + out.attr);
  }

  /**
   * The fd GETATTR reads `nodeid`'s status from: the open handle `fh`'s
   * when it is one of this inode's and usable, else the inode's own.
   */
  #attrFd(nodeid: bigint, fh: bigint | undefined): number {
    const inode = this.#inode(nodeid);
    if (fh === undefined) return inode.fd;
    const handle = this.#handles.table.get(fh);
    return handle !== undefined && handle.broken === null && handle.inode === inode
      ? handle.fd
      : inode.fd;
  }

  /**
   * SETATTR: mode (not on symbolic links, which have none), owner, size
   * (on the handle when FATTR_FH names a writable one), times (exact or
   * now); then returns fresh attributes. Runs as `caller`, so the host
   * decides who may change what. With FATTR_KILL_SUIDGID the owner change
   * and the truncation run without CAP_FSETID (the host kernel then clears
   * setuid and group-executable setgid bits).
   */
  setattr(nodeid: bigint, args: FuseSetattrArgs, caller?: Caller): AttrResult {
    return this.#run(() => {
      const inode = this.#inode(nodeid);
      this.#refuseIfReadOnly();
      let handle: Handle | undefined;
      if ((args.valid & FuseSetattrValid.FH) !== 0) {
        handle = this.#handles.table.get(args.fh);
        if (handle?.broken) throw new FsError(EIO, handle.broken);
        if (handle?.inode !== inode) handle = undefined;
      }
      setAttributes(this.#scope, inode, handle, args, caller);
      return this.#attrResult(inode.fd);
    });
  }

  /** READLINK: the link's target bytes, untouched. EINVAL when not a link. */
  readlink(nodeid: bigint): Uint8Array {
    return this.#run(() => {
      const inode = this.#inode(nodeid);
      if (inode.type !== S_IFLNK) throw new FsError(EINVAL, "not a symbolic link");
      return readlinkat(inode.fd, "");
    });
  }

  /**
   * SYMLINK: creates link `name` in `parent` pointing at `target` (stored
   * as is), as the caller `uid`/`gid` with supplementary `groups`.
   */
  symlink(
    parent: bigint,
    name: Uint8Array,
    target: Uint8Array,
    uid: number,
    gid: number,
    groups: readonly number[] = [],
  ): EntryResult {
    return this.#run(() => {
      const dir = this.#dirToChange(parent, name);
      return this.#creator.createEntry(dir, name, null, { uid, gid, groups }, false, (dirFd) => {
        symlinkat(target, dirFd, name);
      });
    });
  }

  /**
   * MKNOD: a regular file, device node, FIFO or socket (`mode` holds the
   * type), as the caller (device nodes then need a root caller).
   */
  mknod(
    parent: bigint,
    name: Uint8Array,
    mode: number,
    rdev: number,
    umask: number,
    uid: number,
    gid: number,
    groups: readonly number[] = [],
  ): EntryResult {
    return this.#run(() => {
      const type = (mode & S_IFMT) === 0 ? S_IFREG : mode & S_IFMT;
      if (type === S_IFDIR) throw new FsError(EPERM, "mknod of a directory");
      if (![S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK].includes(type)) {
        throw new FsError(EINVAL, `mknod of file type ${type.toString(8)}`);
      }
      const { wanted, exact } = this.#creator.creationMode(this.#inodes.get(parent), mode, umask);
      const device = type === S_IFCHR || type === S_IFBLK ? rdev >>> 0 : 0;
      const dir = this.#dirToChange(parent, name);
      return this.#creator.createEntry(dir, name, exact, { uid, gid, groups }, false, (dirFd) => {
        mknodat(dirFd, name, type | wanted, device);
      });
    });
  }

  /** MKDIR, as the caller. */
  mkdir(
    parent: bigint,
    name: Uint8Array,
    mode: number,
    umask: number,
    uid: number,
    gid: number,
    groups: readonly number[] = [],
  ): EntryResult {
    return this.#run(() => {
      const { wanted, exact } = this.#creator.creationMode(this.#inodes.get(parent), mode, umask);
      const dir = this.#dirToChange(parent, name);
      return this.#creator.createEntry(dir, name, exact, { uid, gid, groups }, true, (dirFd) => {
        mkdirat(dirFd, name, wanted);
      });
    });
  }

  /** UNLINK a non-directory, as `caller` (vhostd itself when undefined). */
  unlink(parent: bigint, name: Uint8Array, caller?: Caller): void {
    // No closure for #run: UNLINK is one of the four requests of every file a guest makes.
    try {
      this.#remove(parent, name, 0, caller);
    } catch (error) {
      throw toFsError(error);
    }
  }

  /** RMDIR an empty directory, as `caller`. */
  rmdir(parent: bigint, name: Uint8Array, caller?: Caller): void {
    this.#run(() => this.#remove(parent, name, AT_REMOVEDIR, caller));
  }

  /**
   * RENAME / RENAME2 with RENAME_NOREPLACE, RENAME_EXCHANGE or
   * RENAME_WHITEOUT, as `caller`.
   */
  rename(
    parent: bigint,
    name: Uint8Array,
    newParent: bigint,
    newName: Uint8Array,
    flags: number,
    caller?: Caller,
  ): void {
    this.#run(() => {
      const dir = this.#directory(parent);
      const newDir = this.#directory(newParent);
      checkEntryName(name);
      checkEntryName(newName);
      this.#refuseIfReadOnly();
      if ((flags & ~RENAME_FLAGS) !== 0) throw new FsError(EINVAL, `rename flags ${flags}`);
      const source = statEntryQuietly(dir.fd, name);
      const target = statEntryQuietly(newDir.fd, newName);
      this.#scope.asCallerClaiming(
        caller,
        () => [groupOfFd(dir.fd), groupOfFd(newDir.fd), source?.gid, target?.gid],
        () => renameat2(dir.fd, name, newDir.fd, newName, flags),
      );
      const moved = source && this.#inodes.find(source.dev, source.ino);
      const other = target && this.#inodes.find(target.dev, target.ino);
      if (moved !== undefined && moved === other) return; // two links of one file: no change
      const exchange = (flags & RENAME_EXCHANGE) !== 0;
      // An inode recorded at either name that is not the file found there (a host process
      // moved things behind the guest's back) is at neither name now: it has no known location.
      const recordedAtSource = this.#inodes.locatedAt(dir, name);
      const recordedAtTarget = this.#inodes.locatedAt(newDir, newName);
      if (recordedAtSource !== undefined && recordedAtSource !== moved) {
        this.#inodes.setLocation(recordedAtSource, null);
      }
      if (recordedAtTarget !== undefined && (!exchange || recordedAtTarget !== other)) {
        // Replaced by the rename, or (exchange) not the file that moved to the source name.
        this.#inodes.setLocation(recordedAtTarget, null);
      }
      if (!exchange && other) this.#inodes.clearLocationIf(other, newDir, newName);
      if (moved) this.#inodes.setLocation(moved, { parent: newDir, name: keepName(newName) });
      if (exchange && other) this.#inodes.setLocation(other, { parent: dir, name: keepName(name) });
    });
  }

  /** LINK: a new name `newName` in `newParent` for inode `nodeid`, as `caller`. */
  link(nodeid: bigint, newParent: bigint, newName: Uint8Array, caller?: Caller): EntryResult {
    return this.#run(() => {
      const inode = this.#inode(nodeid);
      const dir = this.#directory(newParent);
      checkEntryName(newName);
      this.#refuseIfReadOnly();
      if (inode.type === S_IFDIR) throw new FsError(EPERM, "hard link to a directory");
      this.#scope.asCallerClaiming(caller, () => [groupOfFd(inode.fd), groupOfFd(dir.fd)], () => {
        try {
          // Needs CAP_DAC_READ_SEARCH (never a caller other than root); ENOENT without it.
          linkat(inode.fd, "", dir.fd, newName, AT_EMPTY_PATH);
        } catch (error) {
          if (errnoOf(error) !== ENOENT) throw error;
          linkat(...procSelfFdAt(inode.fd), dir.fd, newName, AT_SYMLINK_FOLLOW);
        }
      });
      return this.#entries.lookupIn(dir, newName);
    });
  }

  // -------------------------------------------------------------------------
  // Files.

  /**
   * OPEN a regular file, as `caller` (the host checks its access).
   * O_APPEND, O_TRUNC, O_NOATIME (dropped when the host refuses it) and the
   * sync flags are honoured, O_DIRECT is dropped. With `killSuidgid`
   * (FUSE_OPEN_KILL_SUIDGID) an O_TRUNC runs without CAP_FSETID. EROFS for
   * write access or O_TRUNC on a read-only share.
   */
  open(nodeid: bigint, flags: number, caller?: Caller, killSuidgid = false): OpenResult {
    return this.#run(() => {
      const inode = this.#inode(nodeid);
      const hostFlags = hostOpenFlags(flags);
      if (this.#readOnly && opensForChange(hostFlags)) throw new FsError(EROFS);
      const fd = this.#scope.asCallerClaiming(
        caller,
        () => [groupOfFd(inode.fd)],
        () =>
          this.#scope.maybeKillingPrivileges(
            killSuidgid,
            () => openForIo(inode.fd, inode.type, hostFlags),
          ),
      );
      return this.#handles.add(fd, inode, hostFlags, false);
    });
  }

  /**
   * CREATE: creates and opens `name` in `parent`, or with no O_EXCL opens
   * the file already there (not following a link: ELOOP), as the caller
   * `uid`/`gid` with supplementary `groups`. With `killSuidgid`
   * (FUSE_OPEN_KILL_SUIDGID) an O_TRUNC of an existing file runs without
   * CAP_FSETID.
   */
  create(
    parent: bigint,
    name: Uint8Array,
    flags: number,
    mode: number,
    umask: number,
    uid: number,
    gid: number,
    groups: readonly number[] = [],
    killSuidgid = false,
  ): { entry: EntryResult; open: OpenResult } {
    return this.#run(() => {
      const dir = this.#dirToChange(parent, name);
      const args = { name, flags, mode, umask };
      const made = this.#creator.createAndOpen(dir, args, { uid, gid, groups }, killSuidgid);
      return { entry: this.#entries.entry(made.inode, made.st), open: made.open };
    });
  }

  /**
   * CREATE of `args` as {@linkcode create} for `caller`, its fuse_entry_out and
   * fuse_open_out (fuse_create_out's two halves) written at `at` in
   * `target`, with no entry or attribute object. Nothing is written when
   * it fails.
   */
  createInto(
    parent: bigint,
    args: CreateArgs,
    caller: Caller,
    killSuidgid: boolean,
    target: Uint8Array,
    at: number,
  ): void {
    checkRoom(target, at, CREATE_OUT_SIZE, "fuse_entry_out and fuse_open_out");
    this.#run(() => {
      const dir = this.#dirToChange(parent, args.name);
      const made = this.#creator.createAndOpen(dir, args, caller, killSuidgid);
      const view = writeViewOf(target);
      const base = target.byteOffset + at;
      this.#entries.writeEntryOut(made.inode, made.st, view, base);
      const open = base + FUSE_ENTRY_OUT.size;
      view.setBigUint64(open + OPEN_OUT.fh, made.open.fh, true);
      view.setUint32(open + OPEN_OUT.openFlags, made.open.openFlags, true);
      view.setUint32(open + OPEN_OUT.padding, 0, true);
    });
  }

  /** The host fd of an open file handle, for the handler's preadv/pwritev. EBADF if unknown. */
  readFd(fh: bigint): number {
    return this.#run(() => this.#handles.file(fh).fd);
  }

  /**
   * The fd a WRITE handed to io_uring goes to: on a FUSE host file system a
   * second descriptor of the file opened with O_DIRECT (so the kernel sends
   * the writes to the server asynchronously instead of in io_uring's blocked
   * worker threads; see direct_writer.ts), made on the handle's first such
   * write; otherwise the handle's fd. EBADF if unknown.
   */
  asyncWriteFd(fh: bigint): number {
    return this.#run(() => {
      const handle = this.#handles.file(fh);
      if (handle.directFd === DIRECT_WRITER_UNKNOWN) {
        handle.directFd = openDirectWriter(handle.fd, handle.flags);
      }
      return handle.directFd >= 0 && handle.directUsable ? handle.directFd : handle.fd;
    });
  }

  /**
   * Stops writing `fh` through its O_DIRECT descriptor (a direct write was
   * refused with EINVAL: the server's backing wants aligned direct I/O);
   * later writes use the handle's fd. The descriptor itself closes with the
   * handle: writes queued on it may not have reached the kernel yet. Unknown
   * handles are ignored.
   */
  dropDirectWriter(fh: bigint): void {
    const handle = this.#handles.table.get(fh);
    if (handle !== undefined) handle.directUsable = false;
  }

  /**
   * WRITE: runs `transfer` (the handler's pwritev) on the handle's fd. With
   * `killSuidgid` (FUSE_WRITE_KILL_SUIDGID: the guest writer has no
   * CAP_FSETID) it runs without CAP_FSETID, so the host kernel clears the
   * setuid bit, the setgid bit of a group-executable file and
   * `security.capability`, as for an unprivileged writer. EBADF if unknown.
   */
  write<T>(fh: bigint, killSuidgid: boolean, transfer: (fd: number) => T): T {
    return this.#run(() => {
      const fd = this.#handles.file(fh).fd;
      return this.#scope.maybeKillingPrivileges(killSuidgid, () => transfer(fd));
    });
  }

  /** STATFS of the filesystem holding the inode. */
  statfs(nodeid: bigint): StatfsResult {
    return this.#run(() => {
      const st = fstatfs(this.#inode(nodeid).fd);
      return {
        blocks: st.blocks,
        bfree: st.bfree,
        bavail: st.bavail,
        files: st.files,
        ffree: st.ffree,
        bsize: st.bsize,
        namelen: st.namelen,
        frsize: st.frsize,
      };
    });
  }

  /** RELEASE: closes a file handle; unknown handles are ignored. */
  release(fh: bigint): void {
    this.#handles.close(fh);
  }

  /**
   * FLUSH (on each close(2) in the guest): closes a duplicate, so close-time
   * errors surface; of the O_DIRECT descriptor too, when writes went there
   * (a FUSE server may keep what was written through it until its flush).
   */
  flush(fh: bigint): void {
    this.#run(() => {
      const handle = this.#handles.file(fh);
      if (handle.directFd >= 0) closeFd(dupFd(handle.directFd));
      closeFd(dupFd(handle.fd));
    });
  }

  /** FSYNC (data only with `datasync`). */
  fsync(fh: bigint, datasync: boolean): void {
    this.#run(() => {
      const fd = this.#handles.file(fh).fd;
      if (datasync) fdatasync(fd);
      else fsync(fd);
    });
  }

  /** FALLOCATE on an open file (mode: FALLOC_FL_* bits). */
  fallocate(fh: bigint, mode: number, offset: bigint, length: bigint): void {
    this.#run(() => {
      const handle = this.#handles.file(fh);
      this.#refuseIfReadOnly();
      fallocate(handle.fd, mode, fileOffset(offset), fileOffset(length));
    });
  }

  /** LSEEK (SEEK_DATA / SEEK_HOLE, or SET/CUR/END) on an open file; returns the new offset. */
  lseek(fh: bigint, offset: bigint, whence: number): bigint {
    return this.#run(() => {
      const handle = this.#handles.file(fh);
      if (!Number.isInteger(whence) || whence < 0 || whence > SEEK_WHENCE_MAX) {
        throw new FsError(EINVAL, `lseek whence ${whence}`);
      }
      return lseek64(handle.fd, BigInt.asIntN(64, offset), whence);
    });
  }

  /**
   * ACCESS: checks `mask` (R_OK/W_OK/X_OK, F_OK = 0) with vhostd's effective
   * ids (faccessat AT_EACCESS); W_OK on a read-only share is EROFS.
   */
  access(nodeid: bigint, mask: number): void {
    this.#run(() => {
      const inode = this.#inode(nodeid);
      if (this.#readOnly && (mask & W_OK) !== 0) throw new FsError(EROFS);
      faccessat(inode.fd, "", mask, AT_EMPTY_PATH | AT_EACCESS);
    });
  }

  // -------------------------------------------------------------------------
  // Directories.

  /** OPENDIR. */
  opendir(nodeid: bigint, _flags: number): OpenResult {
    return this.#run(() => {
      const inode = this.#inode(nodeid);
      const fd = openForIo(inode.fd, inode.type, O_RDONLY | O_DIRECTORY);
      return this.#handles.add(fd, inode, O_RDONLY | O_DIRECTORY, true);
    });
  }

  /**
   * READDIR / READDIRPLUS: one reply payload of at most `size` bytes from
   * directory offset `offset` (0 = start; else the `off` of the last entry
   * received). READDIRPLUS adds one lookup reference per entry sent, except
   * "." and "..", which carry node id 0. The payload is a view of a buffer
   * the next listing reuses: copy it out first.
   */
  readdir(nodeid: bigint, fh: bigint, offset: bigint, size: number, plus: boolean): Uint8Array {
    return this.#run(() => {
      const handle = this.#handles.dir(fh);
      const cursor = handle.dir;
      if (cursor === null) throw new FsError(ENOTDIR);
      const dir = handle.inode;
      if (dir.nodeid !== nodeid) throw new FsError(EBADF, `handle ${fh} is not open on ${nodeid}`);
      const lookup = plus
        ? {
          lookup: (name: Uint8Array) => this.#entries.lookupIn(dir, name),
          fillEntryOut: (name: Uint8Array, view: DataView, base: number) =>
            this.#entries.lookupKnownInto(dir, name, view, base),
          forgetOne: (id: bigint) => this.#inodes.forget(id, 1n),
        }
        : null;
      return readDirectoryPage(handle.fd, cursor, offset, size, lookup);
    });
  }

  /** RELEASEDIR; unknown handles are ignored. */
  releasedir(fh: bigint): void {
    this.#handles.close(fh);
  }

  /** FSYNCDIR. */
  fsyncdir(fh: bigint, datasync: boolean): void {
    this.#run(() => {
      const fd = this.#handles.dir(fh).fd;
      if (datasync) fdatasync(fd);
      else fsync(fd);
    });
  }

  // -------------------------------------------------------------------------
  // Extended attributes (xattr_ops.ts).

  /** GETXATTR; `size` 0 asks for the value's size. ENOSYS unless xattrs are enabled. */
  getxattr(nodeid: bigint, name: Uint8Array, size: number): XattrReply {
    return this.#run(() => this.#xattr.get(this.#inode(nodeid), name, size));
  }

  /** LISTXATTR; `size` 0 asks for the list's size. */
  listxattr(nodeid: bigint, size: number): XattrReply {
    return this.#run(() => this.#xattr.list(this.#inode(nodeid), size));
  }

  /** SETXATTR (`flags`: XATTR_CREATE/REPLACE; `setxattrFlags`: FuseSetxattrFlag bits). */
  setxattr(
    nodeid: bigint,
    name: Uint8Array,
    value: Uint8Array,
    flags: number,
    setxattrFlags: number,
  ): void {
    this.#run(() => this.#xattr.set(this.#inode(nodeid), name, value, flags, setxattrFlags));
  }

  /** REMOVEXATTR. */
  removexattr(nodeid: bigint, name: Uint8Array): void {
    this.#run(() => this.#xattr.remove(this.#inode(nodeid), name));
  }

  // -------------------------------------------------------------------------
  // Migration.

  /**
   * The state the guest depends on, as plain JSON-able data (see
   * `fs_snapshot.ts`). Changes nothing: the source may resume.
   */
  snapshot(): FsSnapshot {
    const handleOf = this.#migrationMode === "file-handles"
      ? handlesOnRootMount(this.#inodes.root.fd)
      : undefined;
    return takeSnapshot(this.#inodes, this.#handles.table, this.#init, handleOf);
  }

  /**
   * Re-creates a snapshot's inodes and handles on this fresh filesystem over
   * the same directory, keeping node ids and handle numbers. With
   * `migrationOnError: "abort"` the first failure throws FsRestoreError (and
   * this filesystem is left fresh); with "guest-error" failures are listed
   * in `errors` and the affected inodes and handles answer EIO. A malformed
   * snapshot always throws FsRestoreError.
   */
  restore(snapshot: FsSnapshot): { errors: string[] } {
    if (this.#inodes.size !== 1 || this.#handles.table.size !== 0) {
      throw new FsRestoreError("restore needs a fresh filesystem (inodes or handles exist)");
    }
    const opener = HandleOpener.tryOpen(this.#inodes.root.fd);
    try {
      const outcome = restoreSnapshot({
        inodes: this.#inodes,
        handles: this.#handles.table,
        onError: this.#migrationOnError,
        reopen: (inode, flags, isDir) => {
          if (isDir) return openForIo(inode.fd, inode.type, O_RDONLY | O_DIRECTORY);
          if (this.#readOnly && opensForChange(reopenFlags(flags))) {
            throw new FsError(EROFS, "a writable handle on a read-only share");
          }
          return openForIo(inode.fd, inode.type, reopenFlags(flags));
        },
        openHandle: opener && ((handle) => opener.openHandle(handle)),
      }, snapshot);
      if (outcome.init !== null) this.#xattr.checkRestoredFlags(outcome.init.flags);
      this.#init = outcome.init;
      return { errors: outcome.errors };
    } catch (error) {
      this.#dropAll();
      throw error;
    } finally {
      opener?.close();
    }
  }

  // -------------------------------------------------------------------------
  // Internals.

  #run<T>(operation: () => T): T {
    try {
      return operation();
    } catch (error) {
      throw toFsError(error);
    }
  }

  #refuseIfReadOnly(): void {
    if (this.#readOnly) throw new FsError(EROFS);
  }

  #inode(nodeid: bigint): Inode {
    const inode = this.#inodes.get(nodeid);
    if (inode === undefined) throw new FsError(EBADF, `unknown node id ${nodeid}`);
    if (inode.broken !== null) throw new FsError(EIO, inode.broken);
    return inode;
  }

  #directory(nodeid: bigint): Inode {
    const inode = this.#inode(nodeid);
    if (inode.type !== S_IFDIR) throw new FsError(ENOTDIR, `node ${nodeid} is not a directory`);
    return inode;
  }

  #attrResult(fd: number): AttrResult {
    return { attr: attrFromStatx(statFd(fd)), attrTimeoutSec: this.#attrTimeoutSec };
  }

  /**
   * Directory `parent`, about to have its entry `name` created or removed:
   * EBADF, EIO or ENOTDIR for the directory, then the name's checks
   * (checkEntryName), then EROFS on a read-only share.
   */
  #dirToChange(parent: bigint, name: Uint8Array): Inode {
    const dir = this.#directory(parent);
    checkEntryName(name);
    this.#refuseIfReadOnly();
    return dir;
  }

  #remove(parent: bigint, name: Uint8Array, flags: number, caller: Caller | undefined): void {
    const dir = this.#dirToChange(parent, name);
    if (this.#scope.runsAsSelf(caller)) {
      unlinkat(dir.fd, name, flags);
    } else {
      this.#scope.asCallerClaiming(
        caller,
        () => [groupOfFd(dir.fd)], // the entry's own group grants nothing here
        () => unlinkat(dir.fd, name, flags),
      );
    }
    // Whatever inode was last recorded at this name is not there any more (no statx needed
    // to find it: the name is gone, whichever host file it held).
    const recorded = this.#inodes.locatedAt(dir, name);
    if (recorded !== undefined) this.#inodes.setLocation(recorded, null);
  }

  #dropAll(): void {
    this.#handles.closeAll();
    this.#inodes.clear();
  }
}
