/**
 * READDIR and READDIRPLUS: one reply page of directory entries from a
 * directory fd, resuming where the guest says.
 *
 * The guest continues a listing by sending the `off` of the last entry it
 * received. The cursor remembers that position and the entries already read
 * from the host but not yet sent, so consecutive pages cost no seek and no
 * re-read; any other offset (a rewind, a guest that seeks, a restored
 * handle) is an lseek of the directory fd to that cookie.
 *
 * @module
 */

import {
  type Dirent,
  ENOENT,
  getdents64,
  lseek64,
  parseDirents,
  SEEK_SET,
} from "../../../../ffi/mod.ts";
import {
  direntPlusSize,
  DirentPlusWriter,
  DirentWriter,
  type EntryOutFiller,
} from "../fuse/fuse_reply.ts";
import { entryOut, placeholderAttr } from "./fs_attr.ts";
import { errnoOf } from "./fs_errors.ts";
import { isDotName } from "./fs_names.ts";
import type { EntryResult } from "./fs_types.ts";
import type { DirCursor } from "./handle_table.ts";

/** Bytes asked of getdents64 at a time (a few hundred typical entries). */
const GETDENTS_BUFFER_SIZE = 32 * 1024;
/** The largest reply page built, whatever `size` the guest asks for. */
const MAX_PAGE_SIZE = 1024 * 1024;

/**
 * Where pages are built, reused (grown to the largest page asked for so
 * far): a fresh buffer per page, and a copy of it, were two ArrayBuffers
 * per request. The writers zero every record they add, and only the bytes
 * written are handed on.
 */
let pageBuffer = new Uint8Array(0);

function pageOf(capacity: number): Uint8Array {
  if (pageBuffer.byteLength < capacity) pageBuffer = new Uint8Array(capacity);
  return pageBuffer.subarray(0, capacity);
}

/**
 * How READDIRPLUS looks entries up, adding one guest lookup reference: in
 * place from one statx when the name's inode is known (`fillEntryOut`),
 * else as an entry object; and takes a reference back.
 */
export interface EntryLookup extends EntryOutFiller {
  /** Looks `name` up in the directory being listed; adds one lookup reference. */
  lookup(name: Uint8Array): EntryResult;
  /** Takes back the reference of an entry that could not be sent after all. */
  forgetOne(nodeid: bigint): void;
}

type AddOutcome = "added" | "full" | "skipped";

/**
 * Builds one READDIR (or, with `plus`, READDIRPLUS) reply payload of at most
 * `size` bytes, starting at directory offset `offset` (0 = the beginning).
 * Entries that do not fit stay in the cursor for the next request. With
 * `plus`, every entry sent except "." and ".." carries one new lookup
 * reference; those two are sent with node id 0 (the guest skips them), and
 * an entry that vanished before it could be looked up is left out.
 * The payload is a view of a buffer the next call reuses: copy it out (the
 * request handler does, into the reply) before listing again.
 */
export function readDirectoryPage(
  fd: number,
  cursor: DirCursor,
  offset: bigint,
  size: number,
  plus: EntryLookup | null,
): Uint8Array {
  if (offset !== cursor.position) {
    lseek64(fd, offset, SEEK_SET);
    cursor.position = offset;
    cursor.entries = [];
    cursor.index = 0;
  }
  const capacity = Math.max(0, Math.min(size, MAX_PAGE_SIZE));
  const page = pageOf(capacity);
  const writer = plus ? new DirentPlusWriter(page) : new DirentWriter(page);
  for (;;) {
    if (cursor.index >= cursor.entries.length) {
      let entries: Dirent[];
      try {
        cursor.buffer ??= new Uint8Array(GETDENTS_BUFFER_SIZE);
        const n = getdents64(fd, cursor.buffer);
        // Views of the cursor's buffer: it is filled again only once every entry was used.
        entries = parseDirents(cursor.buffer, n, true);
      } catch (error) {
        // Send what we have; the next request (from the same position) reports the failure.
        if (writer.count > 0) break;
        throw error;
      }
      if (entries.length === 0) break;
      cursor.entries = entries;
      cursor.index = 0;
    }
    const entry = cursor.entries[cursor.index];
    const outcome = plus !== null && writer instanceof DirentPlusWriter
      ? addPlusEntry(writer, entry, plus)
      : addEntry(writer as DirentWriter, entry);
    if (outcome === "full") break;
    cursor.index++;
    cursor.position = entry.off;
  }
  return writer.bytes();
}

function addEntry(writer: DirentWriter, entry: Dirent): AddOutcome {
  try {
    return writer.add(entry) ? "added" : "full";
  } catch {
    // A host name FUSE cannot carry (longer than 255 bytes): leave it out.
    return "skipped";
  }
}

function addPlusEntry(writer: DirentPlusWriter, entry: Dirent, plus: EntryLookup): AddOutcome {
  // A host Dirent has fuse_dirent's fields: written as it is.
  const dirent = entry;
  // Check the room first: a lookup reference for an entry we then cannot send would leak.
  if (direntPlusSize(entry.name.length) > writer.remaining) return "full";
  if (isDotName(entry.name)) {
    const placeholder = entryOut({
      nodeid: 0n,
      generation: 0n,
      attr: placeholderAttr(entry.ino, entry.type),
      entryTimeoutSec: 0,
      attrTimeoutSec: 0,
    });
    return writer.add(placeholder, dirent) ? "added" : "full";
  }
  // A name whose inode is known is written from one statx, with no entry object;
  // anything else (a new name, a replaced one, a failure) takes lookup below.
  try {
    if (writer.addFilled(dirent, plus)) return "added";
  } catch {
    return "skipped"; // a host name FUSE cannot carry (refused before any lookup)
  }
  let found: EntryResult;
  try {
    found = plus.lookup(entry.name);
  } catch (error) {
    if (errnoOf(error) === ENOENT) return "skipped"; // removed since it was listed
    if (writer.count > 0) return "full"; // the next request retries it and reports
    throw error;
  }
  let outcome: AddOutcome;
  try {
    outcome = writer.add(entryOut(found), dirent) ? "added" : "full";
  } catch {
    outcome = "skipped"; // a host name FUSE cannot carry: leave it out
  }
  if (outcome !== "added") plus.forgetOne(found.nodeid);
  return outcome;
}
