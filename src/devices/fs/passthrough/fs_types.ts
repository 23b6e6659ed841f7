/**
 * The value types of the passthrough filesystem's API: options, and what
 * each operation returns to the FUSE request handler.
 *
 * @module
 */

import type { FuseAttr } from "../fuse/fuse_reply.ts";

/** What to do when an inode or handle cannot be re-created on a migration destination. */
export type MigrationOnError = "abort" | "guest-error";

/** How a {@linkcode PassthroughFs} serves its shared directory. */
export interface FsOptions {
  /** The host directory shown to the guest as the root of the filesystem. */
  sharedDir: string;
  /** Refuse every change with EROFS (writes, creation, attribute changes). */
  readOnly: boolean;
  /**
   * On restore, "abort" throws at the first inode or handle that cannot be
   * re-created (the migration fails); "guest-error" records it and answers
   * EIO for every later use of that inode or handle.
   */
  migrationOnError: MigrationOnError;
  /**
   * How much the guest may cache (virtiofsd's `--cache`): "never" opens files
   * with FOPEN_DIRECT_IO and gives zero timeouts (every access reaches the
   * host); "metadata" opens files with FOPEN_DIRECT_IO too but keeps names,
   * attributes (one-day timeouts) and directory listings (KEEP_CACHE,
   * CACHE_DIR) cached; "auto" (default) keeps 1 s timeouts and lets the guest page cache
   * work; "always" keeps file and directory contents cached across opens
   * (KEEP_CACHE, CACHE_DIR) with one-day timeouts.
   */
  cache?: CachePolicy;
  /** How long the guest may cache a name → inode binding, seconds (default from `cache`). */
  entryTimeoutSec?: number;
  /** How long the guest may cache attributes, seconds (default from `cache`). */
  attrTimeoutSec?: number;
  /** Serve extended attributes (virtiofsd's `--xattr`); off: the xattr ops answer ENOSYS. */
  xattr?: boolean;
  /** Offer POSIX ACLs (FUSE_POSIX_ACL with DONT_MASK and SETXATTR_EXT); implies `xattr`. */
  posixAcl?: boolean;
  /** Extended attribute name mapping in virtiofsd's `--xattrmap` syntax; implies `xattr`. */
  xattrMapping?: string;
  /**
   * Whether known inodes hold an fd each (virtiofsd's
   * `--inode-file-handles`): "never" (default) holds one per inode;
   * "prefer" keeps a file handle instead and opens fds on demand through a
   * bounded cache, holding an fd only where the filesystem gives no handle;
   * "mandatory" refuses such files (EOPNOTSUPP) and a shared directory that
   * gives none.
   */
  inodeFileHandles?: InodeFileHandleMode;
  /** Most fds the file handle mode keeps open for inodes (default 1024, at least 16). */
  handleFdCacheSize?: number;
  /** How inodes travel in a snapshot (default "find-paths"); a restore takes either. */
  migrationMode?: MigrationMode;
}

/**
 * How inodes travel in a migration (virtiofsd's `--migration-mode`): by
 * path only ("find-paths"), or also by file handle ("file-handles": the
 * destination opens the handle first, which also finds files that were
 * unlinked or renamed behind the guest's back, when both sides see the same
 * filesystem).
 */
export type MigrationMode = "find-paths" | "file-handles";

/** True when `value` names a migration mode. */
export function isMigrationMode(value: unknown): value is MigrationMode {
  return value === "find-paths" || value === "file-handles";
}

/** Whether known inodes hold fds or file handles. */
export type InodeFileHandleMode = "never" | "prefer" | "mandatory";

/** True when `value` names an inode file handle mode. */
export function isInodeFileHandleMode(value: unknown): value is InodeFileHandleMode {
  return value === "never" || value === "prefer" || value === "mandatory";
}

/** The extended attribute part of {@linkcode FsOptions}. */
export type FsXattrOptions = Pick<FsOptions, "xattr" | "posixAcl" | "xattrMapping">;

/** Guest caching policy of a share. */
export type CachePolicy = "never" | "metadata" | "auto" | "always";

/** True when `value` names a cache policy. */
export function isCachePolicy(value: string): value is CachePolicy {
  return value === "never" || value === "metadata" || value === "auto" || value === "always";
}

/** An inode the guest now holds one more lookup reference on (LOOKUP, MKDIR, CREATE...). */
export interface EntryResult {
  /** Our node id for the inode (the guest passes it back in later requests). */
  nodeid: bigint;
  /** With `nodeid`, unique for the filesystem's lifetime; always 0 here (node ids are never reused). */
  generation: bigint;
  /** Attributes; `attr.ino` is the host inode number. */
  attr: FuseAttr;
  /** How long the guest may cache the name, seconds. */
  entryTimeoutSec: number;
  /** How long the guest may cache the attributes, seconds. */
  attrTimeoutSec: number;
}

/** Fresh attributes of an inode (GETATTR, SETATTR). */
export interface AttrResult {
  /** The attributes. */
  attr: FuseAttr;
  /** How long the guest may cache them, seconds. */
  attrTimeoutSec: number;
}

/** A new file or directory handle (OPEN, OPENDIR, CREATE). */
export interface OpenResult {
  /** Handle number the guest passes back in later requests. */
  fh: bigint;
  /** FOPEN_* bits for `fuse_open_out.open_flags`. */
  openFlags: number;
}

/** What a CREATE asks for (FUSE's decoded fuse_create_in and name have these fields). */
export interface CreateArgs {
  /** Name of the new file in its directory. */
  name: Uint8Array;
  /** The guest's open(2) flags. */
  flags: number;
  /** Permissions asked for. */
  mode: number;
  /** The caller's umask. */
  umask: number;
}

/** Filesystem statistics for STATFS (`fuse_kstatfs`). */
export interface StatfsResult {
  /** Total blocks of `frsize` bytes. */
  blocks: bigint | number;
  /** Free blocks. */
  bfree: bigint | number;
  /** Free blocks for unprivileged users. */
  bavail: bigint | number;
  /** Total inodes. */
  files: bigint | number;
  /** Free inodes. */
  ffree: bigint | number;
  /** Preferred block size. */
  bsize: number;
  /** Longest file name. */
  namelen: number;
  /** Fragment size: the unit of `blocks`. */
  frsize: number;
}

/** The outcome of INIT: what the handler puts in `fuse_init_out` (major is always 7). */
export interface FsInitResult {
  /** Accepted FuseInitFlag bits. */
  flags: number;
  /** Accepted FuseInitFlag2 bits. */
  flags2: number;
  /** Largest WRITE payload, bytes. */
  maxWrite: number;
  /** Readahead limit, bytes. */
  maxReadahead: number;
  /** Most pages per request. */
  maxPages: number;
  /** Timestamp granularity, nanoseconds. */
  timeGran: number;
  /** The protocol minor version we speak. */
  minor: number;
}
