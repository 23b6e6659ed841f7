import assert from "node:assert/strict";
import {
  DirentType,
  direntTypeOfMode,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_NAME_OFFSET,
  FUSE_NAME_OFFSET_DIRENTPLUS,
  FUSE_ROOT_ID,
  FuseFsyncFlag,
  FuseInitFlag,
  FuseInitFlag2,
  FuseOpcode,
  FuseOpenOutFlag,
  FuseReadFlag,
  fuseRecordAlign,
  FuseReleaseFlag,
  FuseSetattrValid,
  FuseStructSize,
  FuseWriteFlag,
  opcodeExpectsReply,
  opcodeName,
} from "./fuse_abi.ts";
import * as layouts from "./fuse_layouts.ts";
import type { StructLayout } from "./fuse_struct.ts";

Deno.test("version numbers are those of Linux 6.1 (7.37) and the root is node 1", () => {
  assert.equal(FUSE_KERNEL_VERSION, 7);
  assert.equal(FUSE_KERNEL_MINOR_VERSION, 37);
  assert.equal(FUSE_ROOT_ID, 1n);
});

Deno.test("every opcode has the number of enum fuse_opcode", () => {
  const expected: Record<string, number> = {
    LOOKUP: 1,
    FORGET: 2,
    GETATTR: 3,
    SETATTR: 4,
    READLINK: 5,
    SYMLINK: 6,
    MKNOD: 8,
    MKDIR: 9,
    UNLINK: 10,
    RMDIR: 11,
    RENAME: 12,
    LINK: 13,
    OPEN: 14,
    READ: 15,
    WRITE: 16,
    STATFS: 17,
    RELEASE: 18,
    FSYNC: 20,
    SETXATTR: 21,
    GETXATTR: 22,
    LISTXATTR: 23,
    REMOVEXATTR: 24,
    FLUSH: 25,
    INIT: 26,
    OPENDIR: 27,
    READDIR: 28,
    RELEASEDIR: 29,
    FSYNCDIR: 30,
    GETLK: 31,
    SETLK: 32,
    SETLKW: 33,
    ACCESS: 34,
    CREATE: 35,
    INTERRUPT: 36,
    BMAP: 37,
    DESTROY: 38,
    IOCTL: 39,
    POLL: 40,
    NOTIFY_REPLY: 41,
    BATCH_FORGET: 42,
    FALLOCATE: 43,
    READDIRPLUS: 44,
    RENAME2: 45,
    LSEEK: 46,
    COPY_FILE_RANGE: 47,
    SETUPMAPPING: 48,
    REMOVEMAPPING: 49,
    SYNCFS: 50,
    TMPFILE: 51,
  };
  assert.deepEqual({ ...FuseOpcode }, expected);
});

Deno.test("opcodeName names known opcodes and marks unknown ones", () => {
  assert.equal(opcodeName(1), "LOOKUP");
  assert.equal(opcodeName(44), "READDIRPLUS");
  assert.equal(opcodeName(51), "TMPFILE");
  assert.equal(opcodeName(7), "UNKNOWN(7)");
  assert.equal(opcodeName(4096), "UNKNOWN(4096)");
  for (const [name, value] of Object.entries(FuseOpcode)) assert.equal(opcodeName(value), name);
});

Deno.test("only FORGET and BATCH_FORGET go without a reply", () => {
  const silent = Object.values(FuseOpcode).filter((opcode) => !opcodeExpectsReply(opcode));
  assert.deepEqual(silent, [FuseOpcode.FORGET, FuseOpcode.BATCH_FORGET]);
});

Deno.test("INIT flags are bits 0..31 in header order; flags2 bits are 32.. shifted down", () => {
  const order = [
    "ASYNC_READ",
    "POSIX_LOCKS",
    "FILE_OPS",
    "ATOMIC_O_TRUNC",
    "EXPORT_SUPPORT",
    "BIG_WRITES",
    "DONT_MASK",
    "SPLICE_WRITE",
    "SPLICE_MOVE",
    "SPLICE_READ",
    "FLOCK_LOCKS",
    "HAS_IOCTL_DIR",
    "AUTO_INVAL_DATA",
    "DO_READDIRPLUS",
    "READDIRPLUS_AUTO",
    "ASYNC_DIO",
    "WRITEBACK_CACHE",
    "NO_OPEN_SUPPORT",
    "PARALLEL_DIROPS",
    "HANDLE_KILLPRIV",
    "POSIX_ACL",
    "ABORT_ERROR",
    "MAX_PAGES",
    "CACHE_SYMLINKS",
    "NO_OPENDIR_SUPPORT",
    "EXPLICIT_INVAL_DATA",
    "MAP_ALIGNMENT",
    "SUBMOUNTS",
    "HANDLE_KILLPRIV_V2",
    "SETXATTR_EXT",
    "INIT_EXT",
    "INIT_RESERVED",
  ];
  assert.deepEqual(Object.keys(FuseInitFlag), order);
  order.forEach((name, bit) => {
    assert.equal(FuseInitFlag[name as keyof typeof FuseInitFlag], 2 ** bit, name);
  });
  assert.ok(FuseInitFlag.INIT_RESERVED > 0, "bit 31 must not be a negative number");
  assert.equal(FuseInitFlag2.SECURITY_CTX, 1);
  assert.equal(FuseInitFlag2.HAS_INODE_DAX, 2);
  assert.equal(FuseInitFlag2.CREATE_SUPP_GROUP, 4, "FUSE_CREATE_SUPP_GROUP is 1 << 34");
});

Deno.test("setattr valid bits, FOPEN bits and request flag bits match the header", () => {
  assert.deepEqual({ ...FuseSetattrValid }, {
    MODE: 1,
    UID: 2,
    GID: 4,
    SIZE: 8,
    ATIME: 16,
    MTIME: 32,
    FH: 64,
    ATIME_NOW: 128,
    MTIME_NOW: 256,
    LOCKOWNER: 512,
    CTIME: 1024,
    KILL_SUIDGID: 2048,
  });
  assert.deepEqual({ ...FuseOpenOutFlag }, {
    DIRECT_IO: 1,
    KEEP_CACHE: 2,
    NONSEEKABLE: 4,
    CACHE_DIR: 8,
    STREAM: 16,
    NOFLUSH: 32,
  });
  assert.equal(FuseReleaseFlag.FLUSH, 1);
  assert.equal(FuseReleaseFlag.FLOCK_UNLOCK, 2);
  assert.equal(FuseFsyncFlag.FDATASYNC, 1);
  assert.equal(FuseReadFlag.LOCKOWNER, 2);
  assert.deepEqual({ ...FuseWriteFlag }, { CACHE: 1, LOCKOWNER: 2, KILL_SUIDGID: 4 });
});

Deno.test("direntTypeOfMode gives d_type for each file type", () => {
  assert.equal(direntTypeOfMode(0o040755), DirentType.DIR);
  assert.equal(direntTypeOfMode(0o100644), DirentType.REG);
  assert.equal(direntTypeOfMode(0o120777), DirentType.LNK);
  assert.equal(direntTypeOfMode(0o020600), DirentType.CHR);
  assert.equal(direntTypeOfMode(0o060600), DirentType.BLK);
  assert.equal(direntTypeOfMode(0o010600), DirentType.FIFO);
  assert.equal(direntTypeOfMode(0o140755), DirentType.SOCK);
});

Deno.test("fuseRecordAlign rounds up to 8", () => {
  assert.deepEqual([0, 1, 7, 8, 9, 24, 25, 31, 32].map(fuseRecordAlign), [
    0,
    8,
    8,
    8,
    16,
    24,
    32,
    32,
    32,
  ]);
});

/**
 * Field offsets worked out by hand from the C declarations in
 * include/uapi/linux/fuse.h (7.37), in declaration order. Each comment
 * quotes the C field order; camelCase names stand for the snake_case ones.
 */
const EXPECTED_OFFSETS: Record<string, [string, number][]> = {
  // len u32, opcode u32, unique u64, nodeid u64, uid, gid, pid u32, padding u32 (7.38: total_extlen u16 + padding u16)
  fuse_in_header: [
    ["len", 0],
    ["opcode", 4],
    ["unique", 8],
    ["nodeid", 16],
    ["uid", 24],
    ["gid", 28],
    ["pid", 32],
    ["totalExtlen", 36],
    ["padding", 38],
  ],
  // len u32, error i32, unique u64
  fuse_out_header: [["len", 0], ["error", 4], ["unique", 8]],
  // ino size blocks atime mtime ctime u64; atimensec mtimensec ctimensec mode nlink uid gid rdev blksize flags u32
  fuse_attr: [
    ["ino", 0],
    ["size", 8],
    ["blocks", 16],
    ["atime", 24],
    ["mtime", 32],
    ["ctime", 40],
    ["atimensec", 48],
    ["mtimensec", 52],
    ["ctimensec", 56],
    ["mode", 60],
    ["nlink", 64],
    ["uid", 68],
    ["gid", 72],
    ["rdev", 76],
    ["blksize", 80],
    ["flags", 84],
  ],
  // blocks bfree bavail files ffree u64; bsize namelen frsize padding u32; spare[6] u32
  fuse_kstatfs: [
    ["blocks", 0],
    ["bfree", 8],
    ["bavail", 16],
    ["files", 24],
    ["ffree", 32],
    ["bsize", 40],
    ["namelen", 44],
    ["frsize", 48],
    ["padding", 52],
    ["spare", 56],
  ],
  // start end u64; type pid u32
  fuse_file_lock: [["start", 0], ["end", 8], ["type", 16], ["pid", 20]],
  // nodeid generation entry_valid attr_valid u64; entry_valid_nsec attr_valid_nsec u32; attr
  fuse_entry_out: [
    ["nodeid", 0],
    ["generation", 8],
    ["entryValid", 16],
    ["attrValid", 24],
    ["entryValidNsec", 32],
    ["attrValidNsec", 36],
    ["attr", 40],
  ],
  fuse_forget_in: [["nlookup", 0]],
  fuse_forget_one: [["nodeid", 0], ["nlookup", 8]],
  fuse_batch_forget_in: [["count", 0], ["dummy", 4]],
  // getattr_flags u32, dummy u32, fh u64
  fuse_getattr_in: [["getattrFlags", 0], ["dummy", 4], ["fh", 8]],
  // attr_valid u64, attr_valid_nsec u32, dummy u32, attr
  fuse_attr_out: [["attrValid", 0], ["attrValidNsec", 8], ["dummy", 12], ["attr", 16]],
  fuse_mknod_in: [["mode", 0], ["rdev", 4], ["umask", 8], ["padding", 12]],
  fuse_mkdir_in: [["mode", 0], ["umask", 4]],
  fuse_rename_in: [["newdir", 0]],
  fuse_rename2_in: [["newdir", 0], ["flags", 8], ["padding", 12]],
  fuse_link_in: [["oldnodeid", 0]],
  // valid padding u32; fh size lock_owner atime mtime ctime u64;
  // atimensec mtimensec ctimensec mode unused4 uid gid unused5 u32
  fuse_setattr_in: [
    ["valid", 0],
    ["padding", 4],
    ["fh", 8],
    ["size", 16],
    ["lockOwner", 24],
    ["atime", 32],
    ["mtime", 40],
    ["ctime", 48],
    ["atimensec", 56],
    ["mtimensec", 60],
    ["ctimensec", 64],
    ["mode", 68],
    ["unused4", 72],
    ["uid", 76],
    ["gid", 80],
    ["unused5", 84],
  ],
  fuse_open_in: [["flags", 0], ["openFlags", 4]],
  fuse_create_in: [["flags", 0], ["mode", 4], ["umask", 8], ["openFlags", 12]],
  // fh u64, open_flags u32, padding u32
  fuse_open_out: [["fh", 0], ["openFlags", 8], ["padding", 12]],
  // fh u64, flags u32, release_flags u32, lock_owner u64
  fuse_release_in: [["fh", 0], ["flags", 8], ["releaseFlags", 12], ["lockOwner", 16]],
  // fh u64, unused u32, padding u32, lock_owner u64
  fuse_flush_in: [["fh", 0], ["unused", 8], ["padding", 12], ["lockOwner", 16]],
  // fh offset u64; size read_flags u32; lock_owner u64; flags padding u32
  fuse_read_in: [
    ["fh", 0],
    ["offset", 8],
    ["size", 16],
    ["readFlags", 20],
    ["lockOwner", 24],
    ["flags", 32],
    ["padding", 36],
  ],
  fuse_write_in: [
    ["fh", 0],
    ["offset", 8],
    ["size", 16],
    ["writeFlags", 20],
    ["lockOwner", 24],
    ["flags", 32],
    ["padding", 36],
  ],
  fuse_write_out: [["size", 0], ["padding", 4]],
  fuse_statfs_out: [["st", 0]],
  fuse_fsync_in: [["fh", 0], ["fsyncFlags", 8], ["padding", 12]],
  fuse_setxattr_in: [["size", 0], ["flags", 4], ["setxattrFlags", 8], ["padding", 12]],
  fuse_getxattr_in: [["size", 0], ["padding", 4]],
  fuse_getxattr_out: [["size", 0], ["padding", 4]],
  // fh owner u64; lk fuse_file_lock; lk_flags padding u32
  fuse_lk_in: [["fh", 0], ["owner", 8], ["lk", 16], ["lkFlags", 40], ["padding", 44]],
  fuse_lk_out: [["lk", 0]],
  fuse_access_in: [["mask", 0], ["padding", 4]],
  // major minor max_readahead flags flags2 u32; unused[11] u32
  fuse_init_in: [
    ["major", 0],
    ["minor", 4],
    ["maxReadahead", 8],
    ["flags", 12],
    ["flags2", 16],
    ["unused", 20],
  ],
  // major minor max_readahead flags u32; max_background congestion_threshold u16;
  // max_write time_gran u32; max_pages map_alignment u16; flags2 u32; unused[7] u32
  fuse_init_out: [
    ["major", 0],
    ["minor", 4],
    ["maxReadahead", 8],
    ["flags", 12],
    ["maxBackground", 16],
    ["congestionThreshold", 18],
    ["maxWrite", 20],
    ["timeGran", 24],
    ["maxPages", 28],
    ["mapAlignment", 30],
    ["flags2", 32],
    ["unused", 36],
  ],
  fuse_interrupt_in: [["unique", 0]],
  fuse_fallocate_in: [["fh", 0], ["offset", 8], ["length", 16], ["mode", 24], ["padding", 28]],
  // ino off u64; namelen type u32; char name[]
  fuse_dirent: [["ino", 0], ["off", 8], ["namelen", 16], ["type", 20]],
  // entry_out; dirent
  fuse_direntplus: [["entryOut", 0], ["dirent", 128]],
  fuse_lseek_in: [["fh", 0], ["offset", 8], ["whence", 16], ["padding", 20]],
  fuse_lseek_out: [["offset", 0]],
  // fh_in off_in nodeid_out fh_out off_out len flags, all u64
  fuse_copy_file_range_in: [
    ["fhIn", 0],
    ["offIn", 8],
    ["nodeidOut", 16],
    ["fhOut", 24],
    ["offOut", 32],
    ["len", 40],
    ["flags", 48],
  ],
  fuse_syncfs_in: [["padding", 0]],
};

const ALL_LAYOUTS: StructLayout[] = Object.values(layouts);

Deno.test("every layout has the size of the table and of the C header", () => {
  const sizes = FuseStructSize as Record<string, number>;
  const covered = new Set<string>();
  for (const layout of ALL_LAYOUTS) {
    if (layout.name.endsWith("(compat)")) continue;
    assert.ok(layout.name in sizes, `${layout.name} is missing from FuseStructSize`);
    assert.equal(layout.size, sizes[layout.name], layout.name);
    covered.add(layout.name);
  }
  assert.deepEqual([...covered].sort(), Object.keys(sizes).sort());
  assert.equal(layouts.FUSE_INIT_IN_COMPAT.size, 16);
  assert.equal(layouts.FUSE_SETXATTR_IN_COMPAT.size, 8);
});

Deno.test("every layout's fields sit at the offsets of the C header, in declaration order", () => {
  for (const layout of ALL_LAYOUTS) {
    if (layout.name.endsWith("(compat)")) continue;
    const expected = EXPECTED_OFFSETS[layout.name];
    assert.ok(expected, `no expected offsets for ${layout.name}`);
    assert.deepEqual(Object.entries(layout.offsets), expected, layout.name);
  }
});

Deno.test("the name offsets of dirent and direntplus follow the fixed parts", () => {
  assert.equal(FUSE_NAME_OFFSET, layouts.FUSE_DIRENT.size);
  assert.equal(FUSE_NAME_OFFSET_DIRENTPLUS, layouts.FUSE_DIRENTPLUS.size);
  assert.equal(FUSE_NAME_OFFSET_DIRENTPLUS, 128 + 24);
});
