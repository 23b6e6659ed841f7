/**
 * Decoders for FUSE requests: the `fuse_in_header` and the op-specific
 * input that follows it. Input is guest-controlled: every length is checked
 * and every fault is a FuseProtocolError (or its subclasses) carrying the
 * errno the caller answers with. Nothing here copies bulk data: WRITE and
 * SETXATTR payloads are returned as offsets into the body. Names are copies
 * unless the options say `namesAsViews`.
 *
 * Usage: `const { header, body } = splitRequest(bytes);` then
 * `decodeArgs(header.opcode, body, options)` and switch on `opcode`.
 *
 * @module
 */

import { FuseInitFlag, FuseOpcode, opcodeName } from "./fuse_abi.ts";
import { FuseErrno, FuseProtocolError, FuseUnsupportedOpcodeError } from "./fuse_errors.ts";
import {
  FUSE_ACCESS_IN,
  FUSE_BATCH_FORGET_IN,
  FUSE_COPY_FILE_RANGE_IN,
  FUSE_CREATE_IN,
  FUSE_FALLOCATE_IN,
  FUSE_FLUSH_IN,
  FUSE_FORGET_IN,
  FUSE_FORGET_ONE,
  FUSE_FSYNC_IN,
  FUSE_GETATTR_IN,
  FUSE_GETXATTR_IN,
  FUSE_IN_HEADER,
  FUSE_INIT_IN,
  FUSE_INIT_IN_COMPAT,
  FUSE_INTERRUPT_IN,
  FUSE_LINK_IN,
  FUSE_LK_IN,
  FUSE_LSEEK_IN,
  FUSE_MKDIR_IN,
  FUSE_MKNOD_IN,
  FUSE_OPEN_IN,
  FUSE_READ_IN,
  FUSE_RELEASE_IN,
  FUSE_RENAME2_IN,
  FUSE_RENAME_IN,
  FUSE_SETATTR_IN,
  FUSE_SETXATTR_IN,
  FUSE_SETXATTR_IN_COMPAT,
  FUSE_SYNCFS_IN,
  FUSE_WRITE_IN,
} from "./fuse_layouts.ts";
import { readFuseString, readLastFuseString } from "./fuse_names.ts";
import { type FieldSpec, readStruct, type StructLayout, type StructValue } from "./fuse_struct.ts";

/** A decoded `fuse_in_header`. */
export interface FuseInHeader {
  /** Length of the whole request, header included. */
  len: number;
  /** The operation ({@linkcode FuseOpcode}). */
  opcode: number;
  /** Request id, echoed in the reply. */
  unique: bigint;
  /** The inode the operation applies to (the parent for name operations). */
  nodeid: bigint;
  /** Caller's fsuid. */
  uid: number;
  /** Caller's fsgid. */
  gid: number;
  /** Caller's thread group id. */
  pid: number;
  /** Extension length in 8-byte units (7.38+); a 6.1 kernel sends 0. */
  totalExtlen: number;
  /** Padding; 0. */
  padding: number;
}

/** Decodes the 40-byte `fuse_in_header` at the start of `bytes`. */
export function decodeInHeader(bytes: Uint8Array): FuseInHeader {
  return readStruct(FUSE_IN_HEADER, bytes);
}

/** A request split into its header and its op-specific input. */
export interface FuseRequestParts {
  /** The decoded header. */
  header: FuseInHeader;
  /** The bytes after the header up to `header.len`: a view of the input, not a copy. */
  body: Uint8Array;
}

/**
 * Decodes the header and cuts the body to `header.len`. Refuses a `len`
 * smaller than the header or larger than the bytes given; bytes past `len`
 * are ignored.
 */
export function splitRequest(bytes: Uint8Array): FuseRequestParts {
  const header = decodeInHeader(bytes);
  return { header, body: requestBody(header.len, bytes) };
}

/**
 * The body of a request of `len` bytes (its `fuse_in_header.len`) at the
 * start of `bytes`, with {@linkcode splitRequest}'s checks; only the first
 * `available` bytes of `bytes` belong to the request (a reused buffer
 * longer than it: no view of the request to cut first).
 */
export function requestBody(
  len: number,
  bytes: Uint8Array,
  available: number = bytes.byteLength,
): Uint8Array {
  if (len < FUSE_IN_HEADER.size) {
    throw new FuseProtocolError(`fuse_in_header.len ${len} is shorter than the header`);
  }
  const size = Math.min(available, bytes.byteLength);
  if (len > size) {
    throw new FuseProtocolError(
      `fuse_in_header.len ${len} exceeds the ${size} bytes of the request`,
    );
  }
  return bytes.subarray(FUSE_IN_HEADER.size, len);
}

/** Layout choices that depend on what was accepted at INIT. */
export interface FuseDecodeOptions {
  /** SETXATTR_EXT was accepted: SETXATTR carries the 16-byte `fuse_setxattr_in`. */
  setxattrExt?: boolean;
  /**
   * SECURITY_CTX was accepted: CREATE, MKDIR, MKNOD and SYMLINK carry a
   * security context after their names (returned raw as `securityContext`).
   */
  securityContext?: boolean;
  /**
   * Names are views of the body instead of copies: for a caller that copied
   * the request out of guest memory itself (so the guest cannot change a
   * name after its checks) and copies what it keeps past the request.
   */
  namesAsViews?: boolean;
}

/** Input of LOOKUP, UNLINK and RMDIR: one entry name. */
export interface FuseNameArgs {
  /** The name's bytes, without the NUL. */
  name: Uint8Array;
}

/** Input with nothing in it: READLINK, STATFS, DESTROY, SYNCFS. */
export type FuseEmptyArgs = Record<never, never>;

/** FORGET: drop `nlookup` references to the header's nodeid. */
export type FuseForgetArgs = StructValue<typeof FUSE_FORGET_IN.fields>;

/** One entry of BATCH_FORGET. */
export type FuseForgetOne = StructValue<typeof FUSE_FORGET_ONE.fields>;

/** BATCH_FORGET: `count` entries. */
export interface FuseBatchForgetArgs {
  /** Number of entries. */
  count: number;
  /** The entries, in order. */
  entries: FuseForgetOne[];
}

/** GETATTR: `fh` is valid when `getattrFlags` has FuseGetattrFlag.FH. */
export type FuseGetattrArgs = StructValue<typeof FUSE_GETATTR_IN.fields>;

/** SETATTR: the fields named by `valid` ({@linkcode FuseSetattrValid}) apply. */
export type FuseSetattrArgs = StructValue<typeof FUSE_SETATTR_IN.fields>;

/** Fields shared by the requests that create an inode. */
export interface FuseSecurityContextArgs {
  /** Raw security context bytes, present only when decoded with `securityContext`. */
  securityContext?: Uint8Array;
}

/** MKNOD. */
export interface FuseMknodArgs extends FuseSecurityContextArgs {
  /** File type and permissions. */
  mode: number;
  /** Device number for device nodes. */
  rdev: number;
  /** The caller's umask (applied by the server unless DONT_MASK). */
  umask: number;
  /** Name of the new entry. */
  name: Uint8Array;
}

/** MKDIR. */
export interface FuseMkdirArgs extends FuseSecurityContextArgs {
  /** Permissions. */
  mode: number;
  /** The caller's umask. */
  umask: number;
  /** Name of the new directory. */
  name: Uint8Array;
}

/** SYMLINK: the entry name comes first, then the target. */
export interface FuseSymlinkArgs extends FuseSecurityContextArgs {
  /** Name of the new link. */
  name: Uint8Array;
  /** What it points to (may contain `/`). */
  target: Uint8Array;
}

/** RENAME: from the header's nodeid/oldname to newdir/newname. */
export interface FuseRenameArgs {
  /** Node id of the destination directory. */
  newdir: bigint;
  /** Name in the source directory. */
  oldname: Uint8Array;
  /** Name in the destination directory. */
  newname: Uint8Array;
}

/** RENAME2: RENAME with renameat2(2) flags. */
export interface FuseRename2Args extends FuseRenameArgs {
  /** RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT. */
  flags: number;
}

/** LINK: a new name in the header's nodeid for `oldnodeid`. */
export interface FuseLinkArgs {
  /** The existing inode. */
  oldnodeid: bigint;
  /** The new name. */
  name: Uint8Array;
}

/** OPEN and OPENDIR: open(2) flags and FuseOpenInFlag bits. */
export type FuseOpenArgs = StructValue<typeof FUSE_OPEN_IN.fields>;

/** CREATE. */
export interface FuseCreateArgs extends FuseSecurityContextArgs {
  /** open(2) flags. */
  flags: number;
  /** Permissions of the new file. */
  mode: number;
  /** The caller's umask. */
  umask: number;
  /** FuseOpenInFlag bits. */
  openFlags: number;
  /** Name of the new file. */
  name: Uint8Array;
}

/** READ, READDIR and READDIRPLUS: `size` is the most the reply may carry. */
export type FuseReadArgs = StructValue<typeof FUSE_READ_IN.fields>;

/** WRITE: the data is `body.subarray(dataOffset, dataOffset + dataLength)`. */
export interface FuseWriteArgs extends StructValue<typeof FUSE_WRITE_IN.fields> {
  /** Offset of the data in the request body (always 40). */
  dataOffset: number;
  /** Length of the data (equals `size`). */
  dataLength: number;
}

/** RELEASE and RELEASEDIR. */
export type FuseReleaseArgs = StructValue<typeof FUSE_RELEASE_IN.fields>;

/** FLUSH. */
export type FuseFlushArgs = StructValue<typeof FUSE_FLUSH_IN.fields>;

/** FSYNC and FSYNCDIR: FuseFsyncFlag.FDATASYNC asks for data only. */
export type FuseFsyncArgs = StructValue<typeof FUSE_FSYNC_IN.fields>;

/** SETXATTR: the value is `body.subarray(valueOffset, valueOffset + valueLength)`. */
export interface FuseSetxattrArgs {
  /** Value size. */
  size: number;
  /** XATTR_CREATE / XATTR_REPLACE. */
  flags: number;
  /** FuseSetxattrFlag bits (0 unless decoded with `setxattrExt`). */
  setxattrFlags: number;
  /** Attribute name. */
  name: Uint8Array;
  /** Offset of the value in the request body. */
  valueOffset: number;
  /** Length of the value (equals `size`). */
  valueLength: number;
}

/** GETXATTR: `size` 0 asks for the value's size only. */
export interface FuseGetxattrArgs {
  /** Most bytes the reply may carry. */
  size: number;
  /** Attribute name. */
  name: Uint8Array;
}

/** LISTXATTR: `size` 0 asks for the list's size only. */
export interface FuseListxattrArgs {
  /** Most bytes the reply may carry. */
  size: number;
}

/** REMOVEXATTR. */
export interface FuseRemovexattrArgs {
  /** Attribute name. */
  name: Uint8Array;
}

/** GETLK, SETLK, SETLKW. */
export type FuseLkArgs = StructValue<typeof FUSE_LK_IN.fields>;

/** ACCESS: access(2) mask. */
export type FuseAccessArgs = StructValue<typeof FUSE_ACCESS_IN.fields>;

/** INIT: what the kernel offers. `flags2` is 0 unless `flags` has INIT_EXT. */
export type FuseInitArgs = StructValue<typeof FUSE_INIT_IN.fields>;

/** INTERRUPT: the request to interrupt. */
export type FuseInterruptArgs = StructValue<typeof FUSE_INTERRUPT_IN.fields>;

/** FALLOCATE: fallocate(2) mode and range. */
export type FuseFallocateArgs = StructValue<typeof FUSE_FALLOCATE_IN.fields>;

/** LSEEK: SEEK_DATA / SEEK_HOLE (others are handled by the kernel). */
export type FuseLseekArgs = StructValue<typeof FUSE_LSEEK_IN.fields>;

/** COPY_FILE_RANGE: from the header's nodeid/fhIn to nodeidOut/fhOut. */
export type FuseCopyFileRangeArgs = StructValue<typeof FUSE_COPY_FILE_RANGE_IN.fields>;

/** The decoded input of every opcode this layer understands. */
export interface FuseArgsByOpcode {
  /** Input of LOOKUP. */
  [FuseOpcode.LOOKUP]: FuseNameArgs;
  /** Input of FORGET. */
  [FuseOpcode.FORGET]: FuseForgetArgs;
  /** Input of GETATTR. */
  [FuseOpcode.GETATTR]: FuseGetattrArgs;
  /** Input of SETATTR. */
  [FuseOpcode.SETATTR]: FuseSetattrArgs;
  /** Input of READLINK. */
  [FuseOpcode.READLINK]: FuseEmptyArgs;
  /** Input of SYMLINK. */
  [FuseOpcode.SYMLINK]: FuseSymlinkArgs;
  /** Input of MKNOD. */
  [FuseOpcode.MKNOD]: FuseMknodArgs;
  /** Input of MKDIR. */
  [FuseOpcode.MKDIR]: FuseMkdirArgs;
  /** Input of UNLINK. */
  [FuseOpcode.UNLINK]: FuseNameArgs;
  /** Input of RMDIR. */
  [FuseOpcode.RMDIR]: FuseNameArgs;
  /** Input of RENAME. */
  [FuseOpcode.RENAME]: FuseRenameArgs;
  /** Input of LINK. */
  [FuseOpcode.LINK]: FuseLinkArgs;
  /** Input of OPEN. */
  [FuseOpcode.OPEN]: FuseOpenArgs;
  /** Input of READ. */
  [FuseOpcode.READ]: FuseReadArgs;
  /** Input of WRITE. */
  [FuseOpcode.WRITE]: FuseWriteArgs;
  /** Input of STATFS. */
  [FuseOpcode.STATFS]: FuseEmptyArgs;
  /** Input of RELEASE. */
  [FuseOpcode.RELEASE]: FuseReleaseArgs;
  /** Input of FSYNC. */
  [FuseOpcode.FSYNC]: FuseFsyncArgs;
  /** Input of SETXATTR. */
  [FuseOpcode.SETXATTR]: FuseSetxattrArgs;
  /** Input of GETXATTR. */
  [FuseOpcode.GETXATTR]: FuseGetxattrArgs;
  /** Input of LISTXATTR. */
  [FuseOpcode.LISTXATTR]: FuseListxattrArgs;
  /** Input of REMOVEXATTR. */
  [FuseOpcode.REMOVEXATTR]: FuseRemovexattrArgs;
  /** Input of FLUSH. */
  [FuseOpcode.FLUSH]: FuseFlushArgs;
  /** Input of INIT. */
  [FuseOpcode.INIT]: FuseInitArgs;
  /** Input of OPENDIR. */
  [FuseOpcode.OPENDIR]: FuseOpenArgs;
  /** Input of READDIR. */
  [FuseOpcode.READDIR]: FuseReadArgs;
  /** Input of RELEASEDIR. */
  [FuseOpcode.RELEASEDIR]: FuseReleaseArgs;
  /** Input of FSYNCDIR. */
  [FuseOpcode.FSYNCDIR]: FuseFsyncArgs;
  /** Input of GETLK. */
  [FuseOpcode.GETLK]: FuseLkArgs;
  /** Input of SETLK. */
  [FuseOpcode.SETLK]: FuseLkArgs;
  /** Input of SETLKW. */
  [FuseOpcode.SETLKW]: FuseLkArgs;
  /** Input of ACCESS. */
  [FuseOpcode.ACCESS]: FuseAccessArgs;
  /** Input of CREATE. */
  [FuseOpcode.CREATE]: FuseCreateArgs;
  /** Input of INTERRUPT. */
  [FuseOpcode.INTERRUPT]: FuseInterruptArgs;
  /** Input of DESTROY. */
  [FuseOpcode.DESTROY]: FuseEmptyArgs;
  /** Input of BATCH_FORGET. */
  [FuseOpcode.BATCH_FORGET]: FuseBatchForgetArgs;
  /** Input of FALLOCATE. */
  [FuseOpcode.FALLOCATE]: FuseFallocateArgs;
  /** Input of READDIRPLUS. */
  [FuseOpcode.READDIRPLUS]: FuseReadArgs;
  /** Input of RENAME2. */
  [FuseOpcode.RENAME2]: FuseRename2Args;
  /** Input of LSEEK. */
  [FuseOpcode.LSEEK]: FuseLseekArgs;
  /** Input of COPY_FILE_RANGE. */
  [FuseOpcode.COPY_FILE_RANGE]: FuseCopyFileRangeArgs;
  /** Input of SYNCFS. */
  [FuseOpcode.SYNCFS]: FuseEmptyArgs;
}

/** An opcode {@linkcode decodeArgs} understands. */
export type FuseDecodableOpcode = keyof FuseArgsByOpcode;

/** Decoded input tagged with its opcode: `switch (request.opcode)` narrows `args`. */
export type FuseRequestArgs = {
  [K in FuseDecodableOpcode]: { opcode: K; args: FuseArgsByOpcode[K] };
}[FuseDecodableOpcode];

/** Reads a struct that must be the whole body. */
function exactStruct<F extends readonly FieldSpec[]>(
  layout: StructLayout<F>,
  body: Uint8Array,
): StructValue<F> {
  expectLength(layout.name, body, layout.size);
  return readStruct(layout, body);
}

function expectLength(what: string, body: Uint8Array, expected: number): void {
  if (body.byteLength !== expected) {
    throw new FuseProtocolError(`${what}: input is ${body.byteLength} bytes, expected ${expected}`);
  }
}

/** Takes the bytes after the last name: a security context when negotiated, else nothing. */
function securityContextAfter(
  body: Uint8Array,
  end: number,
  options: FuseDecodeOptions,
  what: string,
): FuseSecurityContextArgs {
  if (options.securityContext) return { securityContext: body.slice(end) };
  if (end !== body.byteLength) {
    throw new FuseProtocolError(
      `${what}: ${
        body.byteLength - end
      } bytes follow the name and no security context was negotiated`,
    );
  }
  return {};
}

/** LOOKUP, UNLINK, RMDIR: the body is one entry name and its NUL. */
export function decodeNameArgs(body: Uint8Array, options: FuseDecodeOptions = {}): FuseNameArgs {
  return { name: readLastFuseString(body, 0, "entry", "name", options.namesAsViews) };
}

/** READLINK, STATFS, DESTROY: the body must be empty. */
export function decodeEmptyArgs(body: Uint8Array): FuseEmptyArgs {
  expectLength("request without input", body, 0);
  return {};
}

/** FORGET. */
export function decodeForget(body: Uint8Array): FuseForgetArgs {
  return exactStruct(FUSE_FORGET_IN, body);
}

/** BATCH_FORGET: the count must match the entries present exactly. */
export function decodeBatchForget(body: Uint8Array): FuseBatchForgetArgs {
  const { count } = readStruct(FUSE_BATCH_FORGET_IN, body);
  expectLength(
    `fuse_batch_forget_in with ${count} entries`,
    body,
    FUSE_BATCH_FORGET_IN.size + count * FUSE_FORGET_ONE.size,
  );
  const entries: FuseForgetOne[] = [];
  for (let i = 0; i < count; i++) {
    entries.push(
      readStruct(FUSE_FORGET_ONE, body, FUSE_BATCH_FORGET_IN.size + i * FUSE_FORGET_ONE.size),
    );
  }
  return { count, entries };
}

/** GETATTR. */
export function decodeGetattr(body: Uint8Array): FuseGetattrArgs {
  return exactStruct(FUSE_GETATTR_IN, body);
}

/** SETATTR. */
export function decodeSetattr(body: Uint8Array): FuseSetattrArgs {
  return exactStruct(FUSE_SETATTR_IN, body);
}

/** SYMLINK: name, NUL, target, NUL (then a security context if negotiated). */
export function decodeSymlink(body: Uint8Array, options: FuseDecodeOptions = {}): FuseSymlinkArgs {
  const name = readFuseString(body, 0, "entry", "symlink name", options.namesAsViews);
  const target = readFuseString(body, name.end, "symlink", "symlink target", options.namesAsViews);
  return {
    name: name.bytes,
    target: target.bytes,
    ...securityContextAfter(body, target.end, options, "SYMLINK"),
  };
}

/** MKNOD: fuse_mknod_in then the name. */
export function decodeMknod(body: Uint8Array, options: FuseDecodeOptions = {}): FuseMknodArgs {
  const { mode, rdev, umask } = readStruct(FUSE_MKNOD_IN, body);
  const name = readFuseString(body, FUSE_MKNOD_IN.size, "entry", "name", options.namesAsViews);
  return {
    mode,
    rdev,
    umask,
    name: name.bytes,
    ...securityContextAfter(body, name.end, options, "MKNOD"),
  };
}

/** MKDIR: fuse_mkdir_in then the name. */
export function decodeMkdir(body: Uint8Array, options: FuseDecodeOptions = {}): FuseMkdirArgs {
  const { mode, umask } = readStruct(FUSE_MKDIR_IN, body);
  const name = readFuseString(body, FUSE_MKDIR_IN.size, "entry", "name", options.namesAsViews);
  return {
    mode,
    umask,
    name: name.bytes,
    ...securityContextAfter(body, name.end, options, "MKDIR"),
  };
}

/** RENAME: fuse_rename_in, old name, new name. */
export function decodeRename(body: Uint8Array, options: FuseDecodeOptions = {}): FuseRenameArgs {
  const { newdir } = readStruct(FUSE_RENAME_IN, body);
  const oldname = readFuseString(
    body,
    FUSE_RENAME_IN.size,
    "entry",
    "old name",
    options.namesAsViews,
  );
  const newname = readLastFuseString(body, oldname.end, "entry", "new name", options.namesAsViews);
  return { newdir, oldname: oldname.bytes, newname };
}

/** RENAME2: fuse_rename2_in, old name, new name. */
export function decodeRename2(body: Uint8Array, options: FuseDecodeOptions = {}): FuseRename2Args {
  const { newdir, flags } = readStruct(FUSE_RENAME2_IN, body);
  const oldname = readFuseString(
    body,
    FUSE_RENAME2_IN.size,
    "entry",
    "old name",
    options.namesAsViews,
  );
  const newname = readLastFuseString(body, oldname.end, "entry", "new name", options.namesAsViews);
  return { newdir, flags, oldname: oldname.bytes, newname };
}

/** LINK: fuse_link_in then the new name. */
export function decodeLink(body: Uint8Array, options: FuseDecodeOptions = {}): FuseLinkArgs {
  const { oldnodeid } = readStruct(FUSE_LINK_IN, body);
  return {
    oldnodeid,
    name: readLastFuseString(body, FUSE_LINK_IN.size, "entry", "name", options.namesAsViews),
  };
}

/** OPEN and OPENDIR. */
export function decodeOpen(body: Uint8Array): FuseOpenArgs {
  return exactStruct(FUSE_OPEN_IN, body);
}

/** CREATE: fuse_create_in then the name. */
export function decodeCreate(body: Uint8Array, options: FuseDecodeOptions = {}): FuseCreateArgs {
  const { flags, mode, umask, openFlags } = readStruct(FUSE_CREATE_IN, body);
  const name = readFuseString(body, FUSE_CREATE_IN.size, "entry", "name", options.namesAsViews);
  return {
    flags,
    mode,
    umask,
    openFlags,
    name: name.bytes,
    ...securityContextAfter(body, name.end, options, "CREATE"),
  };
}

/** READ, READDIR, READDIRPLUS. */
export function decodeRead(body: Uint8Array): FuseReadArgs {
  return exactStruct(FUSE_READ_IN, body);
}

/** WRITE: fuse_write_in then exactly `size` bytes of data. */
export function decodeWrite(body: Uint8Array): FuseWriteArgs {
  const write = readStruct(FUSE_WRITE_IN, body);
  expectLength(
    `fuse_write_in with size ${write.size}`,
    body,
    FUSE_WRITE_IN.size + write.size,
  );
  return { ...write, dataOffset: FUSE_WRITE_IN.size, dataLength: write.size };
}

/** RELEASE and RELEASEDIR. */
export function decodeRelease(body: Uint8Array): FuseReleaseArgs {
  return exactStruct(FUSE_RELEASE_IN, body);
}

/** FLUSH. */
export function decodeFlush(body: Uint8Array): FuseFlushArgs {
  return exactStruct(FUSE_FLUSH_IN, body);
}

/** FSYNC and FSYNCDIR. */
export function decodeFsync(body: Uint8Array): FuseFsyncArgs {
  return exactStruct(FUSE_FSYNC_IN, body);
}

/** SETXATTR: fuse_setxattr_in (16 or 8 bytes, see options), name, value of `size` bytes. */
export function decodeSetxattr(
  body: Uint8Array,
  options: FuseDecodeOptions = {},
): FuseSetxattrArgs {
  let head: { size: number; flags: number; setxattrFlags: number };
  let nameStart: number;
  if (options.setxattrExt) {
    head = readStruct(FUSE_SETXATTR_IN, body);
    nameStart = FUSE_SETXATTR_IN.size;
  } else {
    head = { ...readStruct(FUSE_SETXATTR_IN_COMPAT, body), setxattrFlags: 0 };
    nameStart = FUSE_SETXATTR_IN_COMPAT.size;
  }
  const name = readFuseString(body, nameStart, "xattr", "xattr name", options.namesAsViews);
  expectLength(`fuse_setxattr_in with size ${head.size}`, body, name.end + head.size);
  return { ...head, name: name.bytes, valueOffset: name.end, valueLength: head.size };
}

/** GETXATTR: fuse_getxattr_in then the name. */
export function decodeGetxattr(
  body: Uint8Array,
  options: FuseDecodeOptions = {},
): FuseGetxattrArgs {
  const { size } = readStruct(FUSE_GETXATTR_IN, body);
  return {
    size,
    name: readLastFuseString(
      body,
      FUSE_GETXATTR_IN.size,
      "xattr",
      "xattr name",
      options.namesAsViews,
    ),
  };
}

/** LISTXATTR: fuse_getxattr_in only. */
export function decodeListxattr(body: Uint8Array): FuseListxattrArgs {
  return exactStruct(FUSE_GETXATTR_IN, body);
}

/** REMOVEXATTR: the name only. */
export function decodeRemovexattr(
  body: Uint8Array,
  options: FuseDecodeOptions = {},
): FuseRemovexattrArgs {
  return { name: readLastFuseString(body, 0, "xattr", "xattr name", options.namesAsViews) };
}

/** GETLK, SETLK, SETLKW. */
export function decodeLk(body: Uint8Array): FuseLkArgs {
  return exactStruct(FUSE_LK_IN, body);
}

/** ACCESS. */
export function decodeAccess(body: Uint8Array): FuseAccessArgs {
  return exactStruct(FUSE_ACCESS_IN, body);
}

/**
 * INIT: the 64-byte form (with INIT_EXT in `flags`, as Linux 6.1 sends) or
 * the 16-byte form of older kernels (without INIT_EXT; `flags2` is then 0).
 */
export function decodeInit(body: Uint8Array): FuseInitArgs {
  if (body.byteLength === FUSE_INIT_IN_COMPAT.size) {
    const compat = readStruct(FUSE_INIT_IN_COMPAT, body);
    if (compat.flags & FuseInitFlag.INIT_EXT) {
      throw new FuseProtocolError("fuse_init_in: INIT_EXT set in a 16-byte fuse_init_in");
    }
    return { ...compat, flags2: 0 };
  }
  const init = exactStruct(FUSE_INIT_IN, body);
  return (init.flags & FuseInitFlag.INIT_EXT) ? init : { ...init, flags2: 0 };
}

/** INTERRUPT. */
export function decodeInterrupt(body: Uint8Array): FuseInterruptArgs {
  return exactStruct(FUSE_INTERRUPT_IN, body);
}

/** FALLOCATE. */
export function decodeFallocate(body: Uint8Array): FuseFallocateArgs {
  return exactStruct(FUSE_FALLOCATE_IN, body);
}

/** LSEEK. */
export function decodeLseek(body: Uint8Array): FuseLseekArgs {
  return exactStruct(FUSE_LSEEK_IN, body);
}

/** COPY_FILE_RANGE. */
export function decodeCopyFileRange(body: Uint8Array): FuseCopyFileRangeArgs {
  return exactStruct(FUSE_COPY_FILE_RANGE_IN, body);
}

/** SYNCFS: fuse_syncfs_in holds only padding. */
export function decodeSyncfs(body: Uint8Array): FuseEmptyArgs {
  exactStruct(FUSE_SYNCFS_IN, body);
  return {};
}

type Decoder<K extends FuseDecodableOpcode> = (
  body: Uint8Array,
  options: FuseDecodeOptions,
) => FuseArgsByOpcode[K];

const DECODERS: { readonly [K in FuseDecodableOpcode]: Decoder<K> } = {
  [FuseOpcode.LOOKUP]: decodeNameArgs,
  [FuseOpcode.FORGET]: decodeForget,
  [FuseOpcode.GETATTR]: decodeGetattr,
  [FuseOpcode.SETATTR]: decodeSetattr,
  [FuseOpcode.READLINK]: decodeEmptyArgs,
  [FuseOpcode.SYMLINK]: decodeSymlink,
  [FuseOpcode.MKNOD]: decodeMknod,
  [FuseOpcode.MKDIR]: decodeMkdir,
  [FuseOpcode.UNLINK]: decodeNameArgs,
  [FuseOpcode.RMDIR]: decodeNameArgs,
  [FuseOpcode.RENAME]: decodeRename,
  [FuseOpcode.LINK]: decodeLink,
  [FuseOpcode.OPEN]: decodeOpen,
  [FuseOpcode.READ]: decodeRead,
  [FuseOpcode.WRITE]: decodeWrite,
  [FuseOpcode.STATFS]: decodeEmptyArgs,
  [FuseOpcode.RELEASE]: decodeRelease,
  [FuseOpcode.FSYNC]: decodeFsync,
  [FuseOpcode.SETXATTR]: decodeSetxattr,
  [FuseOpcode.GETXATTR]: decodeGetxattr,
  [FuseOpcode.LISTXATTR]: decodeListxattr,
  [FuseOpcode.REMOVEXATTR]: decodeRemovexattr,
  [FuseOpcode.FLUSH]: decodeFlush,
  [FuseOpcode.INIT]: decodeInit,
  [FuseOpcode.OPENDIR]: decodeOpen,
  [FuseOpcode.READDIR]: decodeRead,
  [FuseOpcode.RELEASEDIR]: decodeRelease,
  [FuseOpcode.FSYNCDIR]: decodeFsync,
  [FuseOpcode.GETLK]: decodeLk,
  [FuseOpcode.SETLK]: decodeLk,
  [FuseOpcode.SETLKW]: decodeLk,
  [FuseOpcode.ACCESS]: decodeAccess,
  [FuseOpcode.CREATE]: decodeCreate,
  [FuseOpcode.INTERRUPT]: decodeInterrupt,
  [FuseOpcode.DESTROY]: decodeEmptyArgs,
  [FuseOpcode.BATCH_FORGET]: decodeBatchForget,
  [FuseOpcode.FALLOCATE]: decodeFallocate,
  [FuseOpcode.READDIRPLUS]: decodeRead,
  [FuseOpcode.RENAME2]: decodeRename2,
  [FuseOpcode.LSEEK]: decodeLseek,
  [FuseOpcode.COPY_FILE_RANGE]: decodeCopyFileRange,
  [FuseOpcode.SYNCFS]: decodeSyncfs,
};

const DECODER_MAP: ReadonlyMap<number, (body: Uint8Array, options: FuseDecodeOptions) => unknown> =
  new Map(Object.entries(DECODERS).map(([opcode, decoder]) => [Number(opcode), decoder]));

/** The opcodes {@linkcode decodeArgs} understands, in ascending order. */
export const DECODABLE_OPCODES: readonly FuseDecodableOpcode[] = [...DECODER_MAP.keys()]
  .sort((a, b) => a - b) as FuseDecodableOpcode[];

/** True when {@linkcode decodeArgs} has a decoder for `opcode`. */
export function isDecodableOpcode(opcode: number): opcode is FuseDecodableOpcode {
  return DECODER_MAP.has(opcode);
}

/**
 * Decodes the op-specific input of a request. Throws FuseProtocolError
 * (EINVAL) or FuseNameError for bad input, FuseUnsupportedOpcodeError
 * (ENOSYS) for opcodes without a decoder (BMAP, IOCTL, POLL, NOTIFY_REPLY,
 * SETUPMAPPING, REMOVEMAPPING, TMPFILE and unknown numbers).
 */
export function decodeArgs(
  opcode: number,
  body: Uint8Array,
  options: FuseDecodeOptions = {},
): FuseRequestArgs {
  const decoder = DECODER_MAP.get(opcode);
  if (decoder === undefined) throw new FuseUnsupportedOpcodeError(opcode, opcodeName(opcode));
  return { opcode, args: decoder(body, options) } as FuseRequestArgs;
}

/** The errno a caller answers with for an exception thrown by this module (EIO for anything else). */
export function errnoOfDecodeError(error: unknown): number {
  return error instanceof FuseProtocolError ? error.errno : FuseErrno.EIO;
}
