/**
 * virtio-fs: a decoded FUSE request answered by one call of the filesystem
 * core, and the reply body encoded from what the core returned. Every
 * opcode but the five the request handler keeps (INIT and DESTROY, which
 * change the session, READ and WRITE, whose data moves straight between
 * guest buffers and the host file, and RELEASE, which waits for the I/O in
 * flight on its handle) comes through here. No guest bytes are
 * parsed here: the request is decoded already, and the core checks names,
 * node ids and handles itself.
 *
 * @module
 */

import { ENOSYS } from "../../../ffi/mod.ts";
import {
  encodeAttrOut,
  encodeEntryOut,
  encodeGetxattrOut,
  encodeLseekOut,
  encodeOpenOut,
  encodeReadlinkReply,
  encodeStatfsOut,
  FUSE_ATTR_OUT,
  FUSE_ENTRY_OUT,
  FUSE_OPEN_OUT,
  FUSE_OUT_HEADER,
  FuseFsyncFlag,
  FuseGetattrFlag,
  FuseOpcode,
  FuseOpenInFlag,
  type FuseRequestArgs,
} from "./fuse/mod.ts";
import {
  type AttrResult,
  type Caller,
  entryOut,
  type EntryResult,
  FsError,
  type FsOptions,
  type OpenResult,
  type PassthroughFs,
  splitTimeout,
  type XattrReply,
} from "./passthrough/mod.ts";

/**
 * The filesystem core as the handler uses it: PassthroughFs, or a test
 * double of the same shape. Guest-visible failures are thrown as FsError;
 * anything else is a bug (EIO and a log line).
 */
export type FileSystem = Pick<
  PassthroughFs,
  | "init"
  | "destroy"
  | "close"
  | "lookup"
  | "lookupInto"
  | "forget"
  | "batchForget"
  | "getattr"
  | "getattrInto"
  | "setattr"
  | "readlink"
  | "symlink"
  | "mknod"
  | "mkdir"
  | "unlink"
  | "rmdir"
  | "rename"
  | "link"
  | "open"
  | "createInto"
  | "readFd"
  | "asyncWriteFd"
  | "dropDirectWriter"
  | "write"
  | "statfs"
  | "release"
  | "flush"
  | "fsync"
  | "opendir"
  | "readdir"
  | "releasedir"
  | "fsyncdir"
  | "access"
  | "fallocate"
  | "lseek"
  | "getxattr"
  | "listxattr"
  | "setxattr"
  | "removexattr"
  | "snapshot"
  | "restore"
>;

/** Builds a filesystem core over the shared directory. */
export type FileSystemFactory = (options: FsOptions) => FileSystem;

/** No reply is expected: the used element gets length 0. */
export const NO_REPLY = Symbol("no reply");

/** A successful reply body: one or more parts after the out header, or none at all. */
export type ReplyBody = Uint8Array | readonly Uint8Array[] | typeof NO_REPLY;

/** The empty reply body of a success without payload. */
export const EMPTY = new Uint8Array(0);

/** Views of `size` bytes after the out header of the reply buffer they were made of, by size. */
const viewsAfterHeader: (Uint8Array | undefined)[] = [];

/**
 * The `size` bytes after the out header of `reply`, where an in-place reply
 * body was written: one view per size for as long as the handler keeps its
 * reply buffer (a typed array made per request costs as much as the encoding).
 */
function afterHeader(reply: Uint8Array, size: number): Uint8Array {
  const at = FUSE_OUT_HEADER.size;
  const kept = viewsAfterHeader[size];
  if (
    kept !== undefined && kept.buffer === reply.buffer && kept.byteOffset === reply.byteOffset + at
  ) {
    return kept;
  }
  return viewsAfterHeader[size] = reply.subarray(at, at + size);
}

/** fuse_attr_out of `result`, encoded in place after the out header of `reply`. */
function attrOut(result: AttrResult, reply: Uint8Array): Uint8Array {
  const valid = splitTimeout(result.attrTimeoutSec);
  return encodeAttrOut(
    { attrValid: valid.sec, attrValidNsec: valid.nsec, attr: result.attr },
    reply,
    FUSE_OUT_HEADER.size,
  );
}

/**
 * GETATTR's reply body: fuse_attr_out of `nodeid`, through the open handle
 * `fh` when `getattrFlags` has FUSE_GETATTR_FH, encoded in place after the
 * out header of `reply`. (The request handler calls it straight for the
 * common 56-byte GETATTR; every other shape comes through callCore.)
 */
export function getattrReply(
  fs: FileSystem,
  nodeid: bigint,
  getattrFlags: number,
  fh: bigint,
  reply: Uint8Array,
): Uint8Array {
  const at = FUSE_OUT_HEADER.size;
  fs.getattrInto(nodeid, (getattrFlags & FuseGetattrFlag.FH) ? fh : undefined, reply, at);
  return afterHeader(reply, FUSE_ATTR_OUT.size);
}

/**
 * LOOKUP's reply body: fuse_entry_out of `name` in `parent`, encoded in
 * place after the out header of `reply` (the handler calls it straight for
 * a LOOKUP whose name sits in its head buffer).
 */
export function lookupReply(
  fs: FileSystem,
  parent: bigint,
  name: Uint8Array,
  reply: Uint8Array,
): Uint8Array {
  fs.lookupInto(parent, name, reply, FUSE_OUT_HEADER.size);
  return afterHeader(reply, FUSE_ENTRY_OUT.size);
}

/** fuse_entry_out of `entry`, encoded in place after the out header of `reply`. */
function entryReply(entry: EntryResult, reply: Uint8Array): Uint8Array {
  return encodeEntryOut(entryOut(entry), reply, FUSE_OUT_HEADER.size);
}

/** fuse_open_out of `opened`, encoded in place after the out header of `reply` (no array of its own). */
function openOut(opened: OpenResult, reply: Uint8Array): Uint8Array {
  return encodeOpenOut({ fh: opened.fh, openFlags: opened.openFlags }, reply, FUSE_OUT_HEADER.size);
}

/** GETXATTR/LISTXATTR: fuse_getxattr_out for a size query, else the bytes themselves. */
function xattrReply(reply: XattrReply): Uint8Array {
  return "size" in reply ? encodeGetxattrOut({ size: reply.size }) : reply.value;
}

/**
 * Calls `fs` for `request` (made for `nodeid` by `caller`; `body` is the
 * request's bytes after the header) and returns the reply body. Fixed-size
 * replies are encoded in place after the out header of `reply` (the
 * handler's reply buffer); a payload that grows with the request (READDIR)
 * gets at most `room` bytes. Throws what the core throws (FsError for a
 * guest-visible failure); ENOSYS for a decodable opcode that is not served
 * (locks, COPY_FILE_RANGE, SYNCFS) or that the handler answers itself.
 */
export function callCore(
  fs: FileSystem,
  request: FuseRequestArgs,
  nodeid: bigint,
  caller: Caller,
  body: Uint8Array,
  reply: Uint8Array,
  room: number,
): ReplyBody {
  const { uid, gid, groups } = caller;
  switch (request.opcode) {
    case FuseOpcode.LOOKUP:
      return lookupReply(fs, nodeid, request.args.name, reply);
    case FuseOpcode.FORGET:
      fs.forget(nodeid, request.args.nlookup);
      return NO_REPLY;
    case FuseOpcode.BATCH_FORGET:
      fs.batchForget(request.args.entries);
      return NO_REPLY;
    case FuseOpcode.INTERRUPT:
      // Only READ, WRITE and FSYNC are ever in progress, and those are not interrupted
      // once in the kernel (virtiofsd ignores INTERRUPT too).
      return NO_REPLY;
    case FuseOpcode.GETATTR:
      return getattrReply(fs, nodeid, request.args.getattrFlags, request.args.fh, reply);
    case FuseOpcode.SETATTR:
      return attrOut(fs.setattr(nodeid, request.args, caller), reply);
    case FuseOpcode.READLINK:
      return encodeReadlinkReply(0n, fs.readlink(nodeid)).subarray(FUSE_OUT_HEADER.size);
    case FuseOpcode.SYMLINK: {
      const { name, target } = request.args;
      return entryReply(fs.symlink(nodeid, name, target, uid, gid, groups), reply);
    }
    case FuseOpcode.MKNOD: {
      const { name, mode, rdev, umask } = request.args;
      return entryReply(fs.mknod(nodeid, name, mode, rdev, umask, uid, gid, groups), reply);
    }
    case FuseOpcode.MKDIR: {
      const { name, mode, umask } = request.args;
      return entryReply(fs.mkdir(nodeid, name, mode, umask, uid, gid, groups), reply);
    }
    case FuseOpcode.UNLINK:
      fs.unlink(nodeid, request.args.name, caller);
      return EMPTY;
    case FuseOpcode.RMDIR:
      fs.rmdir(nodeid, request.args.name, caller);
      return EMPTY;
    case FuseOpcode.RENAME: {
      const { oldname, newdir, newname } = request.args;
      fs.rename(nodeid, oldname, newdir, newname, 0, caller);
      return EMPTY;
    }
    case FuseOpcode.RENAME2: {
      const { oldname, newdir, newname, flags } = request.args;
      fs.rename(nodeid, oldname, newdir, newname, flags, caller);
      return EMPTY;
    }
    case FuseOpcode.LINK:
      return entryReply(
        fs.link(request.args.oldnodeid, nodeid, request.args.name, caller),
        reply,
      );
    case FuseOpcode.OPEN: {
      const { flags, openFlags } = request.args;
      const kill = (openFlags & FuseOpenInFlag.KILL_SUIDGID) !== 0;
      return openOut(fs.open(nodeid, flags, caller, kill), reply);
    }
    case FuseOpcode.STATFS:
      // StatfsResult has fuse_kstatfs's fields, by name.
      return encodeStatfsOut(fs.statfs(nodeid));
    case FuseOpcode.FLUSH:
      fs.flush(request.args.fh);
      return EMPTY;
    case FuseOpcode.FSYNC:
      fs.fsync(request.args.fh, (request.args.fsyncFlags & FuseFsyncFlag.FDATASYNC) !== 0);
      return EMPTY;
    case FuseOpcode.OPENDIR:
      return openOut(fs.opendir(nodeid, request.args.flags), reply);
    case FuseOpcode.READDIR:
    case FuseOpcode.READDIRPLUS: {
      const { fh, offset, size } = request.args;
      const plus = request.opcode === FuseOpcode.READDIRPLUS;
      return fs.readdir(nodeid, fh, offset, Math.min(size, room), plus);
    }
    case FuseOpcode.RELEASEDIR:
      fs.releasedir(request.args.fh);
      return EMPTY;
    case FuseOpcode.FSYNCDIR:
      fs.fsyncdir(request.args.fh, (request.args.fsyncFlags & FuseFsyncFlag.FDATASYNC) !== 0);
      return EMPTY;
    case FuseOpcode.ACCESS:
      fs.access(nodeid, request.args.mask);
      return EMPTY;
    case FuseOpcode.CREATE: {
      const kill = (request.args.openFlags & FuseOpenInFlag.KILL_SUIDGID) !== 0;
      fs.createInto(nodeid, request.args, caller, kill, reply, FUSE_OUT_HEADER.size);
      return afterHeader(reply, FUSE_ENTRY_OUT.size + FUSE_OPEN_OUT.size);
    }
    case FuseOpcode.FALLOCATE: {
      const { fh, mode, offset, length } = request.args;
      fs.fallocate(fh, mode, offset, length);
      return EMPTY;
    }
    case FuseOpcode.LSEEK: {
      const { fh, offset, whence } = request.args;
      return encodeLseekOut({ offset: fs.lseek(fh, offset, whence) });
    }
    case FuseOpcode.GETXATTR: {
      const { name, size } = request.args;
      return xattrReply(fs.getxattr(nodeid, name, size));
    }
    case FuseOpcode.LISTXATTR:
      return xattrReply(fs.listxattr(nodeid, request.args.size));
    case FuseOpcode.SETXATTR: {
      const { name, flags, setxattrFlags, valueOffset, valueLength } = request.args;
      const value = body.subarray(valueOffset, valueOffset + valueLength);
      fs.setxattr(nodeid, name, value, flags, setxattrFlags);
      return EMPTY;
    }
    case FuseOpcode.REMOVEXATTR:
      fs.removexattr(nodeid, request.args.name);
      return EMPTY;
    default:
      // Decodable but not served (locks, COPY_FILE_RANGE, SYNCFS).
      throw new FsError(ENOSYS);
  }
}
