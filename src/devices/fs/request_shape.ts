/**
 * virtio-fs: what the request handler knows of a FUSE request before it
 * decodes one — the opcodes it serves, its size limits, and where the
 * fields it reads in place (READ, WRITE, GETATTR, FORGET, RELEASE) lie.
 *
 * @module
 */

import { XATTR_NAME_MAX, XATTR_SIZE_MAX } from "../../../ffi/mod.ts";
import {
  FUSE_FORGET_IN,
  FUSE_GETATTR_IN,
  FUSE_IN_HEADER,
  FUSE_READ_IN,
  FUSE_RELEASE_IN,
  FUSE_SETXATTR_IN,
  FUSE_WRITE_IN,
  FuseOpcode,
} from "./fuse/mod.ts";

/** Extended attribute opcodes: ENOSYS before decoding unless the options serve xattrs. */
export const XATTR_OPCODES: ReadonlySet<number> = new Set<number>([
  FuseOpcode.GETXATTR,
  FuseOpcode.LISTXATTR,
  FuseOpcode.SETXATTR,
  FuseOpcode.REMOVEXATTR,
]);

/** The opcodes served; every other one is answered with ENOSYS. */
export const SUPPORTED_OPCODES: ReadonlySet<number> = new Set<number>([
  FuseOpcode.INIT,
  FuseOpcode.DESTROY,
  FuseOpcode.LOOKUP,
  FuseOpcode.FORGET,
  FuseOpcode.BATCH_FORGET,
  FuseOpcode.GETATTR,
  FuseOpcode.SETATTR,
  FuseOpcode.READLINK,
  FuseOpcode.SYMLINK,
  FuseOpcode.MKNOD,
  FuseOpcode.MKDIR,
  FuseOpcode.UNLINK,
  FuseOpcode.RMDIR,
  FuseOpcode.RENAME,
  FuseOpcode.RENAME2,
  FuseOpcode.LINK,
  FuseOpcode.OPEN,
  FuseOpcode.READ,
  FuseOpcode.WRITE,
  FuseOpcode.STATFS,
  FuseOpcode.RELEASE,
  FuseOpcode.FSYNC,
  FuseOpcode.FLUSH,
  FuseOpcode.OPENDIR,
  FuseOpcode.READDIR,
  FuseOpcode.READDIRPLUS,
  FuseOpcode.RELEASEDIR,
  FuseOpcode.FSYNCDIR,
  FuseOpcode.ACCESS,
  FuseOpcode.CREATE,
  FuseOpcode.FALLOCATE,
  FuseOpcode.LSEEK,
  FuseOpcode.INTERRUPT,
  ...XATTR_OPCODES,
]);

/** Requests other than WRITE are small: the longest is SYMLINK (two names, ~4.4 KiB). */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** SETXATTR carries a value of up to XATTR_SIZE_MAX after its name; a longer one is E2BIG. */
export const MAX_SETXATTR_REQUEST_BYTES = FUSE_IN_HEADER.size + FUSE_SETXATTR_IN.size +
  XATTR_NAME_MAX +
  1 + XATTR_SIZE_MAX;

/** Size of WRITE's fixed part: fuse_in_header + fuse_write_in. */
export const WRITE_HEADER_SIZE = FUSE_IN_HEADER.size + FUSE_WRITE_IN.size;
/** Where fuse_in_header's fields are, for reading the few a request needs straight from its bytes. */
export const IN_HEADER = FUSE_IN_HEADER.offsets;
/** READ's fh, offset and size, from the request's start. */
export const READ_IN_FH = FUSE_IN_HEADER.size + FUSE_READ_IN.offsets.fh;
/** READ's offset (see READ_IN_FH). */
export const READ_IN_OFFSET = FUSE_IN_HEADER.size + FUSE_READ_IN.offsets.offset;
/** READ's size (see READ_IN_FH). */
export const READ_IN_SIZE = FUSE_IN_HEADER.size + FUSE_READ_IN.offsets.size;
/** WRITE's fh, offset, size and write flags, from the request's start. */
export const WRITE_IN_FH = FUSE_IN_HEADER.size + FUSE_WRITE_IN.offsets.fh;
/** WRITE's offset (see WRITE_IN_FH). */
export const WRITE_IN_OFFSET = FUSE_IN_HEADER.size + FUSE_WRITE_IN.offsets.offset;
/** WRITE's size (see WRITE_IN_FH). */
export const WRITE_IN_SIZE = FUSE_IN_HEADER.size + FUSE_WRITE_IN.offsets.size;
/** WRITE's write flags (see WRITE_IN_FH). */
export const WRITE_IN_WRITE_FLAGS = FUSE_IN_HEADER.size + FUSE_WRITE_IN.offsets.writeFlags;
/** GETATTR's getattr flags and fh, from the request's start. */
export const GETATTR_IN_FLAGS = FUSE_IN_HEADER.size + FUSE_GETATTR_IN.offsets.getattrFlags;
/** GETATTR's fh (see GETATTR_IN_FLAGS). */
export const GETATTR_IN_FH = FUSE_IN_HEADER.size + FUSE_GETATTR_IN.offsets.fh;
/** A GETATTR request's length: fuse_in_header + fuse_getattr_in. */
export const GETATTR_REQUEST_SIZE = FUSE_IN_HEADER.size + FUSE_GETATTR_IN.size;
/** FORGET's nlookup, from the request's start. */
export const FORGET_IN_NLOOKUP = FUSE_IN_HEADER.size + FUSE_FORGET_IN.offsets.nlookup;
/** A FORGET request's length: fuse_in_header + fuse_forget_in. */
export const FORGET_REQUEST_SIZE = FUSE_IN_HEADER.size + FUSE_FORGET_IN.size;
/** RELEASE's fh, from the request's start. */
export const RELEASE_IN_FH = FUSE_IN_HEADER.size + FUSE_RELEASE_IN.offsets.fh;
/** A RELEASE request's length: fuse_in_header + fuse_release_in. */
export const RELEASE_REQUEST_SIZE = FUSE_IN_HEADER.size + FUSE_RELEASE_IN.size;
/** A READ request's length: fuse_in_header + fuse_read_in (it fits in the head buffer). */
export const READ_REQUEST_SIZE = FUSE_IN_HEADER.size + FUSE_READ_IN.size;
/**
 * READ and WRITE work with file offsets as numbers, exact below 2^53: from
 * there up (a high word of 2^21 or more) a READ is past the end of every
 * file vhostd shares and a WRITE is EFBIG.
 */
export const PAST_END_HIGH = 0x20_0000;
/** pread/pwrite take an off_t: an offset from 2^63 up (high word 2^31 and more) is EINVAL on the host too. */
export const OFF_T_LIMIT_HIGH = 0x8000_0000;

/** DESTROY and INIT (of a new session) close every open handle. */
export function closesEveryHandle(opcode: number): boolean {
  return opcode === FuseOpcode.DESTROY || opcode === FuseOpcode.INIT;
}

/**
 * True for a request of exactly `size` bytes (by its header and by what was
 * read into the head buffer) without extensions: the shape the READ,
 * GETATTR, FORGET and RELEASE fast paths read in place; any other goes the
 * general way.
 */
export function isPlain(len: number, totalExtlen: number, got: number, size: number): boolean {
  return len === size && totalExtlen === 0 && got === size;
}

/** FORGET, BATCH_FORGET and INTERRUPT: the guest waits for no reply. */
export function hasNoReply(opcode: number): boolean {
  return opcode === FuseOpcode.FORGET || opcode === FuseOpcode.BATCH_FORGET ||
    opcode === FuseOpcode.INTERRUPT;
}
