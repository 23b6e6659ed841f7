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
import { writeStruct } from "./fuse_struct.ts";

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

/** A string followed by its NUL. */
export function nulTerminated(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.byteLength + 1);
  out.set(bytes);
  return out;
}

type Encoder<K extends FuseDecodableOpcode> = (
  args: FuseArgsInputByOpcode[K],
  options: FuseDecodeOptions,
) => Uint8Array[];

function securityContextPart(
  args: { securityContext?: Uint8Array },
  options: FuseDecodeOptions,
): Uint8Array[] {
  if (!options.securityContext) return [];
  return [args.securityContext ?? new Uint8Array(0)];
}

const NO_INPUT = (): Uint8Array[] => [];
const NAME_ONLY = (args: { name: Uint8Array }): Uint8Array[] => [nulTerminated(args.name)];
const OPEN = (args: FuseArgsByOpcode[typeof FuseOpcode.OPEN]) => [writeStruct(FUSE_OPEN_IN, args)];
const READ = (args: FuseArgsByOpcode[typeof FuseOpcode.READ]) => [writeStruct(FUSE_READ_IN, args)];
const RELEASE = (args: FuseArgsByOpcode[typeof FuseOpcode.RELEASE]) => [
  writeStruct(FUSE_RELEASE_IN, args),
];
const FSYNC = (args: FuseArgsByOpcode[typeof FuseOpcode.FSYNC]) => [
  writeStruct(FUSE_FSYNC_IN, args),
];
const LK = (args: FuseArgsByOpcode[typeof FuseOpcode.GETLK]) => [writeStruct(FUSE_LK_IN, args)];

const ENCODERS: { readonly [K in FuseDecodableOpcode]: Encoder<K> } = {
  [FuseOpcode.LOOKUP]: NAME_ONLY,
  [FuseOpcode.FORGET]: (args) => [writeStruct(FUSE_FORGET_IN, args)],
  [FuseOpcode.GETATTR]: (args) => [writeStruct(FUSE_GETATTR_IN, args)],
  [FuseOpcode.SETATTR]: (args) => [writeStruct(FUSE_SETATTR_IN, args)],
  [FuseOpcode.READLINK]: NO_INPUT,
  [FuseOpcode.SYMLINK]: (args, options) => [
    nulTerminated(args.name),
    nulTerminated(args.target),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.MKNOD]: (args, options) => [
    writeStruct(FUSE_MKNOD_IN, args),
    nulTerminated(args.name),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.MKDIR]: (args, options) => [
    writeStruct(FUSE_MKDIR_IN, args),
    nulTerminated(args.name),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.UNLINK]: NAME_ONLY,
  [FuseOpcode.RMDIR]: NAME_ONLY,
  [FuseOpcode.RENAME]: (args) => [
    writeStruct(FUSE_RENAME_IN, args),
    nulTerminated(args.oldname),
    nulTerminated(args.newname),
  ],
  [FuseOpcode.LINK]: (args) => [writeStruct(FUSE_LINK_IN, args), nulTerminated(args.name)],
  [FuseOpcode.OPEN]: OPEN,
  [FuseOpcode.READ]: READ,
  [FuseOpcode.WRITE]: (args) => [
    writeStruct(FUSE_WRITE_IN, { ...args, size: args.data.byteLength }),
    args.data,
  ],
  [FuseOpcode.STATFS]: NO_INPUT,
  [FuseOpcode.RELEASE]: RELEASE,
  [FuseOpcode.FSYNC]: FSYNC,
  [FuseOpcode.SETXATTR]: (args, options) => {
    const head = { size: args.value.byteLength, flags: args.flags };
    const struct = options.setxattrExt
      ? writeStruct(FUSE_SETXATTR_IN, { ...head, setxattrFlags: args.setxattrFlags ?? 0 })
      : writeStruct(FUSE_SETXATTR_IN_COMPAT, head);
    return [struct, nulTerminated(args.name), args.value];
  },
  [FuseOpcode.GETXATTR]: (args) => [writeStruct(FUSE_GETXATTR_IN, args), nulTerminated(args.name)],
  [FuseOpcode.LISTXATTR]: (args) => [writeStruct(FUSE_GETXATTR_IN, args)],
  [FuseOpcode.REMOVEXATTR]: NAME_ONLY,
  [FuseOpcode.FLUSH]: (args) => [writeStruct(FUSE_FLUSH_IN, args)],
  [FuseOpcode.INIT]: (args) => [writeStruct(FUSE_INIT_IN, args)],
  [FuseOpcode.OPENDIR]: OPEN,
  [FuseOpcode.READDIR]: READ,
  [FuseOpcode.RELEASEDIR]: RELEASE,
  [FuseOpcode.FSYNCDIR]: FSYNC,
  [FuseOpcode.GETLK]: LK,
  [FuseOpcode.SETLK]: LK,
  [FuseOpcode.SETLKW]: LK,
  [FuseOpcode.ACCESS]: (args) => [writeStruct(FUSE_ACCESS_IN, args)],
  [FuseOpcode.CREATE]: (args, options) => [
    writeStruct(FUSE_CREATE_IN, args),
    nulTerminated(args.name),
    ...securityContextPart(args, options),
  ],
  [FuseOpcode.INTERRUPT]: (args) => [writeStruct(FUSE_INTERRUPT_IN, args)],
  [FuseOpcode.DESTROY]: NO_INPUT,
  [FuseOpcode.BATCH_FORGET]: (args) => [
    writeStruct(FUSE_BATCH_FORGET_IN, { count: args.entries.length }),
    ...args.entries.map((entry) => writeStruct(FUSE_FORGET_ONE, entry)),
  ],
  [FuseOpcode.FALLOCATE]: (args) => [writeStruct(FUSE_FALLOCATE_IN, args)],
  [FuseOpcode.READDIRPLUS]: READ,
  [FuseOpcode.RENAME2]: (args) => [
    writeStruct(FUSE_RENAME2_IN, args),
    nulTerminated(args.oldname),
    nulTerminated(args.newname),
  ],
  [FuseOpcode.LSEEK]: (args) => [writeStruct(FUSE_LSEEK_IN, args)],
  [FuseOpcode.COPY_FILE_RANGE]: (args) => [writeStruct(FUSE_COPY_FILE_RANGE_IN, args)],
  [FuseOpcode.SYNCFS]: () => [writeStruct(FUSE_SYNCFS_IN, {})],
};

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
  const encoder = ENCODERS[opcode] as Encoder<K> | undefined;
  if (encoder === undefined) throw new RangeError(`no encoder for FUSE opcode ${opcode}`);
  const parts = encoder(args, options);
  const len = parts.reduce((sum, part) => sum + part.byteLength, FUSE_IN_HEADER.size);
  const request = new Uint8Array(len);
  encodeInHeader(header, opcode, len, request);
  let at = FUSE_IN_HEADER.size;
  for (const part of parts) {
    request.set(part, at);
    at += part.byteLength;
  }
  return request;
}
