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
  DIRENT_FIELD,
  direntAt,
  direntNameEnd,
  ENOENT,
  getdents64,
  lseek64,
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
  settle(cursor);
  if (offset !== cursor.position) {
    lseek64(fd, offset, SEEK_SET);
    cursor.position = offset;
    cursor.filled = 0;
    cursor.next = 0;
  }
  const capacity = Math.max(0, Math.min(size, MAX_PAGE_SIZE));
  const page = pageOf(capacity);
  const writer = plus ? new DirentPlusWriter(page) : new DirentWriter(page);
  const buffer = cursor.buffer ??= new Uint8Array(GETDENTS_BUFFER_SIZE);
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  for (;;) {
    let at = cursor.next;
    let nameEnd: number;
    try {
      if (at >= cursor.filled) {
        // Read on only once every record was used: the position is in the last one sent.
        settle(cursor);
        cursor.filled = getdents64(fd, buffer);
        cursor.next = at = 0;
        if (cursor.filled === 0) break;
      }
      nameEnd = direntNameEnd(buffer, cursor.filled, at, view);
    } catch (error) {
      // Send what we have; the next request (from the same position) reports the failure.
      if (writer.count > 0) break;
      throw error;
    }
    const outcome = plus !== null && writer instanceof DirentPlusWriter
      ? addPlusEntry(writer, buffer, view, at, nameEnd, plus)
      : addEntry(writer as DirentWriter, direntAt(buffer, view, at, nameEnd, true));
    if (outcome === "full") break;
    cursor.sentAt = at;
    cursor.next = at + view.getUint16(at + DIRENT_FIELD.reclen, true);
  }
  return writer.bytes();
}

/** Takes the `d_off` of the last record sent into the cursor's position (before its buffer is refilled). */
function settle(cursor: DirCursor): void {
  if (cursor.sentAt < 0) return;
  const buffer = cursor.buffer!;
  cursor.position = new DataView(buffer.buffer, buffer.byteOffset)
    .getBigInt64(cursor.sentAt + DIRENT_FIELD.off, true);
  cursor.sentAt = -1;
}

function addEntry(writer: DirentWriter, entry: Dirent): AddOutcome {
  try {
    return writer.add(entry) ? "added" : "full";
  } catch {
    // A host name FUSE cannot carry (longer than 255 bytes): leave it out.
    return "skipped";
  }
}

/**
 * The READDIRPLUS record of the getdents64 record at byte `at` of `buffer`
 * (`view` of the same bytes; its name ends at `nameEnd`).
 */
function addPlusEntry(
  writer: DirentPlusWriter,
  buffer: Uint8Array,
  view: DataView,
  at: number,
  nameEnd: number,
  plus: EntryLookup,
): AddOutcome {
  const name = buffer.subarray(at + DIRENT_FIELD.name, nameEnd);
  // Check the room first: a lookup reference for an entry we then cannot send would leak.
  if (direntPlusSize(name.length) > writer.remaining) return "full";
  if (isDotName(name)) {
    const dirent = direntAt(buffer, view, at, nameEnd, true);
    const placeholder = entryOut({
      nodeid: 0n,
      generation: 0n,
      attr: placeholderAttr(dirent.ino, dirent.type),
      entryTimeoutSec: 0,
      attrTimeoutSec: 0,
    });
    return writer.add(placeholder, dirent) ? "added" : "full";
  }
  // A name whose inode is known is written from one statx, with no entry object;
  // anything else (a new name, a replaced one, a failure) takes lookup below.
  try {
    if (writer.addFilled(name, view.getUint8(at + DIRENT_FIELD.type), view, at, plus)) {
      return "added";
    }
  } catch {
    return "skipped"; // a host name FUSE cannot carry (refused before any lookup)
  }
  let found: EntryResult;
  try {
    found = plus.lookup(name);
  } catch (error) {
    if (errnoOf(error) === ENOENT) return "skipped"; // removed since it was listed
    if (writer.count > 0) return "full"; // the next request retries it and reports
    throw error;
  }
  let outcome: AddOutcome;
  try {
    outcome = writer.add(entryOut(found), direntAt(buffer, view, at, nameEnd, true))
      ? "added"
      : "full";
  } catch {
    outcome = "skipped"; // a host name FUSE cannot carry: leave it out
  }
  if (outcome !== "added") plus.forgetOne(found.nodeid);
  return outcome;
}
