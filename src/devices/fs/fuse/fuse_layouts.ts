/**
 * The FUSE structs of Linux 6.1 (`include/uapi/linux/fuse.h`, 7.37) as
 * layouts, fields in C declaration order with camelCase names. Padding and
 * `unused`/`dummy`/`spare` fields are reserved (zero on write, not decoded).
 *
 * One deliberate deviation: `fuse_in_header`'s last 32-bit `padding` of 7.37
 * is split as 7.38 did into `total_extlen` (u16, extension length in 8-byte
 * units) and `padding` (u16); a 7.37 kernel sends zero in both.
 *
 * @module
 */

import { defineStruct } from "./fuse_struct.ts";

/** `struct fuse_in_header`: first bytes of every request. */
export const FUSE_IN_HEADER = defineStruct("fuse_in_header", [
  ["len", "u32"],
  ["opcode", "u32"],
  ["unique", "u64"],
  ["nodeid", "u64"],
  ["uid", "u32"],
  ["gid", "u32"],
  ["pid", "u32"],
  ["totalExtlen", "u16"],
  ["padding", "u16"],
]);

/** `struct fuse_out_header`: first bytes of every reply; `error` is 0 or -errno. */
export const FUSE_OUT_HEADER = defineStruct("fuse_out_header", [
  ["len", "u32"],
  ["error", "i32"],
  ["unique", "u64"],
]);

/** `struct fuse_attr`. Times are seconds since the epoch, signed in practice. */
export const FUSE_ATTR = defineStruct("fuse_attr", [
  ["ino", "u64"],
  ["size", "u64"],
  ["blocks", "u64"],
  ["atime", "i64"],
  ["mtime", "i64"],
  ["ctime", "i64"],
  ["atimensec", "u32"],
  ["mtimensec", "u32"],
  ["ctimensec", "u32"],
  ["mode", "u32"],
  ["nlink", "u32"],
  ["uid", "u32"],
  ["gid", "u32"],
  ["rdev", "u32"],
  ["blksize", "u32"],
  ["flags", "u32"],
]);

/** `struct fuse_kstatfs`. */
export const FUSE_KSTATFS = defineStruct("fuse_kstatfs", [
  ["blocks", "u64"],
  ["bfree", "u64"],
  ["bavail", "u64"],
  ["files", "u64"],
  ["ffree", "u64"],
  ["bsize", "u32"],
  ["namelen", "u32"],
  ["frsize", "u32"],
  ["padding", "u32", 1],
  ["spare", "u32", 6],
]);

/** `struct fuse_file_lock`; `pid` is the owner's tgid. */
export const FUSE_FILE_LOCK = defineStruct("fuse_file_lock", [
  ["start", "u64"],
  ["end", "u64"],
  ["type", "u32"],
  ["pid", "u32"],
]);

/** `struct fuse_entry_out`: reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK (and CREATE's first part). */
export const FUSE_ENTRY_OUT = defineStruct("fuse_entry_out", [
  ["nodeid", "u64"],
  ["generation", "u64"],
  ["entryValid", "u64"],
  ["attrValid", "u64"],
  ["entryValidNsec", "u32"],
  ["attrValidNsec", "u32"],
  ["attr", FUSE_ATTR],
]);

/** `struct fuse_forget_in`. */
export const FUSE_FORGET_IN = defineStruct("fuse_forget_in", [["nlookup", "u64"]]);

/** `struct fuse_forget_one`: one entry of BATCH_FORGET. */
export const FUSE_FORGET_ONE = defineStruct("fuse_forget_one", [
  ["nodeid", "u64"],
  ["nlookup", "u64"],
]);

/** `struct fuse_batch_forget_in`, followed by `count` `fuse_forget_one`. */
export const FUSE_BATCH_FORGET_IN = defineStruct("fuse_batch_forget_in", [
  ["count", "u32"],
  ["dummy", "u32", 1],
]);

/** `struct fuse_getattr_in`. */
export const FUSE_GETATTR_IN = defineStruct("fuse_getattr_in", [
  ["getattrFlags", "u32"],
  ["dummy", "u32", 1],
  ["fh", "u64"],
]);

/** `struct fuse_attr_out`: reply to GETATTR and SETATTR. */
export const FUSE_ATTR_OUT = defineStruct("fuse_attr_out", [
  ["attrValid", "u64"],
  ["attrValidNsec", "u32"],
  ["dummy", "u32", 1],
  ["attr", FUSE_ATTR],
]);

/** `struct fuse_mknod_in`, followed by the name. */
export const FUSE_MKNOD_IN = defineStruct("fuse_mknod_in", [
  ["mode", "u32"],
  ["rdev", "u32"],
  ["umask", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_mkdir_in`, followed by the name. */
export const FUSE_MKDIR_IN = defineStruct("fuse_mkdir_in", [
  ["mode", "u32"],
  ["umask", "u32"],
]);

/** `struct fuse_rename_in`, followed by the old and the new name. */
export const FUSE_RENAME_IN = defineStruct("fuse_rename_in", [["newdir", "u64"]]);

/** `struct fuse_rename2_in`, followed by the old and the new name. */
export const FUSE_RENAME2_IN = defineStruct("fuse_rename2_in", [
  ["newdir", "u64"],
  ["flags", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_link_in`, followed by the new name. */
export const FUSE_LINK_IN = defineStruct("fuse_link_in", [["oldnodeid", "u64"]]);

/** `struct fuse_setattr_in`. */
export const FUSE_SETATTR_IN = defineStruct("fuse_setattr_in", [
  ["valid", "u32"],
  ["padding", "u32", 1],
  ["fh", "u64"],
  ["size", "u64"],
  ["lockOwner", "u64"],
  ["atime", "i64"],
  ["mtime", "i64"],
  ["ctime", "i64"],
  ["atimensec", "u32"],
  ["mtimensec", "u32"],
  ["ctimensec", "u32"],
  ["mode", "u32"],
  ["unused4", "u32", 1],
  ["uid", "u32"],
  ["gid", "u32"],
  ["unused5", "u32", 1],
]);

/** `struct fuse_open_in`: OPEN and OPENDIR. */
export const FUSE_OPEN_IN = defineStruct("fuse_open_in", [
  ["flags", "u32"],
  ["openFlags", "u32"],
]);

/** `struct fuse_create_in`, followed by the name. */
export const FUSE_CREATE_IN = defineStruct("fuse_create_in", [
  ["flags", "u32"],
  ["mode", "u32"],
  ["umask", "u32"],
  ["openFlags", "u32"],
]);

/** `struct fuse_open_out` (7.37: the last field is still padding). */
export const FUSE_OPEN_OUT = defineStruct("fuse_open_out", [
  ["fh", "u64"],
  ["openFlags", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_release_in`: RELEASE and RELEASEDIR. */
export const FUSE_RELEASE_IN = defineStruct("fuse_release_in", [
  ["fh", "u64"],
  ["flags", "u32"],
  ["releaseFlags", "u32"],
  ["lockOwner", "u64"],
]);

/** `struct fuse_flush_in`. */
export const FUSE_FLUSH_IN = defineStruct("fuse_flush_in", [
  ["fh", "u64"],
  ["unused", "u32", 1],
  ["padding", "u32", 1],
  ["lockOwner", "u64"],
]);

/** `struct fuse_read_in`: READ, READDIR and READDIRPLUS. */
export const FUSE_READ_IN = defineStruct("fuse_read_in", [
  ["fh", "u64"],
  ["offset", "u64"],
  ["size", "u32"],
  ["readFlags", "u32"],
  ["lockOwner", "u64"],
  ["flags", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_write_in`, followed by `size` bytes of data. */
export const FUSE_WRITE_IN = defineStruct("fuse_write_in", [
  ["fh", "u64"],
  ["offset", "u64"],
  ["size", "u32"],
  ["writeFlags", "u32"],
  ["lockOwner", "u64"],
  ["flags", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_write_out`: reply to WRITE and COPY_FILE_RANGE. */
export const FUSE_WRITE_OUT = defineStruct("fuse_write_out", [
  ["size", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_statfs_out`. */
export const FUSE_STATFS_OUT = defineStruct("fuse_statfs_out", [["st", FUSE_KSTATFS]]);

/** `struct fuse_fsync_in`: FSYNC and FSYNCDIR. */
export const FUSE_FSYNC_IN = defineStruct("fuse_fsync_in", [
  ["fh", "u64"],
  ["fsyncFlags", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_setxattr_in` as sent once SETXATTR_EXT is accepted. */
export const FUSE_SETXATTR_IN = defineStruct("fuse_setxattr_in", [
  ["size", "u32"],
  ["flags", "u32"],
  ["setxattrFlags", "u32"],
  ["padding", "u32", 1],
]);

/** The first 8 bytes of `fuse_setxattr_in` (`FUSE_COMPAT_SETXATTR_IN_SIZE`). */
export const FUSE_SETXATTR_IN_COMPAT = defineStruct("fuse_setxattr_in(compat)", [
  ["size", "u32"],
  ["flags", "u32"],
]);

/** `struct fuse_getxattr_in`: GETXATTR (followed by the name) and LISTXATTR. */
export const FUSE_GETXATTR_IN = defineStruct("fuse_getxattr_in", [
  ["size", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_getxattr_out`: the value size, when the request's size was 0. */
export const FUSE_GETXATTR_OUT = defineStruct("fuse_getxattr_out", [
  ["size", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_lk_in`: GETLK, SETLK, SETLKW. */
export const FUSE_LK_IN = defineStruct("fuse_lk_in", [
  ["fh", "u64"],
  ["owner", "u64"],
  ["lk", FUSE_FILE_LOCK],
  ["lkFlags", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_lk_out`: reply to GETLK. */
export const FUSE_LK_OUT = defineStruct("fuse_lk_out", [["lk", FUSE_FILE_LOCK]]);

/** `struct fuse_access_in`. */
export const FUSE_ACCESS_IN = defineStruct("fuse_access_in", [
  ["mask", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_init_in` of 7.36+ (the kernel sets INIT_EXT when it sends this form). */
export const FUSE_INIT_IN = defineStruct("fuse_init_in", [
  ["major", "u32"],
  ["minor", "u32"],
  ["maxReadahead", "u32"],
  ["flags", "u32"],
  ["flags2", "u32"],
  ["unused", "u32", 11],
]);

/** The 16-byte `fuse_init_in` of kernels before 7.36. */
export const FUSE_INIT_IN_COMPAT = defineStruct("fuse_init_in(compat)", [
  ["major", "u32"],
  ["minor", "u32"],
  ["maxReadahead", "u32"],
  ["flags", "u32"],
]);

/** `struct fuse_init_out` of 7.36/7.37 (`flags2` then `unused[7]`). */
export const FUSE_INIT_OUT = defineStruct("fuse_init_out", [
  ["major", "u32"],
  ["minor", "u32"],
  ["maxReadahead", "u32"],
  ["flags", "u32"],
  ["maxBackground", "u16"],
  ["congestionThreshold", "u16"],
  ["maxWrite", "u32"],
  ["timeGran", "u32"],
  ["maxPages", "u16"],
  ["mapAlignment", "u16"],
  ["flags2", "u32"],
  ["unused", "u32", 7],
]);

/** `struct fuse_interrupt_in`. */
export const FUSE_INTERRUPT_IN = defineStruct("fuse_interrupt_in", [["unique", "u64"]]);

/** `struct fuse_fallocate_in`. */
export const FUSE_FALLOCATE_IN = defineStruct("fuse_fallocate_in", [
  ["fh", "u64"],
  ["offset", "u64"],
  ["length", "u64"],
  ["mode", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_dirent` without its name (`FUSE_NAME_OFFSET` = 24). */
export const FUSE_DIRENT = defineStruct("fuse_dirent", [
  ["ino", "u64"],
  ["off", "u64"],
  ["namelen", "u32"],
  ["type", "u32"],
]);

/** `struct fuse_direntplus` without the name: an entry_out then a dirent. */
export const FUSE_DIRENTPLUS = defineStruct("fuse_direntplus", [
  ["entryOut", FUSE_ENTRY_OUT],
  ["dirent", FUSE_DIRENT],
]);

/** `struct fuse_lseek_in`. */
export const FUSE_LSEEK_IN = defineStruct("fuse_lseek_in", [
  ["fh", "u64"],
  ["offset", "u64"],
  ["whence", "u32"],
  ["padding", "u32", 1],
]);

/** `struct fuse_lseek_out`. */
export const FUSE_LSEEK_OUT = defineStruct("fuse_lseek_out", [["offset", "u64"]]);

/** `struct fuse_copy_file_range_in`; the output file is `nodeidOut`/`fhOut`. */
export const FUSE_COPY_FILE_RANGE_IN = defineStruct("fuse_copy_file_range_in", [
  ["fhIn", "u64"],
  ["offIn", "u64"],
  ["nodeidOut", "u64"],
  ["fhOut", "u64"],
  ["offOut", "u64"],
  ["len", "u64"],
  ["flags", "u64"],
]);

/** `struct fuse_syncfs_in`: padding only. */
export const FUSE_SYNCFS_IN = defineStruct("fuse_syncfs_in", [["padding", "u64", 1]]);
