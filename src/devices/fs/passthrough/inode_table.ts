/**
 * The inode table: every host file the guest knows, by our node id and by
 * its host identity (device, inode number), each holding an O_PATH fd that
 * all later access goes through.
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
  /** The O_PATH|O_NOFOLLOW fd all access goes through; -1 for a broken placeholder. */
  fd: number;
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

  /** Creates an inode record; the table assigns node ids. */
  constructor(nodeid: bigint, fd: number, dev: number, ino: bigint, type: number) {
    this.nodeid = nodeid;
    this.fd = fd;
    this.dev = dev;
    this.ino = ino;
    this.type = type;
  }
}

/** Host identity of a file, as a map key. */
function identityKey(dev: number, ino: bigint): string {
  return `${dev}:${ino}`;
}

const S_IFMT = 0o170000;

/** Inodes by node id and by host identity. */
export class InodeTable {
  readonly #byNodeid = new Map<bigint, Inode>();
  readonly #byIdentity = new Map<string, Inode>();
  #nextNodeid = FUSE_ROOT_ID + 1n;
  /** The shared directory itself, node id 1. */
  readonly root: Inode;

  /** Creates a table whose root holds `rootFd` (an O_PATH directory fd) described by `rootStat`. */
  constructor(rootFd: number, rootStat: StatxResult) {
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
   * Adds the host file `fd` holds (the table owns `fd` from now on) with no
   * lookup references yet, at `location`. With `nodeid` (a restore) that id
   * is used; it must be free. The caller must have checked that the identity
   * is not in the table.
   */
  insert(fd: number, st: StatxResult, location: InodeLocation | null, nodeid?: bigint): Inode {
    const id = nodeid ?? this.#nextNodeid;
    if (this.#byNodeid.has(id)) throw new Error(`node id ${id} is already in use`);
    const key = identityKey(st.dev, st.ino);
    if (this.#byIdentity.has(key)) throw new Error(`host file ${key} is already in the table`);
    const inode = new Inode(id, fd, st.dev, st.ino, st.mode & S_IFMT);
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
    inode.location = location === null ? null : { parent: location.parent, name: location.name };
    if (previous !== null) this.release(previous.parent);
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
    closeQuietly(inode.fd);
    inode.fd = -1;
    inode.location = null;
  }
}
