/**
 * A plain view of what vhostd knows of one inode, for tests and state
 * inspection.
 *
 * @module
 */

import type { Inode } from "./inode_table.ts";

/** Diagnostic view of one inode (tests, state inspection). */
export interface InodeInfo {
  /** Guest lookup references. */
  lookups: bigint;
  /** Internal references (open handles, inodes located in this directory). */
  refs: number;
  /** File type bits. */
  type: number;
  /** Host inode number. */
  ino: bigint;
  /** Node id of the directory of its recorded name, or null. */
  parent: bigint | null;
  /** Its recorded name, or null when none is known. */
  name: Uint8Array | null;
  /** Why it is unusable after a restore, or null. */
  broken: string | null;
  /** Known by file handle (its fd is opened on demand), not holding an fd. */
  byHandle: boolean;
}

/** The diagnostic view of `inode` (its name copied). */
export function describeInode(inode: Inode): InodeInfo {
  return {
    lookups: inode.lookups,
    refs: inode.refs,
    type: inode.type,
    ino: inode.ino,
    parent: inode.location?.parent.nodeid ?? null,
    name: inode.location?.name.slice() ?? null,
    broken: inode.broken,
    byHandle: inode.fileHandle !== null,
  };
}
