/**
 * Turning a name in a directory into the guest's entry for it: the inode of
 * the host file found there (a known one, or a new one), one more lookup
 * reference on it, the name recorded as where it is found now, and the
 * attributes with the share's cache timeouts.
 *
 * @module
 */

import {
  AT_SYMLINK_NOFOLLOW,
  closeQuietly,
  statxIsFile,
  type StatxResult,
  statxViewOrErrno,
} from "../../../../ffi/mod.ts";
import { writeU64 } from "../../../../ffi/struct.ts";
import { FUSE_ENTRY_OUT } from "../fuse/fuse_layouts.ts";
import { openComponentOrErrno, statEntryQuietly, statFd } from "./confined_open.ts";
import { attrFromStatx, splitTimeout, writeAttrFromStat, writeAttrFromStatx } from "./fs_attr.ts";
import { plainFsError } from "./fs_errors.ts";
import { sameName } from "./fs_names.ts";
import type { EntryResult } from "./fs_types.ts";
import type { Inode, InodeTable } from "./inode_table.ts";
import { keepName } from "./kept_names.ts";

/** Where fuse_entry_out's fields are. */
const ENTRY_OUT = FUSE_ENTRY_OUT.offsets;

/** Entries of the inodes of one table (LOOKUP, READDIRPLUS, and every creation). */
export class EntryLookup {
  readonly #inodes: InodeTable;
  readonly #entryTimeoutSec: number;
  readonly #attrTimeoutSec: number;
  /** The timeouts as fuse_entry_out's seconds and nanoseconds. */
  readonly #entryValid: { sec: number; nsec: number };
  readonly #attrValid: { sec: number; nsec: number };

  /** Entries of `inodes`' inodes, valid for the given timeouts (from the cache policy). */
  constructor(inodes: InodeTable, entryTimeoutSec: number, attrTimeoutSec: number) {
    this.#inodes = inodes;
    this.#entryTimeoutSec = entryTimeoutSec;
    this.#attrTimeoutSec = attrTimeoutSec;
    this.#entryValid = splitTimeout(entryTimeoutSec);
    this.#attrValid = splitTimeout(attrTimeoutSec);
  }

  /** The entry of `inode`, whose status is `st`, with the cache policy's timeouts. */
  entry(inode: Inode, st: StatxResult): EntryResult {
    return {
      nodeid: inode.nodeid,
      generation: 0n,
      attr: attrFromStatx(st),
      entryTimeoutSec: this.#entryTimeoutSec,
      attrTimeoutSec: this.#attrTimeoutSec,
    };
  }

  /** Looks up one plain name in `dir`, adding a lookup reference. */
  lookupIn(dir: Inode, name: Uint8Array): EntryResult {
    // A name looked up before most likely still names the same file: one statx
    // of the name answers. A new name is opened right away (no statx first).
    const hinted = this.#inodes.locatedAt(dir, name);
    if (hinted !== undefined) {
      const known = this.#knownEntry(dir, name, hinted);
      if (known !== undefined) return known;
    }
    const fd = openComponentOrErrno(dir.fd, name);
    if (fd < 0) throw plainFsError(-fd);
    return this.adopt(dir, name, fd);
  }

  /**
   * The entry of `name` in `dir` when a statx of the name (never following a
   * link, the name is one plain component) finds the host file of `hinted`,
   * the inode last recorded there, and that inode holds its own fd: the fd
   * keeps the file alive, so no other file can have its (dev, ino), and no
   * fd needs opening. Undefined (the caller opens the name) when the name
   * now names another file, the inode is known by file handle (whose
   * identity needs an open to compare) or broken, or the statx fails (the
   * open reports the error).
   */
  #knownEntry(dir: Inode, name: Uint8Array, hinted: Inode): EntryResult | undefined {
    if (!answersByStatx(hinted)) return undefined;
    const st = statEntryQuietly(dir.fd, name);
    if (st === undefined || st.ino !== hinted.ino || st.dev !== hinted.dev) return undefined;
    this.#inodes.addLookups(hinted);
    return this.entry(hinted, st);
  }

  /**
   * LOOKUP's (and each READDIRPLUS entry's) common case written straight
   * into a reply: when `name` in `dir` still names the host file of the
   * inode last recorded there (as #knownEntry decides), adds a lookup
   * reference and writes its fuse_entry_out at `base` of `target` from the
   * raw statx, with no status, attribute or entry object in between. False (nothing written, nothing
   * changed) when it does not: the caller takes {@linkcode lookupIn}.
   */
  lookupKnownInto(dir: Inode, name: Uint8Array, target: DataView, base: number): boolean {
    const hinted = this.#inodes.locatedAt(dir, name);
    if (hinted === undefined || !answersByStatx(hinted)) return false;
    let statx;
    try {
      statx = statxViewOrErrno(dir.fd, name, AT_SYMLINK_NOFOLLOW);
    } catch {
      return false; // a name the path scratch refuses: lookupIn reports it
    }
    if (typeof statx === "number" || !statxIsFile(statx, hinted.dev, hinted.ino)) return false;
    this.#inodes.addLookups(hinted);
    this.#writeEntryHead(hinted, target, base);
    writeAttrFromStatx(statx, target, base + ENTRY_OUT.attr);
    return true;
  }

  /**
   * Writes the fuse_entry_out of `inode`, whose status is `st`, at `base`
   * of `target`: what encodeEntryOut(entryOut(entry(inode, st))) writes,
   * with no entry or attribute object.
   */
  writeEntryOut(inode: Inode, st: StatxResult, target: DataView, base: number): void {
    this.#writeEntryHead(inode, target, base);
    writeAttrFromStat(st, target, base + ENTRY_OUT.attr);
  }

  /** fuse_entry_out's fields before the attributes. */
  #writeEntryHead(inode: Inode, target: DataView, base: number): void {
    target.setBigUint64(base + ENTRY_OUT.nodeid, inode.nodeid, true);
    target.setBigUint64(base + ENTRY_OUT.generation, 0n, true);
    writeU64(target, base + ENTRY_OUT.entryValid, this.#entryValid.sec);
    writeU64(target, base + ENTRY_OUT.attrValid, this.#attrValid.sec);
    target.setUint32(base + ENTRY_OUT.entryValidNsec, this.#entryValid.nsec, true);
    target.setUint32(base + ENTRY_OUT.attrValidNsec, this.#attrValid.nsec, true);
  }

  /**
   * Turns an O_PATH fd of `name` in `dir` (owned from now on) into an entry:
   * the known inode of that host file, or a new one; adds a lookup reference
   * and records `name` as where the inode is found now. `fresh` is the fd's
   * status when the caller has it already (no statx then).
   */
  adopt(dir: Inode, name: Uint8Array, fd: number, fresh?: StatxResult): EntryResult {
    let st;
    try {
      st = fresh ?? statFd(fd);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
    return this.entry(this.adoptInode(dir, name, fd, st), st);
  }

  /**
   * {@linkcode adopt} without the entry: the inode of the host file O_PATH
   * fd `fd` of `name` in `dir` holds (`st` its status), with one more
   * lookup reference and `name` recorded. `fd` is consumed even when this
   * throws.
   */
  adoptInode(dir: Inode, name: Uint8Array, fd: number, st: StatxResult): Inode {
    const inode = this.#inodes.adopt(fd, st);
    this.#inodes.addLookups(inode);
    // Looked up again where it was: nothing to record (and no copy of the name to make).
    const known = inode.location;
    if (known === null || known.parent !== dir || !sameName(known.name, name)) {
      this.#inodes.setLocation(inode, { parent: dir, name: keepName(name) });
    }
    return inode;
  }
}

/**
 * Whether a statx of the name can tell that `hinted` is still there: it
 * holds its own fd (which keeps its file, so its (dev, ino) is nobody
 * else's) and is not broken.
 */
function answersByStatx(hinted: Inode): boolean {
  return hinted.fileHandle === null && hinted.broken === null;
}
