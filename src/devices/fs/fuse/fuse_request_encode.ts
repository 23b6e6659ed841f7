/**
 * The driver's side of requests: builds FUSE requests as the guest kernel
 * lays them out. Used by tests and by TypeScript front-ends that drive a
 * virtio-fs device; the back-end itself only decodes.
 *
 * @module
 */

import { FuseOpcode } from "./fuse_abi.ts";
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
import type {
  FuseArgsByOpcode,
  FuseDecodableOpcode,
  FuseDecodeOptions,
  FuseForgetOne,
  FuseWriteArgs,
} from "./fuse_request.ts";
import { type FieldSpec, type StructInput, type StructLayout, writeStruct } from "./fuse_struct.ts";

/** Header fields a driver chooses; `len` is computed and `totalExtlen` is 0. */
export interface FuseInHeaderInput {
  /** Request id. */
  unique: bigint | number;
  /** Target inode. */
  nodeid: bigint | number;
  /** Caller's uid (default 0). */
  uid?: number;
  /** Caller's gid (default 0). */
  gid?: number;
  /** Caller's pid (default 0). */
  pid?: number;
}

/** WRITE as a driver gives it: the data instead of its offset. */
export interface FuseWriteInput extends Omit<FuseWriteArgs, "size" | "dataOffset" | "dataLength"> {
  /** The bytes to write (`size` is their length). */
  data: Uint8Array;
}

/** SETXATTR as a driver gives it. */
export interface FuseSetxattrInput {
  /** XATTR_CREATE / XATTR_REPLACE. */
  flags: number;
  /** FuseSetxattrFlag bits, sent only with `setxattrExt`. */
  setxattrFlags?: number;
  /** Attribute name. */
  name: Uint8Array;
  /** Attribute value. */
  value: Uint8Array;
}

/** BATCH_FORGET as a driver gives it (`count` is the number of entries). */
export interface FuseBatchForgetInput {
  /** Entries to forget. */
  entries: readonly FuseForgetOne[];
}

/** Per-opcode input accepted by {@linkcode encodeRequest}. */
export type FuseArgsInputByOpcode =
  & Omit<
    FuseArgsByOpcode,
    typeof FuseOpcode.WRITE | typeof FuseOpcode.SETXATTR | typeof FuseOpcode.BATCH_FORGET
  >
  & {
    /** Input of WRITE. */
    [FuseOpcode.WRITE]: FuseWriteInput;
    /** Input of SETXATTR. */
    [FuseOpcode.SETXATTR]: FuseSetxattrInput;
    /** Input of BATCH_FORGET. */
    [FuseOpcode.BATCH_FORGET]: FuseBatchForgetInput;
  };

/** Writes a `fuse_in_header` with the given total length. */
export function encodeInHeader(
  header: FuseInHeaderInput,
  opcode: number,
  len: number,
  target?: Uint8Array,
  offset = 0,
): Uint8Array {
  return writeStruct(
    FUSE_IN_HEADER,
    {
      len,
      opcode,
      unique: header.unique,
      nodeid: header.nodeid,
      uid: header.uid ?? 0,
      gid: header.gid ?? 0,
      pid: header.pid ?? 0,
      totalExtlen: 0,
      padding: 0,
    },
    target,
    offset,
  );
}

/**
 * One piece of a request after its header, described rather than encoded:
 * bytes copied as they are, a struct, or a name followed by its NUL. The
 * request is then written in one pass into its own array (encodeRequest) or
 * into the caller's (encodeRequestInto), with no array per piece: a driver
 * keeping many requests in flight encodes each straight into its buffer.
 */
type RequestPart =
  | Uint8Array
  | { readonly layout: StructLayout<readonly FieldSpec[]>; readonly value: unknown }
  | { readonly name: Uint8Array };

function struct<F extends readonly FieldSpec[]>(
  layout: StructLayout<F>,
  value: StructInput<F>,
): RequestPart {
  return { layout: layout as StructLayout<readonly FieldSpec[]>, value };
}

function named(bytes: Uint8Array): RequestPart {
  return { name: bytes };
}

function partLength(part: RequestPart): number {
  if (part instanceof Uint8Array) return part.byteLength;
  return "name" in part ? part.name.byteLength + 1 : part.layout.size;
}

/** Writes `part` at `at` in `target` (which has room for it); returns its length. */
function writePart(part: RequestPart, target: Uint8Array, at: number): number {
  if (part instanceof Uint8Array) {
    target.set(part, at);
    return part.byteLength;
  }
  if ("name" in part) {
    target.set(part.name, at);
    target[at + part.name.byteLength] = 0;
    return part.name.byteLength + 1;
  }
  writeStruct(part.layout, part.value as StructInput<readonly FieldSpec[]>, target, at);
  return part.layout.size;
}

type Encoder<K extends FuseDecodableOpcode> = (
  args: FuseArgsInputByOpcode[K],
  options: FuseDecodeOptions,
) => RequestPart[];

function securityContextPart(
  args: { securityContext?: Uint8Array },
  options: FuseDecodeOptions,
): RequestPart[] {
  if (!options.securityContext) return [];
  return [args.securityContext ?? new Uint8Array(0)];
}

const NO_INPUT = (): RequestPart[] => [];
const NAME_ONLY = (args: { name: Uint8Array }): RequestPart[] => [named(args.name)];
const OPEN = (args: FuseArgsByOpcode[typeof FuseOpcode.OPEN]) => [struct(FUSE_OPEN_IN, args)];
const READ = (args: FuseArgsByOpcode[typeof FuseOpcode.READ]) => [struct(FUSE_READ_IN, args)];
const RELEASE = (args: FuseArgsByOpcode[typeof FuseOpcode.RELEASE]) => [
  struct(FUSE_RELEASE_IN, args),
];
const FSYNC = (args: FuseArgsByOpcode[typeof FuseOpcode.FSYNC]) => [
  struct(FUSE_FSYNC_IN, args),
];
const LK = (args: FuseArgsByOpcode[typeof FuseOpcode.GETLK]) => [struct(FUSE_LK_IN, args)];

const ENCODERS: { readonly [K in FuseDecodableOpcode]: Encoder<K> } = {
  [FuseOpcode.LOOKUP]: NAME_ONLY,
  [FuseOpcode.FORGET]: (args) => [struct(FUSE_FORGET_IN, args)],
  [FuseOpcode.GETATTR]: (args) => [struct(FUSE_GETATTR_IN, args)],
  [FuseOpcode.SETATTR]: (args) => [struct(FUSE_SETATTR_IN, args)],
  [FuseOpcode.READLINK]: NO_INPUT,
  [FuseOpcode.SYMLINK]: (args, options) => [
    named(args.name),
    named(args.target),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.MKNOD]: (args, options) => [
    struct(FUSE_MKNOD_IN, args),
    named(args.name),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.MKDIR]: (args, options) => [
    struct(FUSE_MKDIR_IN, args),
    named(args.name),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.UNLINK]: NAME_ONLY,
  [FuseOpcode.RMDIR]: NAME_ONLY,
  [FuseOpcode.RENAME]: (args) => [
    struct(FUSE_RENAME_IN, args),
    named(args.oldname),
    named(args.newname),
  ],
  [FuseOpcode.LINK]: (args) => [struct(FUSE_LINK_IN, args), named(args.name)],
  [FuseOpcode.OPEN]: OPEN,
  [FuseOpcode.READ]: READ,
  [FuseOpcode.WRITE]: (args) => [
    struct(FUSE_WRITE_IN, { ...args, size: args.data.byteLength }),
    args.data,
  ],
  [FuseOpcode.STATFS]: NO_INPUT,
  [FuseOpcode.RELEASE]: RELEASE,
  [FuseOpcode.FSYNC]: FSYNC,
  [FuseOpcode.SETXATTR]: (args, options) => {
    const head = { size: args.value.byteLength, flags: args.flags };
    const fixed = options.setxattrExt
      ? struct(FUSE_SETXATTR_IN, { ...head, setxattrFlags: args.setxattrFlags ?? 0 })
      : struct(FUSE_SETXATTR_IN_COMPAT, head);
    return [fixed, named(args.name), args.value];
  },
  [FuseOpcode.GETXATTR]: (args) => [struct(FUSE_GETXATTR_IN, args), named(args.name)],
  [FuseOpcode.LISTXATTR]: (args) => [struct(FUSE_GETXATTR_IN, args)],
  [FuseOpcode.REMOVEXATTR]: NAME_ONLY,
  [FuseOpcode.FLUSH]: (args) => [struct(FUSE_FLUSH_IN, args)],
  [FuseOpcode.INIT]: (args) => [struct(FUSE_INIT_IN, args)],
  [FuseOpcode.OPENDIR]: OPEN,
  [FuseOpcode.READDIR]: READ,
  [FuseOpcode.RELEASEDIR]: RELEASE,
  [FuseOpcode.FSYNCDIR]: FSYNC,
  [FuseOpcode.GETLK]: LK,
  [FuseOpcode.SETLK]: LK,
  [FuseOpcode.SETLKW]: LK,
  [FuseOpcode.ACCESS]: (args) => [struct(FUSE_ACCESS_IN, args)],
  [FuseOpcode.CREATE]: (args, options) => [
    struct(FUSE_CREATE_IN, args),
    named(args.name),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.INTERRUPT]: (args) => [struct(FUSE_INTERRUPT_IN, args)],
  [FuseOpcode.DESTROY]: NO_INPUT,
  [FuseOpcode.BATCH_FORGET]: (args) => [
    struct(FUSE_BATCH_FORGET_IN, { count: args.entries.length }),
    ...args.entries.map((entry) => struct(FUSE_FORGET_ONE, entry)),
  ],
  [FuseOpcode.FALLOCATE]: (args) => [struct(FUSE_FALLOCATE_IN, args)],
  [FuseOpcode.READDIRPLUS]: READ,
  [FuseOpcode.RENAME2]: (args) => [
    struct(FUSE_RENAME2_IN, args),
    named(args.oldname),
    named(args.newname),
  ],
  [FuseOpcode.LSEEK]: (args) => [struct(FUSE_LSEEK_IN, args)],
  [FuseOpcode.COPY_FILE_RANGE]: (args) => [struct(FUSE_COPY_FILE_RANGE_IN, args)],
  [FuseOpcode.SYNCFS]: () => [struct(FUSE_SYNCFS_IN, {})],
};

function requestParts<K extends FuseDecodableOpcode>(
  opcode: K,
  args: FuseArgsInputByOpcode[K],
  options: FuseDecodeOptions,
): RequestPart[] {
  const encoder = ENCODERS[opcode] as Encoder<K> | undefined;
  if (encoder === undefined) throw new RangeError(`no encoder for FUSE opcode ${opcode}`);
  return encoder(args, options);
}

function writeRequest(
  header: FuseInHeaderInput,
  opcode: number,
  parts: readonly RequestPart[],
  len: number,
  target: Uint8Array,
  offset: number,
): void {
  encodeInHeader(header, opcode, len, target, offset);
  let at = offset + FUSE_IN_HEADER.size;
  for (const part of parts) at += writePart(part, target, at);
}

function requestLength(parts: readonly RequestPart[]): number {
  let len = FUSE_IN_HEADER.size;
  for (const part of parts) len += partLength(part);
  return len;
}

/**
 * Builds a whole request: `fuse_in_header` (len computed) and the opcode's
 * input as the kernel lays it out. `options` selects the same negotiated
 * layouts as the decoder's.
 */
export function encodeRequest<K extends FuseDecodableOpcode>(
  opcode: K,
  header: FuseInHeaderInput,
  args: FuseArgsInputByOpcode[K],
  options: FuseDecodeOptions = {},
): Uint8Array {
  const parts = requestParts(opcode, args, options);
  const request = new Uint8Array(requestLength(parts));
  writeRequest(header, opcode, parts, request.byteLength, request, 0);
  return request;
}

/**
 * {@linkcode encodeRequest} into `target` at `offset` (a driver's request
 * buffer in guest memory: no array is made for the request or its parts);
 * returns the request's length.
 *
 * @throws {RangeError} when the request does not fit, before anything is written
 */
export function encodeRequestInto<K extends FuseDecodableOpcode>(
  opcode: K,
  header: FuseInHeaderInput,
  args: FuseArgsInputByOpcode[K],
  target: Uint8Array,
  offset = 0,
  options: FuseDecodeOptions = {},
): number {
  const parts = requestParts(opcode, args, options);
  const len = requestLength(parts);
  if (!(offset >= 0) || offset + len > target.byteLength) {
    throw new RangeError(
      `a ${len}-byte request does not fit at ${offset} in ${target.byteLength} bytes`,
    );
  }
  writeRequest(header, opcode, parts, len, target, offset);
  return len;
}
