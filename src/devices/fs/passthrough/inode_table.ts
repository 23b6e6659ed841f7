/**
 * The inode table: every host file the guest knows, by our node id and by
 * its host identity (device, inode number), each with an O_PATH fd that all
 * later access goes through: held by the inode, or (file handle mode, see
 * inode_file_handles.ts) opened on demand from the inode's file handle
 * through a bounded cache. The root always holds its fd.
 *
 * Lifetime: an inode lives while the guest holds lookup references on it
 * (`lookups`) or vhostd holds internal ones (`refs`: open handles, and
 * inodes whose recorded location names it as their parent). It is dropped,
 * and its fd closed, when both reach zero. The root is never dropped.
 *
 * Location: for migration every inode remembers one name it can be found
 * under (parent inode + name bytes), kept up to date by lookups, renames,
 * links and unlinks. A location of `null` means "no known name" (the file was
 * unlinked, or replaced by a rename).
 *
 * @module
 */

import { closeQuietly, type StatxResult } from "../../../../ffi/mod.ts";
import { FUSE_ROOT_ID } from "../fuse/fuse_abi.ts";
import { sameName } from "./fs_names.ts";
import type { InodeFileHandles, InodeHandle } from "./inode_file_handles.ts";
import { IdMap } from "./id_map.ts";

/** One name an inode can be found under. */
export interface InodeLocation {
  /** The directory holding the name. */
  readonly parent: Inode;
  /** The name's bytes. */
  readonly name: Uint8Array;
}

/** A host file known to the guest. */
export class Inode {
  /** Our node id (the root is 1). */
  readonly nodeid: bigint;
  /** The fd the inode holds; -1 when known by file handle, and for a broken placeholder. */
  #fd: number;
  /** The file handle the inode is known by instead of a held fd, and where its fd is cached. */
  #byHandle: { readonly handle: InodeHandle; readonly source: InodeFileHandles } | null = null;
  /** Host device number (st_dev). */
  readonly dev: number;
  /** Host inode number (st_ino). */
  readonly ino: bigint;
  /** File type bits (S_IFMT part of st_mode). */
  readonly type: number;
  /** Lookup references the guest holds. */
  lookups = 0n;
  /** Internal references: open handles and inodes located in this directory. */
  refs = 0;
  /** One name this inode is known under; null for the root and for unlinked files. */
  location: InodeLocation | null = null;
  /**
   * Why this inode is unusable (a migration restore could not find it again
   * and `migrationOnError` is "guest-error"); null when healthy.
   */
  broken: string | null = null;
  /**
   * For a directory: the inodes whose location is a name in it, by a hash of
   * that name (see {@linkcode InodeTable.locatedAt}); null until one is.
   */
  locatedHere: Map<number, Inode> | null = null;

  /** Creates an inode record; the table assigns node ids. */
  constructor(nodeid: bigint, fd: number, dev: number, ino: bigint, type: number) {
    this.nodeid = nodeid;
    this.#fd = fd;
    this.dev = dev;
    this.ino = ino;
    this.type = type;
  }

  /**
   * The O_PATH|O_NOFOLLOW fd all access goes through (-1 for a broken
   * placeholder). For an inode known by file handle it comes from the fd
   * cache, opened by handle on a miss (throws SyscallError, ESTALE when the
   * file is gone); use it right away and never close it (see fd_cache.ts).
   */
  get fd(): number {
    const byHandle = this.#byHandle;
    return byHandle === null ? this.#fd : byHandle.source.fdOf(this, byHandle.handle);
  }

  /** Replaces the fd the inode holds (the inode then holds an fd, whatever it did before). */
  set fd(fd: number) {
    this.#byHandle = null;
    this.#fd = fd;
  }

  /** The file handle the inode is known by, or null when it holds its fd. */
  get fileHandle(): InodeHandle | null {
    return this.#byHandle?.handle ?? null;
  }

  /** Makes the inode known by `handle`, handing `fd` to the cache of `source`. */
  useHandle(handle: InodeHandle, source: InodeFileHandles, fd: number): void {
    this.#byHandle = { handle, source };
    this.#fd = -1;
    source.adoptFd(this, fd);
  }

  /** Closes the inode's fd: the one it holds, or its cached one. */
  closeFd(): void {
    if (this.#byHandle !== null) {
      this.#byHandle.source.forget(this);
      this.#byHandle = null;
    } else {
      closeQuietly(this.#fd);
    }
    this.#fd = -1;
  }
}

/**
 * A 30-bit FNV-1a hash of a name: the key of {@linkcode Inode.locatedHere}
 * (a small integer, so that a look-up builds no string).
 */
function nameHash(name: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name[i], 0x01000193);
  return hash & 0x3fff_ffff;
}

const TWO_POW_32 = 0x1_0000_0000;

/**
 * Host identity of a file, as a map key: one exact number when the device
 * number is below 2^20 and the inode number below 2^32 (every local file
 * system's here; no string built per look-up), else a string. A number and
 * a string are never the same key.
 */
function identityKey(dev: number, ino: bigint): number | string {
  if (dev >= 0 && dev < 0x10_0000 && ino < 0x1_0000_0000n) return dev * TWO_POW_32 + Number(ino);
  return `${dev}:${ino}`;
}

const S_IFMT = 0o170000;

/** Inodes by node id and by host identity. */
export class InodeTable {
  readonly #byNodeid = new IdMap<Inode>();
  readonly #byIdentity = new Map<number | string, Inode>();
  #nextNodeid = FUSE_ROOT_ID + 1n;
  /** The shared directory itself, node id 1. */
  readonly root: Inode;
  /** Null when every inode holds its fd ("never"). */
  readonly #fileHandles: InodeFileHandles | null;

  /**
   * Creates a table whose root holds `rootFd` (an O_PATH directory fd)
   * described by `rootStat`; with `fileHandles` other inodes are known by
   * file handle where the filesystem gives one (the table owns it).
   */
  constructor(rootFd: number, rootStat: StatxResult, fileHandles: InodeFileHandles | null = null) {
    this.#fileHandles = fileHandles;
    this.root = new Inode(FUSE_ROOT_ID, rootFd, rootStat.dev, rootStat.ino, rootStat.mode & S_IFMT);
    this.root.lookups = 1n;
    this.#byNodeid.set(FUSE_ROOT_ID, this.root);
    this.#byIdentity.set(identityKey(rootStat.dev, rootStat.ino), this.root);
  }

  /** Number of inodes, the root included. */
  get size(): number {
    return this.#byNodeid.size;
  }

  /** The node id the next new inode gets. */
  get nextNodeid(): bigint {
    return this.#nextNodeid;
  }

  /** The inode with this node id, if known. */
  get(nodeid: bigint): Inode | undefined {
    return this.#byNodeid.get(nodeid);
  }

  /** The inode of the host file with this identity, if known. */
  find(dev: number, ino: bigint): Inode | undefined {
    return this.#byIdentity.get(identityKey(dev, ino));
  }

  /** Every inode, the root first. */
  values(): IterableIterator<Inode> {
    return this.#byNodeid.values();
  }

  /**
   * The inode of the host file O_PATH fd `fd` holds (`st` its status): the
   * known one (`fd` is closed), or a new one with no lookup references and
   * no location that owns `fd`. `fd` is consumed even when this throws
   * (FsError EOPNOTSUPP: no file handle in "mandatory" mode).
   */
  adopt(fd: number, st: StatxResult): Inode {
    const known = this.find(st.dev, st.ino);
    const handle = known?.fileHandle;
    if (known !== undefined && (handle == null || this.#fileHandles!.sameFile(handle, fd))) {
      closeQuietly(fd);
      return known;
    }
    // A known inode with another handle: its file was deleted and the inode
    // number reused. It keeps its node id (its uses answer ESTALE) but is no
    // longer found by identity.
    if (known !== undefined) this.#byIdentity.delete(identityKey(st.dev, st.ino));
    try {
      return this.insert(fd, st, null);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  }

  /**
   * Adds the host file `fd` holds (the table owns `fd` from now on unless
   * this throws) with no lookup references yet, at `location`. With `nodeid`
   * (a restore) that id is used; it must be free. The caller must have
   * checked that the identity is not in the table.
   */
  insert(fd: number, st: StatxResult, location: InodeLocation | null, nodeid?: bigint): Inode {
    const id = nodeid ?? this.#nextNodeid;
    if (this.#byNodeid.has(id)) throw new Error(`node id ${id} is already in use`);
    const key = identityKey(st.dev, st.ino);
    if (this.#byIdentity.has(key)) {
      throw new Error(`host file ${st.dev}:${st.ino} is already in the table`);
    }
    const type = st.mode & S_IFMT;
    const handle = this.#fileHandles?.handleOf(fd, type) ?? null;
    const inode = new Inode(id, handle === null ? fd : -1, st.dev, st.ino, type);
    if (handle !== null) inode.useHandle(handle, this.#fileHandles!, fd);
    this.#byNodeid.set(id, inode);
    this.#byIdentity.set(key, inode);
    if (id >= this.#nextNodeid) this.#nextNodeid = id + 1n;
    this.setLocation(inode, location);
    return inode;
  }

  /**
   * Adds a placeholder for an inode a restore could not find: it keeps its
   * node id, type, inode number and lookups so the guest's references stay
   * valid (and a later snapshot still describes it), holds no fd, is not
   * indexed by identity, and every use answers EIO (`reason` says why).
   */
  insertBroken(nodeid: bigint, type: number, ino: bigint, lookups: bigint, reason: string): Inode {
    if (this.#byNodeid.has(nodeid)) throw new Error(`node id ${nodeid} is already in use`);
    const inode = new Inode(nodeid, -1, -1, ino, type & S_IFMT);
    inode.lookups = lookups;
    inode.broken = reason;
    this.#byNodeid.set(nodeid, inode);
    if (nodeid >= this.#nextNodeid) this.#nextNodeid = nodeid + 1n;
    return inode;
  }

  /** Makes sure new node ids start at `nodeid` or later (after a restore). */
  reserveNodeids(nodeid: bigint): void {
    if (nodeid > this.#nextNodeid) this.#nextNodeid = nodeid;
  }

  /** Adds `count` guest lookup references. */
  addLookups(inode: Inode, count: bigint = 1n): void {
    inode.lookups += count;
  }

  /**
   * Removes up to `count` lookup references (FORGET) and drops the inode when
   * nothing holds it any more (a count of 0 only checks that). Unknown node
   * ids and the root are ignored.
   */
  forget(nodeid: bigint, count: bigint): void {
    const inode = this.#byNodeid.get(nodeid);
    if (inode === undefined || inode === this.root || count < 0n) return;
    inode.lookups = inode.lookups > count ? inode.lookups - count : 0n;
    this.#dropIfUnused(inode);
  }

  /** Takes an internal reference (an open handle). */
  hold(inode: Inode): void {
    inode.refs++;
  }

  /** Releases an internal reference; the inode may be dropped. */
  release(inode: Inode): void {
    if (inode.refs > 0) inode.refs--;
    this.#dropIfUnused(inode);
  }

  /**
   * Records where `inode` can be found now (null: nowhere known). A location
   * that would make the inode its own ancestor (possible only when the host
   * moved directories behind our back) is ignored, so that the parent chains
   * always end at the root or at an inode without a location.
   */
  setLocation(inode: Inode, location: InodeLocation | null): void {
    if (inode === this.root) return;
    if (location !== null) {
      for (let up: Inode | undefined = location.parent; up; up = up.location?.parent) {
        if (up === inode) return;
      }
      location.parent.refs++;
    }
    const previous = inode.location;
    if (previous !== null) unindexLocation(inode, previous);
    inode.location = location === null ? null : { parent: location.parent, name: location.name };
    if (location !== null) {
      // Two names of one hash: the later one is indexed (the index is only a hint).
      (location.parent.locatedHere ??= new Map()).set(nameHash(location.name), inode);
    }
    if (previous !== null) this.release(previous.parent);
  }

  /**
   * The inode whose recorded location is exactly `name` in `parent`, if any:
   * a hint for LOOKUP, which must still check the host (the file behind the
   * name may have been renamed or replaced there).
   */
  locatedAt(parent: Inode, name: Uint8Array): Inode | undefined {
    const inode = parent.locatedHere?.get(nameHash(name));
    const location = inode?.location;
    return location != null && location.parent === parent && sameName(location.name, name)
      ? inode
      : undefined;
  }

  /** Forgets the location of `inode` if it is exactly `name` in `parent` (the name went away). */
  clearLocationIf(inode: Inode, parent: Inode, name: Uint8Array): void {
    const location = inode.location;
    if (location !== null && location.parent === parent && sameName(location.name, name)) {
      this.setLocation(inode, null);
    }
  }

  /** Drops every inode but the root, closing their fds (DESTROY, a failed restore). */
  clear(): void {
    for (const inode of this.#byNodeid.values()) {
      if (inode !== this.root) this.#remove(inode);
    }
    this.root.refs = 0;
  }

  /** {@linkcode clear}, then closes the root's fd and the file handle mount fds, for good. */
  close(): void {
    this.clear();
    this.root.closeFd();
    this.#fileHandles?.close();
  }

  #dropIfUnused(start: Inode): void {
    // Dropping an inode releases its parent, which may then go too: iterate.
    let inode: Inode | undefined = start;
    while (inode !== undefined) {
      if (inode === this.root || inode.lookups > 0n || inode.refs > 0) return;
      if (this.#byNodeid.get(inode.nodeid) !== inode) return;
      const parent: Inode | undefined = inode.location?.parent;
      this.#remove(inode);
      if (parent === undefined) return;
      parent.refs--;
      inode = parent;
    }
  }

  #remove(inode: Inode): void {
    this.#byNodeid.delete(inode.nodeid);
    if (inode.broken === null) {
      const key = identityKey(inode.dev, inode.ino);
      if (this.#byIdentity.get(key) === inode) this.#byIdentity.delete(key);
    }
    inode.closeFd();
    if (inode.location !== null) unindexLocation(inode, inode.location);
    inode.location = null;
  }
}

/** Takes `inode` out of the name index of the directory of `location` (where it is indexed). */
function unindexLocation(inode: Inode, location: InodeLocation): void {
  const here = location.parent.locatedHere;
  if (here === null) return;
  const key = nameHash(location.name);
  if (here.get(key) === inode) here.delete(key);
}
