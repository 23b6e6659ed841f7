/**
 * FUSE kernel ABI constants as of Linux 6.1 (`include/uapi/linux/fuse.h`,
 * protocol 7.37): opcodes, INIT flags, request and reply flag bits, limits and
 * the size of every struct this layer encodes or decodes.
 *
 * The guest's virtiofs driver speaks this protocol over virtqueues; all
 * integers are little-endian (virtio-fs is little-endian whatever the host).
 *
 * @module
 */

/** FUSE major version (`FUSE_KERNEL_VERSION`). */
export const FUSE_KERNEL_VERSION = 7;
/** FUSE minor version of Linux 6.1 (`FUSE_KERNEL_MINOR_VERSION`). */
export const FUSE_KERNEL_MINOR_VERSION = 37;
/** Node id of the root directory (`FUSE_ROOT_ID`). */
export const FUSE_ROOT_ID = 1n;
/** Smallest READ buffer a server may offer (`FUSE_MIN_READ_BUFFER`). */
export const FUSE_MIN_READ_BUFFER = 8192;
/** Longest entry name (`NAME_MAX`); the kernel's VFS already refuses longer ones. */
export const FUSE_NAME_MAX = 255;
/** Longest symlink target without its NUL (`PATH_MAX` - 1). */
export const FUSE_SYMLINK_MAX = 4095;
/** Longest extended attribute name (`XATTR_NAME_MAX`). */
export const FUSE_XATTR_NAME_MAX = 255;
/**
 * Errors in a reply must satisfy `-FUSE_MAX_ERRNO < error <= 0`: the
 * kernel's `/dev/fuse` path refuses `error <= -512` (-ERESTARTSYS).
 */
export const FUSE_MAX_ERRNO = 512;

/** Request opcodes (`enum fuse_opcode`); 7 is unused, 51 TMPFILE is new in 7.37. */
export const FuseOpcode = {
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
} as const;

/** One of the opcode numbers of {@linkcode FuseOpcode}. */
export type FuseOpcodeNumber = typeof FuseOpcode[keyof typeof FuseOpcode];

/**
 * `FUSE_INIT << 24`: the opcode an INIT request shows when read with the
 * wrong byte order (`FUSE_INIT_BSWAP_RESERVED`).
 */
export const FUSE_INIT_BSWAP_RESERVED = 436207616;

const OPCODE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(FuseOpcode).map(([name, value]) => [value, name]),
);

/** The opcode's name without the `FUSE_` prefix, or `UNKNOWN(n)`. */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? `UNKNOWN(${opcode})`;
}

/** FORGET and BATCH_FORGET are the requests the kernel expects no reply to. */
export function opcodeExpectsReply(opcode: number): boolean {
  return opcode !== FuseOpcode.FORGET && opcode !== FuseOpcode.BATCH_FORGET;
}

/**
 * INIT `flags` bits (low 32 bits of the 64-bit capability set). Offered by
 * the kernel in `fuse_init_in.flags`, accepted by the server in
 * `fuse_init_out.flags`.
 */
export const FuseInitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  FILE_OPS: 1 << 2,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  SPLICE_WRITE: 1 << 7,
  SPLICE_MOVE: 1 << 8,
  SPLICE_READ: 1 << 9,
  FLOCK_LOCKS: 1 << 10,
  HAS_IOCTL_DIR: 1 << 11,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20,
  ABORT_ERROR: 1 << 21,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  EXPLICIT_INVAL_DATA: 1 << 25,
  MAP_ALIGNMENT: 1 << 26,
  SUBMOUNTS: 1 << 27,
  HANDLE_KILLPRIV_V2: 1 << 28,
  SETXATTR_EXT: 1 << 29,
  /** `fuse_init_in` is the 64-byte form and `flags2` is valid (both directions). */
  INIT_EXT: 1 << 30,
  /** Reserved, never to be set. Written in hex: `1 << 31` is negative in JavaScript. */
  INIT_RESERVED: 0x8000_0000,
} as const;

/**
 * INIT `flags2` bits: bits 32.. of the 64-bit capability set, shifted down
 * by 32. Only meaningful when {@linkcode FuseInitFlag.INIT_EXT} is set.
 */
export const FuseInitFlag2 = {
  /** Bit 32: create/mkdir/mknod/symlink carry a security context after the names. */
  SECURITY_CTX: 1 << 0,
  /** Bit 33: per-inode DAX (`FUSE_ATTR_DAX`). */
  HAS_INODE_DAX: 1 << 1,
  /**
   * Bit 34: create, mkdir, mknod and symlink carry, as a request extension,
   * the parent directory's group when the caller is in it only as a
   * supplementary group (7.38).
   */
  CREATE_SUPP_GROUP: 1 << 2,
} as const;

/**
 * `enum fuse_ext_type`: the `type` of a request extension (`struct
 * fuse_ext_header`). Types 0..31 are security contexts (the type is their
 * count, `fuse_secctx_header.nr_secctx`).
 */
export const FuseExtType = {
  /** Largest security-context count (`FUSE_MAX_NR_SECCTX`). */
  MAX_NR_SECCTX: 31,
  /** `struct fuse_supp_groups`: a count, then that many u32 gids. */
  GROUPS: 32,
} as const;

/** Size of `struct fuse_ext_header` (size, type); extensions are 8-byte aligned. */
export const FUSE_EXT_HEADER_SIZE = 8;

/** Bits of `fuse_setattr_in.valid`: which fields of SETATTR to apply. */
export const FuseSetattrValid = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

/** `fuse_open_out.open_flags` bits (`FOPEN_*`) the server returns. */
export const FuseOpenOutFlag = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
} as const;

/** `fuse_open_in.open_flags` / `fuse_create_in.open_flags` bits (`FUSE_OPEN_*`). */
export const FuseOpenInFlag = { KILL_SUIDGID: 1 << 0 } as const;

/** `fuse_release_in.release_flags` bits. */
export const FuseReleaseFlag = { FLUSH: 1 << 0, FLOCK_UNLOCK: 1 << 1 } as const;

/** `fuse_getattr_in.getattr_flags` bits: FH means `fh` is valid. */
export const FuseGetattrFlag = { FH: 1 << 0 } as const;

/** `fuse_lk_in.lk_flags` bits: FLOCK means a BSD flock rather than a POSIX lock. */
export const FuseLkFlag = { FLOCK: 1 << 0 } as const;

/** `fuse_read_in.read_flags` bits. */
export const FuseReadFlag = { LOCKOWNER: 1 << 1 } as const;

/** `fuse_write_in.write_flags` bits (KILL_SUIDGID was KILL_PRIV before 7.33). */
export const FuseWriteFlag = { CACHE: 1 << 0, LOCKOWNER: 1 << 1, KILL_SUIDGID: 1 << 2 } as const;

/** `fuse_fsync_in.fsync_flags` bits. */
export const FuseFsyncFlag = { FDATASYNC: 1 << 0 } as const;

/** `fuse_setxattr_in.setxattr_flags` bits (extended form only). */
export const FuseSetxattrFlag = { ACL_KILL_SGID: 1 << 0 } as const;

/** `fuse_attr.flags` bits. */
export const FuseAttrFlag = { SUBMOUNT: 1 << 0, DAX: 1 << 1 } as const;

/** Notification codes (`enum fuse_notify_code`), sent with unique 0. */
export const FuseNotifyCode = {
  POLL: 1,
  INVAL_INODE: 2,
  INVAL_ENTRY: 3,
  STORE: 4,
  RETRIEVE: 5,
  DELETE: 6,
} as const;

/** `fuse_dirent.type` values: `d_type`, i.e. `(mode & S_IFMT) >> 12`. */
export const DirentType = {
  UNKNOWN: 0,
  FIFO: 1,
  CHR: 2,
  DIR: 4,
  BLK: 6,
  REG: 8,
  LNK: 10,
  SOCK: 12,
  WHT: 14,
} as const;

/** The `d_type` of a file with the given `st_mode` (Linux `IFTODT`). */
export function direntTypeOfMode(mode: number): number {
  return (mode >>> 12) & 0xf;
}

/**
 * `sizeof` of every struct this layer handles, from the C header. The
 * layouts in `fuse_layouts.ts` are computed from field lists; tests check
 * that they agree with this table.
 */
export const FuseStructSize = {
  fuse_in_header: 40,
  fuse_out_header: 16,
  fuse_attr: 88,
  fuse_kstatfs: 80,
  fuse_file_lock: 24,
  fuse_entry_out: 128,
  fuse_forget_in: 8,
  fuse_forget_one: 16,
  fuse_batch_forget_in: 8,
  fuse_getattr_in: 16,
  fuse_attr_out: 104,
  fuse_mknod_in: 16,
  fuse_mkdir_in: 8,
  fuse_rename_in: 8,
  fuse_rename2_in: 16,
  fuse_link_in: 8,
  fuse_setattr_in: 88,
  fuse_open_in: 8,
  fuse_create_in: 16,
  fuse_open_out: 16,
  fuse_release_in: 24,
  fuse_flush_in: 24,
  fuse_read_in: 40,
  fuse_write_in: 40,
  fuse_write_out: 8,
  fuse_statfs_out: 80,
  fuse_fsync_in: 16,
  fuse_setxattr_in: 16,
  fuse_getxattr_in: 8,
  fuse_getxattr_out: 8,
  fuse_lk_in: 48,
  fuse_lk_out: 24,
  fuse_access_in: 8,
  fuse_init_in: 64,
  fuse_init_out: 64,
  fuse_interrupt_in: 8,
  fuse_fallocate_in: 32,
  fuse_dirent: 24,
  fuse_direntplus: 152,
  fuse_lseek_in: 24,
  fuse_lseek_out: 8,
  fuse_copy_file_range_in: 56,
  fuse_syncfs_in: 8,
} as const;

/** `fuse_init_in` as sent by kernels before 7.36 (no `flags2`, no INIT_EXT). */
export const FUSE_COMPAT_INIT_IN_SIZE = 16;
/** `fuse_setxattr_in` without `setxattr_flags`: used unless SETXATTR_EXT was accepted. */
export const FUSE_COMPAT_SETXATTR_IN_SIZE = 8;
/** Offset of `name` in `fuse_dirent` (`FUSE_NAME_OFFSET`). */
export const FUSE_NAME_OFFSET = 24;
/** Offset of `dirent.name` in `fuse_direntplus` (`FUSE_NAME_OFFSET_DIRENTPLUS`). */
export const FUSE_NAME_OFFSET_DIRENTPLUS = 152;

/** `FUSE_REC_ALIGN`: dirent records are padded to 8 bytes. */
export function fuseRecordAlign(length: number): number {
  return Math.ceil(length / 8) * 8;
}
