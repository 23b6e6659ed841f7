/**
 * The driver's side of replies: parses what a FUSE server answered. Used by
 * tests and TypeScript front-ends; a reply from a back-end is untrusted
 * input, so faults are FuseProtocolError.
 *
 * @module
 */

import { FUSE_MAX_ERRNO, FUSE_NAME_MAX, FUSE_NAME_OFFSET, fuseRecordAlign } from "./fuse_abi.ts";
import { FuseProtocolError } from "./fuse_errors.ts";
import {
  FUSE_ATTR,
  FUSE_ATTR_OUT,
  FUSE_DIRENT,
  FUSE_DIRENTPLUS,
  FUSE_ENTRY_OUT,
  FUSE_GETXATTR_OUT,
  FUSE_INIT_OUT,
  FUSE_KSTATFS,
  FUSE_LK_OUT,
  FUSE_LSEEK_OUT,
  FUSE_OPEN_OUT,
  FUSE_OUT_HEADER,
  FUSE_STATFS_OUT,
  FUSE_WRITE_OUT,
} from "./fuse_layouts.ts";
import { readStruct, type StructValue } from "./fuse_struct.ts";

/** A decoded `fuse_out_header`. */
export type FuseOutHeaderValue = StructValue<typeof FUSE_OUT_HEADER.fields>;
/** A decoded `fuse_attr`. */
export type FuseAttrValue = StructValue<typeof FUSE_ATTR.fields>;
/** A decoded `fuse_entry_out`. */
export type FuseEntryOutValue = StructValue<typeof FUSE_ENTRY_OUT.fields>;
/** A decoded `fuse_attr_out`. */
export type FuseAttrOutValue = StructValue<typeof FUSE_ATTR_OUT.fields>;
/** A decoded `fuse_open_out`. */
export type FuseOpenOutValue = StructValue<typeof FUSE_OPEN_OUT.fields>;
/** A decoded `fuse_init_out`. */
export type FuseInitOutValue = StructValue<typeof FUSE_INIT_OUT.fields>;
/** A decoded `fuse_kstatfs`. */
export type FuseStatfsValue = StructValue<typeof FUSE_KSTATFS.fields>;

/** A reply split into its header and payload. */
export interface FuseReplyParts {
  /** The decoded header. */
  header: FuseOutHeaderValue;
  /** Bytes after the header up to `header.len` (a view). */
  payload: Uint8Array;
}

/** Decodes the 16-byte `fuse_out_header` at the start of `bytes`. */
export function decodeOutHeader(bytes: Uint8Array): FuseOutHeaderValue {
  return readStruct(FUSE_OUT_HEADER, bytes);
}

/**
 * Decodes the header and cuts the payload to `len`; refuses an error
 * outside (-512, 0], a `len` outside [16, bytes], or an error reply that
 * carries a payload.
 */
export function splitReply(bytes: Uint8Array): FuseReplyParts {
  const header = decodeOutHeader(bytes);
  if (header.error > 0 || header.error <= -FUSE_MAX_ERRNO) {
    throw new FuseProtocolError(`fuse_out_header.error ${header.error} is not 0 or -errno`);
  }
  if (header.len < FUSE_OUT_HEADER.size || header.len > bytes.byteLength) {
    throw new FuseProtocolError(
      `fuse_out_header.len ${header.len} does not fit the ${bytes.byteLength}-byte reply`,
    );
  }
  if (header.error !== 0 && header.len !== FUSE_OUT_HEADER.size) {
    throw new FuseProtocolError(`error reply with len ${header.len}`);
  }
  return { header, payload: bytes.subarray(FUSE_OUT_HEADER.size, header.len) };
}

/** Decodes a `fuse_attr`. */
export function decodeAttr(bytes: Uint8Array, offset = 0): FuseAttrValue {
  return readStruct(FUSE_ATTR, bytes, offset);
}

/** Decodes a `fuse_entry_out`. */
export function decodeEntryOut(bytes: Uint8Array, offset = 0): FuseEntryOutValue {
  return readStruct(FUSE_ENTRY_OUT, bytes, offset);
}

/** Decodes a `fuse_attr_out`. */
export function decodeAttrOut(bytes: Uint8Array, offset = 0): FuseAttrOutValue {
  return readStruct(FUSE_ATTR_OUT, bytes, offset);
}

/** Decodes a `fuse_open_out`. */
export function decodeOpenOut(bytes: Uint8Array, offset = 0): FuseOpenOutValue {
  return readStruct(FUSE_OPEN_OUT, bytes, offset);
}

/** Decodes a CREATE reply payload: `fuse_entry_out` then `fuse_open_out`. */
export function decodeCreateOut(
  bytes: Uint8Array,
  offset = 0,
): { entry: FuseEntryOutValue; open: FuseOpenOutValue } {
  return {
    entry: readStruct(FUSE_ENTRY_OUT, bytes, offset),
    open: readStruct(FUSE_OPEN_OUT, bytes, offset + FUSE_ENTRY_OUT.size),
  };
}

/** Decodes a `fuse_write_out`. */
export function decodeWriteOut(bytes: Uint8Array, offset = 0): { size: number } {
  return readStruct(FUSE_WRITE_OUT, bytes, offset);
}

/** Decodes a `fuse_statfs_out` into its `fuse_kstatfs`. */
export function decodeStatfsOut(bytes: Uint8Array, offset = 0): FuseStatfsValue {
  return readStruct(FUSE_STATFS_OUT, bytes, offset).st;
}

/** Decodes a `fuse_init_out`. */
export function decodeInitOut(bytes: Uint8Array, offset = 0): FuseInitOutValue {
  return readStruct(FUSE_INIT_OUT, bytes, offset);
}

/** Decodes a `fuse_lseek_out`. */
export function decodeLseekOut(bytes: Uint8Array, offset = 0): { offset: bigint } {
  return readStruct(FUSE_LSEEK_OUT, bytes, offset);
}

/** Decodes a `fuse_getxattr_out`. */
export function decodeGetxattrOut(bytes: Uint8Array, offset = 0): { size: number } {
  return readStruct(FUSE_GETXATTR_OUT, bytes, offset);
}

/** Decodes a `fuse_lk_out` into its `fuse_file_lock`. */
export function decodeLkOut(
  bytes: Uint8Array,
  offset = 0,
): StructValue<typeof FUSE_LK_OUT.fields>["lk"] {
  return readStruct(FUSE_LK_OUT, bytes, offset).lk;
}

/** One decoded READDIR record. */
export interface FuseDirentValue {
  /** Inode number. */
  ino: bigint;
  /** Offset of the next entry. */
  off: bigint;
  /** DirentType value. */
  type: number;
  /** Name bytes (a copy). */
  name: Uint8Array;
}

/** One decoded READDIRPLUS record. */
export interface FuseDirentPlusValue {
  /** The entry's lookup result. */
  entryOut: FuseEntryOutValue;
  /** The directory entry. */
  dirent: FuseDirentValue;
}

function readRecords<T>(
  payload: Uint8Array,
  headerSize: number,
  readOne: (at: number) => { value: T; namelen: number },
): T[] {
  const records: T[] = [];
  let at = 0;
  while (at < payload.byteLength) {
    if (payload.byteLength - at < headerSize) {
      throw new FuseProtocolError(`dirent record at ${at} is cut short`);
    }
    const { value, namelen } = readOne(at);
    if (namelen === 0 || namelen > FUSE_NAME_MAX) {
      throw new FuseProtocolError(`dirent record at ${at} has name length ${namelen}`);
    }
    const size = fuseRecordAlign(headerSize + namelen);
    if (at + size > payload.byteLength) {
      throw new FuseProtocolError(`dirent record at ${at} needs ${size} bytes`);
    }
    records.push(value);
    at += size;
  }
  return records;
}

/** Parses a READDIR payload into its records. */
export function decodeDirents(payload: Uint8Array): FuseDirentValue[] {
  return readRecords(payload, FUSE_NAME_OFFSET, (at) => {
    const { ino, off, namelen, type } = readStruct(FUSE_DIRENT, payload, at);
    const nameAt = at + FUSE_NAME_OFFSET;
    const name = payload.slice(nameAt, nameAt + Math.min(namelen, FUSE_NAME_MAX));
    return { value: { ino, off, type, name }, namelen };
  });
}

/** Parses a READDIRPLUS payload into its records. */
export function decodeDirentsPlus(payload: Uint8Array): FuseDirentPlusValue[] {
  return readRecords(payload, FUSE_DIRENTPLUS.size, (at) => {
    const { entryOut, dirent } = readStruct(FUSE_DIRENTPLUS, payload, at);
    const nameAt = at + FUSE_DIRENTPLUS.size;
    const name = payload.slice(nameAt, nameAt + Math.min(dirent.namelen, FUSE_NAME_MAX));
    return {
      value: {
        entryOut,
        dirent: { ino: dirent.ino, off: dirent.off, type: dirent.type, name },
      },
      namelen: dirent.namelen,
    };
  });
}
