/**
 * Encoders for FUSE replies: the `fuse_out_header` and the op-specific
 * output structs, and writers that pack directory entries for READDIR and
 * READDIRPLUS. Each struct encoder writes into a caller-provided buffer at an
 * offset (for example straight into a reply assembled by the caller) or, if
 * none is given, into a new array of the struct's size.
 *
 * Values come from our own filesystem code, so bad values are programming
 * errors and throw RangeError.
 *
 * @module
 */

import {
  FUSE_KERNEL_VERSION,
  FUSE_MAX_ERRNO,
  FUSE_NAME_OFFSET,
  FUSE_NAME_OFFSET_DIRENTPLUS,
  fuseRecordAlign,
} from "./fuse_abi.ts";
import {
  FUSE_ATTR,
  FUSE_ATTR_OUT,
  FUSE_DIRENT,
  FUSE_DIRENTPLUS,
  FUSE_ENTRY_OUT,
  FUSE_GETXATTR_OUT,
  FUSE_INIT_OUT,
  FUSE_LK_OUT,
  FUSE_LSEEK_OUT,
  FUSE_OPEN_OUT,
  FUSE_OUT_HEADER,
  FUSE_STATFS_OUT,
  FUSE_WRITE_OUT,
} from "./fuse_layouts.ts";
import { fuseStringProblem } from "./fuse_names.ts";
import { type StructInput, writeStruct, writeStructToView, writeViewOf } from "./fuse_struct.ts";

/** A u64 field as the encoders accept it. */
export type U64 = bigint | number;

/** `fuse_out_header`: `error` is 0 or a negative errno; `len` covers the whole reply. */
export interface FuseOutHeader {
  /** Length of the whole reply, header included. */
  len: number;
  /** 0 on success, else -errno with 0 < errno < 512. */
  error: number;
  /** The request's `unique`. */
  unique: U64;
}

/** Writes a `fuse_out_header`. Refuses a positive error or one at or below -512. */
export function encodeOutHeader(
  header: FuseOutHeader,
  target?: Uint8Array,
  offset = 0,
): Uint8Array {
  checkOutHeader(header);
  return writeStruct(FUSE_OUT_HEADER, header, target, offset);
}

/**
 * {@linkcode encodeOutHeader} through a DataView the caller keeps (the
 * request handler's reused reply buffer), with the same checks.
 */
export function writeOutHeader(header: FuseOutHeader, view: DataView, offset = 0): void {
  checkOutHeader(header);
  writeStructToView(FUSE_OUT_HEADER, header, view, offset);
}

function checkOutHeader(header: FuseOutHeader): void {
  if (!Number.isInteger(header.error) || header.error > 0 || header.error <= -FUSE_MAX_ERRNO) {
    throw new RangeError(
      `fuse_out_header.error must be 0 or a negative errno above -${FUSE_MAX_ERRNO}, got ${header.error}`,
    );
  }
  if (header.len < FUSE_OUT_HEADER.size) {
    throw new RangeError(`fuse_out_header.len ${header.len} is shorter than the header`);
  }
}

/**
 * A complete success reply: the header (error 0, len computed) followed by
 * `payload` (one array or several parts, concatenated).
 */
export function encodeReply(
  unique: U64,
  payload: Uint8Array | readonly Uint8Array[] = [],
): Uint8Array {
  const parts = payload instanceof Uint8Array ? [payload] : payload;
  const len = parts.reduce((sum, part) => sum + part.byteLength, FUSE_OUT_HEADER.size);
  const reply = new Uint8Array(len);
  encodeOutHeader({ len, error: 0, unique }, reply);
  let at = FUSE_OUT_HEADER.size;
  for (const part of parts) {
    reply.set(part, at);
    at += part.byteLength;
  }
  return reply;
}

/** A 16-byte error reply for a POSITIVE `errno` (written as `-errno`). */
export function encodeErrorReply(unique: U64, errno: number): Uint8Array {
  if (!Number.isInteger(errno) || errno <= 0 || errno >= FUSE_MAX_ERRNO) {
    throw new RangeError(`errno must be an integer in [1, ${FUSE_MAX_ERRNO - 1}], got ${errno}`);
  }
  return encodeOutHeader({ len: FUSE_OUT_HEADER.size, error: -errno, unique });
}

/** READLINK's reply: the target's bytes with no NUL. */
export function encodeReadlinkReply(unique: U64, target: Uint8Array): Uint8Array {
  const problem = fuseStringProblem(target, "symlink", "symlink target");
  if (problem) throw new RangeError(problem.message);
  return encodeReply(unique, target);
}

/** Attributes of an inode (`fuse_attr`); times are seconds (may be negative) plus nanoseconds. */
export interface FuseAttr {
  /** Inode number shown to the guest (st_ino). */
  ino: U64;
  /** Size in bytes. */
  size: U64;
  /** Allocated 512-byte blocks. */
  blocks: U64;
  /** Access time, seconds. */
  atime: U64;
  /** Modification time, seconds. */
  mtime: U64;
  /** Status change time, seconds. */
  ctime: U64;
  /** Access time, nanoseconds. */
  atimensec: number;
  /** Modification time, nanoseconds. */
  mtimensec: number;
  /** Status change time, nanoseconds. */
  ctimensec: number;
  /** Type and permissions (st_mode). */
  mode: number;
  /** Link count. */
  nlink: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** Device number for device nodes. */
  rdev: number;
  /** Preferred I/O size. */
  blksize: number;
  /** FuseAttrFlag bits; 0 when omitted. */
  flags?: number;
}

type AttrInput = StructInput<typeof FUSE_ATTR.fields>;

/** `attr` with its flags filled in; `attr` itself (no copy per reply) when it has them. */
function attrInput(attr: FuseAttr): AttrInput {
  return attr.flags === undefined ? { ...attr, flags: 0 } : attr as AttrInput;
}

/** Writes a `fuse_attr` (88 bytes). */
export function encodeAttr(attr: FuseAttr, target?: Uint8Array, offset = 0): Uint8Array {
  return writeStruct(FUSE_ATTR, attrInput(attr), target, offset);
}

/** `fuse_entry_out`: a looked-up or created inode; validities are cache timeouts. */
export interface FuseEntryOut {
  /** Node id the kernel uses for this inode from now on (0 = negative entry). */
  nodeid: U64;
  /** With nodeid, unique for the filesystem's lifetime. */
  generation: U64;
  /** How long the name may be cached, seconds. */
  entryValid: U64;
  /** How long the attributes may be cached, seconds. */
  attrValid: U64;
  /** Nanosecond part of entryValid. */
  entryValidNsec: number;
  /** Nanosecond part of attrValid. */
  attrValidNsec: number;
  /** The inode's attributes. */
  attr: FuseAttr;
}

function entryOutInput(entry: FuseEntryOut): StructInput<typeof FUSE_ENTRY_OUT.fields> {
  const attr = attrInput(entry.attr);
  return attr === entry.attr
    ? entry as StructInput<typeof FUSE_ENTRY_OUT.fields>
    : { ...entry, attr };
}

/** Writes a `fuse_entry_out` (128 bytes). */
export function encodeEntryOut(entry: FuseEntryOut, target?: Uint8Array, offset = 0): Uint8Array {
  return writeStruct(FUSE_ENTRY_OUT, entryOutInput(entry), target, offset);
}

/** `fuse_attr_out`: reply to GETATTR and SETATTR. */
export interface FuseAttrOut {
  /** How long the attributes may be cached, seconds. */
  attrValid: U64;
  /** Nanosecond part of attrValid. */
  attrValidNsec: number;
  /** The attributes. */
  attr: FuseAttr;
}

/** Writes a `fuse_attr_out` (104 bytes). */
export function encodeAttrOut(out: FuseAttrOut, target?: Uint8Array, offset = 0): Uint8Array {
  const attr = attrInput(out.attr);
  const input = attr === out.attr ? out : { ...out, attr };
  return writeStruct(
    FUSE_ATTR_OUT,
    input as StructInput<typeof FUSE_ATTR_OUT.fields>,
    target,
    offset,
  );
}

/** `fuse_open_out`: reply to OPEN and OPENDIR (and CREATE's second part). */
export interface FuseOpenOut {
  /** File handle the kernel passes back in later requests. */
  fh: U64;
  /** FuseOpenOutFlag bits. */
  openFlags: number;
}

/** Writes a `fuse_open_out` (16 bytes). */
export function encodeOpenOut(out: FuseOpenOut, target?: Uint8Array, offset = 0): Uint8Array {
  return writeStruct(FUSE_OPEN_OUT, out, target, offset);
}

/** CREATE's reply body: `fuse_entry_out` then `fuse_open_out` (144 bytes). */
export function encodeCreateOut(
  entry: FuseEntryOut,
  open: FuseOpenOut,
  target: Uint8Array = new Uint8Array(FUSE_ENTRY_OUT.size + FUSE_OPEN_OUT.size),
  offset = 0,
): Uint8Array {
  encodeEntryOut(entry, target, offset);
  encodeOpenOut(open, target, offset + FUSE_ENTRY_OUT.size);
  return target.subarray(offset, offset + FUSE_ENTRY_OUT.size + FUSE_OPEN_OUT.size);
}

/** `fuse_write_out`: bytes written (WRITE) or copied (COPY_FILE_RANGE). */
export interface FuseWriteOut {
  /** Byte count. */
  size: number;
}

/** Writes a `fuse_write_out` (8 bytes). */
export function encodeWriteOut(out: FuseWriteOut, target?: Uint8Array, offset = 0): Uint8Array {
  return writeStruct(FUSE_WRITE_OUT, out, target, offset);
}

/** `fuse_kstatfs`: filesystem statistics as statfs(2) reports them. */
export interface FuseStatfs {
  /** Total blocks of `frsize`. */
  blocks: U64;
  /** Free blocks. */
  bfree: U64;
  /** Free blocks for unprivileged users. */
  bavail: U64;
  /** Total inodes. */
  files: U64;
  /** Free inodes. */
  ffree: U64;
  /** Preferred block size. */
  bsize: number;
  /** Longest name. */
  namelen: number;
  /** Fragment size (the unit of `blocks`). */
  frsize: number;
}

/** Writes a `fuse_statfs_out` (80 bytes). */
export function encodeStatfsOut(st: FuseStatfs, target?: Uint8Array, offset = 0): Uint8Array {
  return writeStruct(FUSE_STATFS_OUT, { st }, target, offset);
}

/**
 * `fuse_init_out`: what the server accepts. The kernel reads `flags2` only
 * when `flags` has INIT_EXT. `major` defaults to 7.
 */
export interface FuseInitOut {
  /** Major version: 7. */
  major?: number;
  /** Minor version the server speaks (the kernel uses the smaller of the two). */
  minor: number;
  /** Readahead limit, at most the kernel's. */
  maxReadahead: number;
  /** Accepted FuseInitFlag bits. */
  flags: number;
  /** Background request limit (u16). */
  maxBackground: number;
  /** Congestion threshold (u16). */
  congestionThreshold: number;
  /** Largest WRITE payload. */
  maxWrite: number;
  /** Timestamp granularity in nanoseconds. */
  timeGran: number;
  /** Most pages per request when MAX_PAGES is accepted (u16). */
  maxPages: number;
  /** log2 of the DAX mapping alignment when MAP_ALIGNMENT is accepted (u16). */
  mapAlignment: number;
  /** Accepted FuseInitFlag2 bits. */
  flags2: number;
}

/** Writes a `fuse_init_out` (64 bytes). */
export function encodeInitOut(out: FuseInitOut, target?: Uint8Array, offset = 0): Uint8Array {
  return writeStruct(
    FUSE_INIT_OUT,
    { ...out, major: out.major ?? FUSE_KERNEL_VERSION },
    target,
    offset,
  );
}

/** Writes a `fuse_lseek_out` (8 bytes): the resulting offset. */
export function encodeLseekOut(
  out: { offset: U64 },
  target?: Uint8Array,
  offset = 0,
): Uint8Array {
  return writeStruct(FUSE_LSEEK_OUT, out, target, offset);
}

/** Writes a `fuse_getxattr_out` (8 bytes): the size a GETXATTR/LISTXATTR with size 0 asked for. */
export function encodeGetxattrOut(
  out: { size: number },
  target?: Uint8Array,
  offset = 0,
): Uint8Array {
  return writeStruct(FUSE_GETXATTR_OUT, out, target, offset);
}

/** `fuse_file_lock`. */
export interface FuseFileLock {
  /** First byte. */
  start: U64;
  /** Last byte (inclusive). */
  end: U64;
  /** F_RDLCK / F_WRLCK / F_UNLCK. */
  type: number;
  /** Holder's tgid. */
  pid: number;
}

/** Writes a `fuse_lk_out` (24 bytes): GETLK's answer. */
export function encodeLkOut(lk: FuseFileLock, target?: Uint8Array, offset = 0): Uint8Array {
  return writeStruct(FUSE_LK_OUT, { lk }, target, offset);
}

/** One directory entry for READDIR/READDIRPLUS. */
export interface FuseDirent {
  /** Inode number (st_ino). */
  ino: U64;
  /** Offset of the NEXT entry: the kernel passes it back to continue after this one. */
  off: U64;
  /** DirentType value. */
  type: number;
  /** Name bytes: 1..255, no `/` or NUL. */
  name: Uint8Array;
}

/** Bytes a READDIR record takes for a name of `nameLength` bytes (`FUSE_DIRENT_SIZE`). */
export function direntSize(nameLength: number): number {
  return fuseRecordAlign(FUSE_NAME_OFFSET + nameLength);
}

/** Bytes a READDIRPLUS record takes for a name of `nameLength` bytes (`FUSE_DIRENTPLUS_SIZE`). */
export function direntPlusSize(nameLength: number): number {
  return fuseRecordAlign(FUSE_NAME_OFFSET_DIRENTPLUS + nameLength);
}

function checkDirentName(name: Uint8Array): void {
  const problem = fuseStringProblem(name, "entry", "dirent name");
  if (problem) throw new RangeError(problem.message);
}

/** Packs 8-byte-aligned records into a fixed buffer; the base of both dirent writers. */
export abstract class FuseRecordWriter {
  readonly #buffer: Uint8Array;
  #length = 0;
  #count = 0;

  /** Writes into `target` (from its start) or into a new buffer of `capacity` bytes. */
  constructor(target: Uint8Array | number) {
    if (typeof target === "number") {
      if (!Number.isInteger(target) || target < 0) {
        throw new RangeError(`capacity ${target} is not a non-negative integer`);
      }
      this.#buffer = new Uint8Array(target);
    } else {
      this.#buffer = target;
    }
  }

  /** Bytes written so far: the reply payload's length. */
  get length(): number {
    return this.#length;
  }

  /** Records written so far. */
  get count(): number {
    return this.#count;
  }

  /** Bytes still free. */
  get remaining(): number {
    return this.#buffer.byteLength - this.#length;
  }

  /** The records written so far, as a view of the buffer. */
  bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }

  /**
   * Appends one record of `size` bytes filled in by `fill` (the space is
   * zeroed first so the padding is clean). Returns false, writing nothing,
   * when it would not fit; if `fill` throws, nothing is counted either.
   */
  protected append(size: number, fill: (record: Uint8Array) => void): boolean {
    if (size > this.remaining) return false;
    const record = this.#buffer.subarray(this.#length, this.#length + size);
    record.fill(0);
    fill(record);
    this.#commit(size);
    return true;
  }

  /**
   * The zeroed space for one record of `size` bytes, as the writer's buffer
   * and the record's offset in it (-1: it does not fit); nothing counts
   * until {@linkcode commit}. For a record written field by field, with no
   * view of its own.
   */
  protected reserve(size: number): number {
    if (size > this.remaining) return -1;
    this.#buffer.fill(0, this.#length, this.#length + size);
    return this.#length;
  }

  /** The buffer records are written into (see {@linkcode reserve}). */
  protected get buffer(): Uint8Array {
    return this.#buffer;
  }

  /** Counts the record of `size` bytes {@linkcode reserve} gave. */
  protected commit(size: number): void {
    this.#commit(size);
  }

  #commit(size: number): void {
    this.#length += size;
    this.#count++;
  }
}

/**
 * Writes the fuse_entry_out of a directory entry straight into a
 * READDIRPLUS record, or declines (see {@linkcode DirentPlusWriter.addFilled}).
 */
export interface EntryOutFiller {
  /**
   * Writes the fuse_entry_out of `name` at `base` of `view` (a view of the
   * whole reply buffer) and returns true, or returns false having written
   * nothing and taken no lookup reference.
   */
  fillEntryOut(name: Uint8Array, view: DataView, base: number): boolean;
}

/**
 * Builds a READDIR reply payload of at most the request's `size` bytes.
 * `add` returns false, writing nothing, when the entry does not fit: the
 * caller stops there and the kernel asks again from the last `off`.
 */
export class DirentWriter extends FuseRecordWriter {
  /** Appends one `fuse_dirent` + name + padding; false when it does not fit. */
  add(dirent: FuseDirent): boolean {
    checkDirentName(dirent.name);
    return this.append(direntSize(dirent.name.byteLength), (record) => {
      writeStruct(FUSE_DIRENT, direntInput(dirent), record);
      record.set(dirent.name, FUSE_NAME_OFFSET);
    });
  }
}

/** Field offsets of fuse_dirent. */
const DIRENT = FUSE_DIRENT.offsets;

/**
 * Builds a READDIRPLUS reply payload: each record is a `fuse_entry_out`
 * followed by a `fuse_dirent` and the padded name. Same "stop, don't split"
 * rule as {@linkcode DirentWriter}.
 */
export class DirentPlusWriter extends FuseRecordWriter {
  /** Appends one `fuse_direntplus` + name + padding; false when it does not fit. */
  add(entry: FuseEntryOut, dirent: FuseDirent): boolean {
    checkDirentName(dirent.name);
    return this.append(direntPlusSize(dirent.name.byteLength), (record) => {
      writeStruct(
        FUSE_DIRENTPLUS,
        { entryOut: entryOutInput(entry), dirent: direntInput(dirent) },
        record,
      );
      record.set(dirent.name, FUSE_NAME_OFFSET_DIRENTPLUS);
    });
  }

  /**
   * Appends one `fuse_direntplus` for `name` of DT_* `type` whose
   * fuse_entry_out `filler` writes in place (no entry object in between);
   * its ino and off are the 16 little-endian bytes at `at` of `inoAndOff`,
   * in fuse_dirent's order (as a linux_dirent64 record holds them). False,
   * counting nothing, when it does not fit or `filler` declines;
   * RangeError, before `filler` is asked, for a name FUSE cannot carry.
   */
  addFilled(
    name: Uint8Array,
    type: number,
    inoAndOff: DataView,
    at: number,
    filler: EntryOutFiller,
  ): boolean {
    checkDirentName(name);
    const size = direntPlusSize(name.byteLength);
    const start = this.reserve(size);
    if (start < 0) return false;
    const buffer = this.buffer;
    const view = writeViewOf(buffer);
    const base = buffer.byteOffset + start;
    if (!filler.fillEntryOut(name, view, base)) return false;
    const dirent = base + FUSE_ENTRY_OUT.size;
    for (let word = 0; word < 16; word += 4) {
      view.setUint32(dirent + DIRENT.ino + word, inoAndOff.getUint32(at + word, true), true);
    }
    view.setUint32(dirent + DIRENT.namelen, name.byteLength, true);
    view.setUint32(dirent + DIRENT.type, type, true);
    buffer.set(name, start + FUSE_NAME_OFFSET_DIRENTPLUS);
    this.commit(size);
    return true;
  }
}

function direntInput(dirent: FuseDirent): StructInput<typeof FUSE_DIRENT.fields> {
  return { ino: dirent.ino, off: dirent.off, namelen: dirent.name.byteLength, type: dirent.type };
}
