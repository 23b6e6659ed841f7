/**
 * Migration of the passthrough filesystem's state (DEVICE_STATE): what the
 * guest holds — node ids with their lookup counts, open file handles, the
 * negotiated INIT — as plain JSON-able data, and its restore on a fresh
 * filesystem over the same shared directory.
 *
 * Inodes travel as locations (parent node id + name bytes), never as host
 * fds or inode numbers: the destination finds each file again by walking
 * from the root one component at a time (openat2 with RESOLVE_BENEATH and
 * RESOLVE_NO_SYMLINKS), checks that it is still the same file (type and
 * inode number), and keeps the guest's node ids and handle numbers. An inode
 * whose name is gone (unlinked while the guest held it) is recorded without
 * a location and cannot be restored by path. With `--migration-mode
 * file-handles` a record also carries the file's handle, which the
 * destination tries first (see handle_migration.ts); older states without
 * handles load as before, and a reader that ignores them uses the paths.
 *
 * @module
 */

import { closeQuietly, FILE_HANDLE_HEADER_SIZE, MAX_HANDLE_SZ } from "../../../../ffi/mod.ts";
import { FUSE_ROOT_ID } from "../fuse/fuse_abi.ts";
import { openComponent, statFd } from "./confined_open.ts";
import { FsRestoreError } from "./fs_errors.ts";
import { classifyComponent, fromHex, printableName, toHex } from "./fs_names.ts";
import type { FsInitResult, MigrationOnError } from "./fs_types.ts";
import type { HandleTable } from "./handle_table.ts";
import type { Inode, InodeTable } from "./inode_table.ts";

/** The snapshot format version this module writes and reads. */
export const FS_SNAPSHOT_VERSION = 1;

/** One inode (never the root) as it travels. Numbers that may pass 2^53 are decimal strings. */
export interface FsInodeRecord {
  /** Node id, decimal. */
  nodeid: string;
  /** Node id of the directory holding `name` ("1" = the root); null when no name is known. */
  parent: string | null;
  /** The name's bytes as lower-case hex; null when no name is known (unlinked). */
  name: string | null;
  /** Guest lookup references, decimal (may be "0" for a directory kept as a parent). */
  lookups: string;
  /** File type bits (S_IFMT part of st_mode). */
  type: number;
  /** Host inode number, decimal: the destination checks it found the same file. */
  ino: string;
  /** Set when the inode was already unusable on the source (after an earlier failed restore). */
  broken?: string;
  /** The file's handle (a whole `struct file_handle`) as lower-case hex, in file-handles mode. */
  handle?: string;
}

/** One open file or directory handle as it travels. */
export interface FsHandleRecord {
  /** Handle number, decimal. */
  fh: string;
  /** Node id of its inode, decimal. */
  nodeid: string;
  /** Host open flags (O_*) it was opened with. */
  flags: number;
  /** True for a directory handle. */
  isDir: boolean;
  /** Set when the handle was already unusable on the source. */
  broken?: string;
}

/** The whole migrated state of a {@linkcode PassthroughFs}: plain JSON. */
export interface FsSnapshot {
  /** {@linkcode FS_SNAPSHOT_VERSION}. */
  version: number;
  /** The negotiated INIT, or null before INIT. */
  init: FsInitResult | null;
  /** First node id not yet handed out, decimal. */
  nextNodeid: string;
  /** First handle number not yet handed out, decimal. */
  nextFh: string;
  /** Every inode but the root, each after its parent. */
  inodes: FsInodeRecord[];
  /** Every open handle. */
  handles: FsHandleRecord[];
}

/**
 * Captures the state of the tables. Read-only: the source keeps running if
 * migration fails. With `handleOf` (file-handles mode) each inode it gives
 * a handle for carries it.
 */
export function takeSnapshot(
  inodes: InodeTable,
  handles: HandleTable,
  init: FsInitResult | null,
  handleOf?: (inode: Inode) => Uint8Array | null,
): FsSnapshot {
  const depth = new Map<Inode, number>([[inodes.root, 0]]);
  const depthOf = (inode: Inode): number => {
    const chain: Inode[] = [];
    let at: Inode | undefined = inode;
    while (at !== undefined && !depth.has(at)) {
      chain.push(at);
      at = at.location?.parent;
    }
    let d = at === undefined ? 0 : depth.get(at)!;
    for (let i = chain.length - 1; i >= 0; i--) depth.set(chain[i], ++d);
    return depth.get(inode)!;
  };
  const list = [...inodes.values()].filter((inode) => inode !== inodes.root);
  list.sort((a, b) => depthOf(a) - depthOf(b));
  return {
    version: FS_SNAPSHOT_VERSION,
    init: init === null ? null : { ...init },
    nextNodeid: inodes.nextNodeid.toString(),
    nextFh: handles.nextFh.toString(),
    inodes: list.map((inode) => {
      const record: FsInodeRecord = {
        nodeid: inode.nodeid.toString(),
        parent: inode.location ? inode.location.parent.nodeid.toString() : null,
        name: inode.location ? toHex(inode.location.name) : null,
        lookups: inode.lookups.toString(),
        type: inode.type,
        ino: inode.ino.toString(),
      };
      if (inode.broken !== null) record.broken = inode.broken;
      const handle = handleOf?.(inode);
      if (handle) record.handle = toHex(handle);
      return record;
    }),
    handles: [...handles.values()].map((handle) => {
      const record: FsHandleRecord = {
        fh: handle.fh.toString(),
        nodeid: handle.inode.nodeid.toString(),
        flags: handle.flags,
        isDir: handle.isDir,
      };
      if (handle.broken !== null) record.broken = handle.broken;
      return record;
    }),
  };
}

// ---------------------------------------------------------------------------
// Validation of incoming data (it crossed a process boundary: trust nothing).

function malformed(what: string): never {
  throw new FsRestoreError(`malformed filesystem snapshot: ${what}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function decimal(value: unknown, what: string): bigint {
  if (typeof value !== "string" || !/^[0-9]{1,20}$/.test(value)) {
    malformed(`${what} is not a decimal string`);
  }
  const number = BigInt(value);
  if (number >= 1n << 64n) malformed(`${what} does not fit in 64 bits`);
  return number;
}

function u32(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= 2 ** 32) {
    malformed(`${what} is not a 32-bit unsigned integer`);
  }
  return value;
}

function optionalText(value: unknown, what: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") malformed(`${what} is not a string`);
  return value;
}

/** A checked inode record with its numbers parsed. */
interface InodeEntry {
  nodeid: bigint;
  parent: bigint | null;
  name: Uint8Array | null;
  lookups: bigint;
  type: number;
  ino: bigint;
  broken?: string;
  handle?: Uint8Array;
}

/** A checked handle record with its numbers parsed. */
interface HandleEntry {
  fh: bigint;
  nodeid: bigint;
  flags: number;
  isDir: boolean;
  broken?: string;
}

interface ParsedSnapshot {
  init: FsInitResult | null;
  nextNodeid: bigint;
  nextFh: bigint;
  inodes: InodeEntry[];
  handles: HandleEntry[];
}

const INIT_FIELDS = [
  "flags",
  "flags2",
  "maxWrite",
  "maxReadahead",
  "maxPages",
  "timeGran",
  "minor",
];

function parseInit(value: unknown): FsInitResult | null {
  if (value === null) return null;
  if (!isRecord(value)) malformed("init is neither null nor an object");
  const out: Record<string, number> = {};
  for (const field of INIT_FIELDS) out[field] = u32(value[field], `init.${field}`);
  return out as unknown as FsInitResult;
}

function parseInode(value: unknown, index: number): InodeEntry {
  const what = `inodes[${index}]`;
  if (!isRecord(value)) malformed(`${what} is not an object`);
  const nodeid = decimal(value.nodeid, `${what}.nodeid`);
  if (nodeid <= FUSE_ROOT_ID) malformed(`${what}.nodeid ${nodeid} is reserved`);
  let parent: bigint | null = null;
  let name: Uint8Array | null = null;
  if (value.parent !== null || value.name !== null) {
    parent = decimal(value.parent, `${what}.parent`);
    if (typeof value.name !== "string") malformed(`${what}.name is not a string`);
    name = fromHex(value.name) ?? malformed(`${what}.name is not hex`);
    let kind;
    try {
      kind = classifyComponent(name);
    } catch {
      kind = undefined;
    }
    // A name that is not one plain component could walk out of the shared directory.
    if (kind !== "name") malformed(`${what}.name is not a single file name`);
  }
  const entry: InodeEntry = {
    nodeid,
    parent,
    name,
    lookups: decimal(value.lookups, `${what}.lookups`),
    type: u32(value.type, `${what}.type`),
    ino: decimal(value.ino, `${what}.ino`),
  };
  const broken = optionalText(value.broken, `${what}.broken`);
  if (broken !== undefined) entry.broken = broken;
  const handle = optionalText(value.handle, `${what}.handle`);
  if (handle !== undefined) {
    const bytes = fromHex(handle);
    if (
      bytes === undefined || bytes.length < FILE_HANDLE_HEADER_SIZE ||
      bytes.length > FILE_HANDLE_HEADER_SIZE + MAX_HANDLE_SZ
    ) {
      malformed(`${what}.handle is not a file handle in hex`);
    }
    entry.handle = bytes;
  }
  return entry;
}

function parseHandle(value: unknown, index: number): HandleEntry {
  const what = `handles[${index}]`;
  if (!isRecord(value)) malformed(`${what} is not an object`);
  if (typeof value.isDir !== "boolean") malformed(`${what}.isDir is not a boolean`);
  const entry: HandleEntry = {
    fh: decimal(value.fh, `${what}.fh`),
    nodeid: decimal(value.nodeid, `${what}.nodeid`),
    flags: u32(value.flags, `${what}.flags`),
    isDir: value.isDir,
  };
  const broken = optionalText(value.broken, `${what}.broken`);
  if (broken !== undefined) entry.broken = broken;
  return entry;
}

/** Checks untrusted snapshot data; throws FsRestoreError saying what is wrong. */
function parseSnapshot(value: unknown): ParsedSnapshot {
  if (!isRecord(value)) malformed("not an object");
  if (value.version !== FS_SNAPSHOT_VERSION) {
    malformed(`version ${String(value.version)}, this vhostd reads ${FS_SNAPSHOT_VERSION}`);
  }
  if (!Array.isArray(value.inodes)) malformed("inodes is not an array");
  if (!Array.isArray(value.handles)) malformed("handles is not an array");
  const inodes = value.inodes.map(parseInode);
  const handles = value.handles.map(parseHandle);
  const nodeids = new Set<bigint>();
  for (const inode of inodes) {
    if (nodeids.has(inode.nodeid)) malformed(`node id ${inode.nodeid} appears twice`);
    nodeids.add(inode.nodeid);
  }
  for (const inode of inodes) {
    if (inode.parent !== null && inode.parent !== FUSE_ROOT_ID && !nodeids.has(inode.parent)) {
      malformed(`inode ${inode.nodeid} has unknown parent ${inode.parent}`);
    }
  }
  const fhs = new Set<bigint>();
  for (const handle of handles) {
    if (fhs.has(handle.fh)) malformed(`file handle ${handle.fh} appears twice`);
    fhs.add(handle.fh);
    if (handle.nodeid !== FUSE_ROOT_ID && !nodeids.has(handle.nodeid)) {
      malformed(`file handle ${handle.fh} refers to unknown inode ${handle.nodeid}`);
    }
  }
  return {
    init: parseInit(value.init),
    nextNodeid: decimal(value.nextNodeid, "nextNodeid"),
    nextFh: decimal(value.nextFh, "nextFh"),
    inodes,
    handles,
  };
}

// ---------------------------------------------------------------------------
// Restore.

/** What a restore needs from the filesystem besides its tables. */
export interface RestoreTarget {
  /** The inode table (holding only the root). */
  inodes: InodeTable;
  /** The handle table (empty). */
  handles: HandleTable;
  /** Abort at the first failure, or mark the inode/handle broken and go on. */
  onError: MigrationOnError;
  /** Opens a host fd for a handle on `inode` with saved `flags`, as OPEN/OPENDIR would. */
  reopen(inode: Inode, flags: number, isDir: boolean): number;
  /**
   * Opens a record's file handle as an O_PATH fd, only for files inside the
   * shared directory (throws otherwise); absent: handles are not used.
   */
  openHandle?(handle: Uint8Array): number;
}

/** The outcome of a restore: the negotiated INIT, and what could not be restored. */
export interface RestoreOutcome {
  /** The INIT negotiated on the source, or null. */
  init: FsInitResult | null;
  /** One line per inode or handle that could not be restored (guest-error mode). */
  errors: string[];
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Re-creates the source's inodes and handles in `target` (which must hold
 * only the root), keeping node ids and handle numbers. With `onError`
 * "abort", throws FsRestoreError at the first failure, leaving the caller to
 * clear the tables; with "guest-error", failed inodes and handles become
 * broken placeholders (EIO for the guest) and are listed in `errors`. A
 * malformed snapshot always throws.
 */
export function restoreSnapshot(target: RestoreTarget, data: unknown): RestoreOutcome {
  const snapshot = parseSnapshot(data);
  const { inodes, handles } = target;
  const errors: string[] = [];
  const fail = (message: string): void => {
    if (target.onError === "abort") throw new FsRestoreError(message);
    errors.push(message);
  };

  const records = new Map(snapshot.inodes.map((record) => [record.nodeid, record]));
  const pathOf = (record: InodeEntry): string => {
    const parts: string[] = [];
    for (let at: InodeEntry | undefined = record; at && parts.length <= records.size;) {
      if (at.name === null) return `<unlinked inode ${at.nodeid}>/${parts.reverse().join("/")}`;
      parts.push(printableName(at.name));
      at = at.parent === FUSE_ROOT_ID ? undefined : records.get(at.parent!);
    }
    return parts.reverse().join("/");
  };

  /**
   * The inode of `record` opened by its file handle, at its recorded name in
   * `parent` when there is one; undefined when there is no handle, or it
   * does not open to the same file inside the share (the path is tried).
   */
  const restoreByHandle = (record: InodeEntry, parent: Inode | undefined): Inode | undefined => {
    if (record.handle === undefined || target.openHandle === undefined) return undefined;
    let fd = -1;
    try {
      fd = target.openHandle(record.handle);
      const st = statFd(fd);
      const same = (st.mode & 0o170000) === record.type && st.ino === record.ino &&
        inodes.find(st.dev, st.ino) === undefined;
      if (!same) {
        closeQuietly(fd);
        return undefined;
      }
      const location = parent !== undefined && parent.broken === null && record.name !== null
        ? { parent, name: record.name }
        : null;
      const inode = inodes.insert(fd, st, location, record.nodeid);
      inode.lookups = record.lookups;
      return inode;
    } catch {
      closeQuietly(fd);
      return undefined;
    }
  };

  const visiting = new Set<bigint>();
  const restoreInode = (record: InodeEntry): Inode => {
    const done = inodes.get(record.nodeid);
    if (done !== undefined) return done;
    const broken = (why: string): Inode => {
      fail(why);
      return inodes.insertBroken(record.nodeid, record.type, record.ino, record.lookups, why);
    };
    if (record.broken !== undefined) {
      // Already unusable on the source (and reported there): stays so, silently.
      return inodes.insertBroken(
        record.nodeid,
        record.type,
        record.ino,
        record.lookups,
        record.broken,
      );
    }
    let parent: Inode | undefined;
    if (record.parent !== null && record.name !== null) {
      if (visiting.has(record.nodeid)) {
        return broken(`inode ${record.nodeid}: its parents form a loop`);
      }
      visiting.add(record.nodeid);
      const parentRecord = records.get(record.parent);
      parent = record.parent === FUSE_ROOT_ID ? inodes.root : restoreInode(parentRecord!);
      visiting.delete(record.nodeid);
      // A loop in the parents may have settled this record already.
      const settled = inodes.get(record.nodeid);
      if (settled !== undefined) return settled;
    }
    const byHandle = restoreByHandle(record, parent);
    if (byHandle !== undefined) return byHandle;
    if (parent === undefined || record.name === null) {
      return broken(
        `inode ${record.nodeid}: its name was removed on the source while the guest held it ` +
          `(an unlinked file), so it cannot be found by path`,
      );
    }
    const path = pathOf(record);
    if (parent.broken !== null) {
      return broken(`inode ${record.nodeid} ("${path}"): its directory could not be restored`);
    }
    let fd = -1;
    try {
      fd = openComponent(parent.fd, record.name);
      const st = statFd(fd);
      const type = st.mode & 0o170000;
      let problem: string | undefined;
      if (type !== record.type) {
        problem = `is now of type ${type.toString(8)}, was ${record.type.toString(8)}`;
      } else if (st.ino !== record.ino) {
        problem = `is now a different file (inode number ${st.ino}, was ${record.ino})`;
      } else {
        const other = inodes.find(st.dev, st.ino);
        if (other !== undefined) problem = `is the same file as inode ${other.nodeid}`;
      }
      if (problem !== undefined) {
        closeQuietly(fd);
        return broken(`inode ${record.nodeid} ("${path}") ${problem}`);
      }
      const inode = inodes.insert(fd, st, { parent, name: record.name }, record.nodeid);
      inode.lookups = record.lookups;
      return inode;
    } catch (error) {
      if (error instanceof FsRestoreError) throw error;
      closeQuietly(fd);
      return broken(`inode ${record.nodeid} ("${path}") cannot be found: ${reason(error)}`);
    }
  };
  for (const record of snapshot.inodes) restoreInode(record);

  for (const record of snapshot.handles) {
    const inode = inodes.get(record.nodeid) ?? inodes.root;
    inodes.hold(inode);
    if (record.broken !== undefined) {
      handles.add(-1, inode, record.flags, record.isDir, record.fh, record.broken);
      continue;
    }
    const what = `file handle ${record.fh} on inode ${record.nodeid}`;
    if (inode.broken !== null) {
      const why = `${what} cannot be reopened: the inode was not restored`;
      fail(why);
      handles.add(-1, inode, record.flags, record.isDir, record.fh, why);
      continue;
    }
    let fd: number;
    try {
      fd = target.reopen(inode, record.flags, record.isDir);
    } catch (error) {
      const why = `${what} cannot be reopened: ${reason(error)}`;
      fail(why);
      handles.add(-1, inode, record.flags, record.isDir, record.fh, why);
      continue;
    }
    handles.add(fd, inode, record.flags, record.isDir, record.fh);
  }

  inodes.reserveNodeids(snapshot.nextNodeid);
  handles.reserveHandles(snapshot.nextFh);
  // Inodes that only a vanished child needed hold nothing now.
  for (const record of snapshot.inodes) inodes.forget(record.nodeid, 0n);
  return { init: snapshot.init, errors };
}
