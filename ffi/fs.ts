/**
 * Filesystem system calls for a virtio-fs passthrough back-end: the `*at`
 * family relative to directory fds (usually O_PATH fds from an inode table),
 * openat2 with RESOLVE_* confinement, statx, statfs, getdents64, and the
 * `/proc/self/fd/N` idioms that turn an O_PATH fd into a real open file
 * without a path lookup.
 *
 * Names and paths are `string | Uint8Array`: FUSE names are bytes, so bytes
 * pass through untouched and strings are encoded as UTF-8. A name containing
 * a NUL byte is refused with EINVAL (C would silently cut it there). Every
 * failure throws {@linkcode SyscallError} carrying the host errno, which the
 * file system server can hand to the guest as is.
 *
 * @module
 */

import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NOFOLLOW,
  O_PATH,
  OPEN_TREE_CLOEXEC,
  STATX_BASIC_STATS,
  STATX_DIOALIGN,
  STATX_INO,
  SYS_getdents64,
  SYS_open_tree,
  SYS_openat2,
  UTIME_NOW,
  UTIME_OMIT,
} from "./constants.ts";
import { EINTR, EINVAL, EIO, ENAMETOOLONG, ENOSYS, EPERM, SyscallError } from "./errno.ts";
import { lastErrno, libc, throwLastError } from "./libc.ts";
import { allocateBytes, cString, readU64, writeU64 } from "./struct.ts";
import { scratchPath } from "./path_scratch.ts";

/** A file name or path: raw bytes (as FUSE sends them) or text, encoded as UTF-8. */
export type PathArg = string | Uint8Array;

const lossyDecoder = new TextDecoder("utf-8", { fatal: false });

/** NUL-terminated copy of `name` for a C argument; EINVAL if it contains NUL. */
export function pathBytes(syscall: string, name: PathArg): Uint8Array<ArrayBuffer> {
  if (typeof name === "string") return cString(syscall, name);
  if (name.includes(0)) throw new SyscallError(syscall, EINVAL, "name contains a NUL byte");
  const bytes = allocateBytes(name.length + 1);
  bytes.set(name);
  return bytes;
}

/** A printable form of a name for error messages (invalid UTF-8 becomes U+FFFD). */
function describe(name: PathArg): string {
  return JSON.stringify(typeof name === "string" ? name : lossyDecoder.decode(name));
}

function at(dirfd: number, name: PathArg): string {
  return `dirfd ${dirfd}, ${describe(name)}`;
}

/** BigInt of an integer argument, or EINVAL (BigInt() throws RangeError on 1.5 or NaN). */
function integerArg(syscall: string, what: string, value: number | bigint): bigint {
  if (typeof value === "bigint") return value;
  if (!Number.isSafeInteger(value)) {
    throw new SyscallError(syscall, EINVAL, `${what} ${value} is not an integer`);
  }
  return BigInt(value);
}

// ---------------------------------------------------------------------------
// Open family.

/**
 * Opens `name` relative to `dirfd` (`openat`) and returns the new fd. EINTR
 * (an open of a FIFO interrupted by a signal) is retried. Add O_CLOEXEC
 * yourself if wanted; add O_NOFOLLOW to refuse a symbolic link (ELOOP).
 *
 * @param dirfd directory fd (an O_PATH fd is fine) or AT_FDCWD
 * @param name name or relative path; absolute paths ignore `dirfd`
 * @param flags O_* flags
 * @param mode permission bits for O_CREAT/O_TMPFILE, before the umask
 */
export function openat(dirfd: number, name: PathArg, flags: number, mode: number = 0o644): number {
  const fd = openatOrErrno(dirfd, name, flags, mode);
  if (fd < 0) throw new SyscallError("openat", -fd, at(dirfd, name));
  return fd;
}

/** {@linkcode openat} answering a failure with its errno, negated (see {@linkcode openat2OrErrno}). */
export function openatOrErrno(
  dirfd: number,
  name: PathArg,
  flags: number,
  mode: number = 0o644,
): number {
  const symbols = libc();
  for (;;) {
    // The scratch path again on every try: nothing else ran in between.
    const fd = symbols.openat(dirfd, scratchPath("openat", name), flags, mode);
    if (fd >= 0) return fd;
    const errno = lastErrno();
    if (errno !== EINTR) return -errno;
  }
}

/** How {@linkcode openat2} opens and resolves (`struct open_how`). */
export interface OpenHow {
  /** O_* flags. */
  flags: number;
  /**
   * Permission bits; must be 0 (the default) unless `flags` has O_CREAT or
   * O_TMPFILE, or the kernel answers EINVAL.
   */
  mode?: number;
  /** RESOLVE_* flags restricting path resolution. */
  resolve: number;
}

/** Size of `struct open_how` (flags, mode, resolve: u64 each). */
const OPEN_HOW_SIZE = 24;
const SYS_OPENAT2 = BigInt(SYS_openat2);
const SYS_GETDENTS64 = BigInt(SYS_getdents64);
const OPEN_HOW_BYTES = BigInt(OPEN_HOW_SIZE);
/** open_how of the call in progress, reused: one malloc less per open. */
const openHowBuffer = allocateBytes(OPEN_HOW_SIZE);
const openHowView = new DataView(openHowBuffer.buffer);

/**
 * Opens `path` relative to `dirfd` with resolution restrictions (`openat2`,
 * Linux 5.6+): RESOLVE_BENEATH fails with EXDEV when the path would leave
 * `dirfd`'s tree (through "..", an absolute path or a symbolic link),
 * RESOLVE_IN_ROOT treats `dirfd` as "/", RESOLVE_NO_SYMLINKS fails with ELOOP
 * on any symbolic link, RESOLVE_NO_MAGICLINKS refuses /proc magic links.
 * Unknown flags are EINVAL. Throws ENOSYS on kernels without openat2: check
 * {@linkcode openat2Supported} and fall back yourself.
 */
export function openat2(dirfd: number, path: PathArg, how: OpenHow): number {
  const fd = openat2OrErrno(dirfd, path, how);
  if (fd < 0) throw new SyscallError("openat2", -fd, at(dirfd, path));
  return fd;
}

/**
 * {@linkcode openat2} answering a failure with its errno, negated, instead of
 * throwing: for callers to whom a failure is an ordinary answer, such as a
 * LOOKUP of a name that does not exist. Building an Error costs about 1.3 µs
 * in Deno, more than the system call (2 µs for a missing name on tmpfs).
 * A name holding a NUL byte still throws (EINVAL).
 */
export function openat2OrErrno(dirfd: number, path: PathArg, how: OpenHow): number {
  const symbols = libc();
  for (;;) {
    const name = scratchPath("openat2", path);
    writeU64(openHowView, 0, how.flags >>> 0);
    writeU64(openHowView, 8, (how.mode ?? 0) >>> 0);
    writeU64(openHowView, 16, how.resolve >>> 0);
    const fd = symbols.syscall_openat2(SYS_OPENAT2, dirfd, name, openHowBuffer, OPEN_HOW_BYTES);
    if (fd >= 0n) return Number(fd);
    const errno = lastErrno();
    if (errno !== EINTR) return -errno;
  }
}

let openat2Probe: boolean | undefined;

/**
 * True when the running kernel (and any seccomp filter) lets openat2 through.
 * Probes once by opening "/" as an O_PATH fd and caches the answer: ENOSYS
 * (old kernel) or EPERM (a seccomp filter) means unsupported.
 */
export function openat2Supported(): boolean {
  if (openat2Probe !== undefined) return openat2Probe;
  try {
    const fd = openat2(AT_FDCWD, "/", { flags: O_PATH | O_DIRECTORY | O_CLOEXEC, resolve: 0 });
    libc().close(fd);
    openat2Probe = true;
  } catch (error) {
    if (!(error instanceof SyscallError) || (error.errno !== ENOSYS && error.errno !== EPERM)) {
      throw error;
    }
    openat2Probe = false;
  }
  return openat2Probe;
}

const SYS_OPEN_TREE = BigInt(SYS_open_tree);

/**
 * A new O_PATH fd (close-on-exec) of the file `fd` holds, any kind of fd and
 * file, with no name looked up: `open_tree(fd, "", AT_EMPTY_PATH)` without
 * OPEN_TREE_CLONE, which the kernel documents as the same as an O_PATH
 * openat of that file. A failure is its errno, negated: ENOSYS before Linux
 * 5.2, EPERM under a seccomp filter that refuses open_tree.
 */
export function pathFdOfOrErrno(fd: number): number {
  const flags = AT_EMPTY_PATH | OPEN_TREE_CLOEXEC;
  for (;;) {
    const path = scratchPath("open_tree", "");
    const result = libc().syscall_open_tree(SYS_OPEN_TREE, fd, path, flags);
    if (result >= 0n) return Number(result);
    const errno = lastErrno();
    if (errno !== EINTR) return -errno;
  }
}

/**
 * The path `/proc/self/fd/N` of an open fd. Opening it follows the fd's
 * "magic link" straight to the inode the fd holds, with no lookup by name.
 */
export function procSelfFdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/**
 * The environment variable naming an fd of the directory `/proc/self/fd`,
 * opened before a chroot that leaves no /proc behind (`vhostd fs --sandbox
 * chroot`). Every isolate of the process (Workers too) reads it.
 */
export const PROC_SELF_FD_DIR_ENV = "VHOSTD_PROC_SELF_FD_DIR";

/** This isolate's view of {@linkcode PROC_SELF_FD_DIR_ENV}; null: not read yet. */
let procSelfFdDir: number | undefined | null = null;

function procSelfFdDirectory(): number | undefined {
  if (procSelfFdDir === null) {
    let value: string | undefined;
    try {
      value = Deno.env.get(PROC_SELF_FD_DIR_ENV);
    } catch {
      value = undefined; // no env permission: nothing was set either
    }
    procSelfFdDir = value === undefined || !/^\d+$/.test(value) ? undefined : Number(value);
  }
  return procSelfFdDir;
}

/**
 * From now on, this process reaches `/proc/self/fd/N` as `N` in `dirfd` (a
 * directory fd of /proc/self/fd): for this isolate and, through the
 * environment, for Workers started later.
 */
export function useProcSelfFdDirectory(dirfd: number): void {
  Deno.env.set(PROC_SELF_FD_DIR_ENV, String(dirfd));
  procSelfFdDir = dirfd;
}

/**
 * Where `/proc/self/fd/N` of `fd` is, as the (dirfd, name) pair of an *at
 * call: `(AT_FDCWD, "/proc/self/fd/N")`, or `(dirfd, "N")` after
 * {@linkcode useProcSelfFdDirectory}.
 */
export function procSelfFdAt(fd: number): [number, string] {
  const dirfd = procSelfFdDirectory();
  return dirfd === undefined ? [AT_FDCWD, procSelfFdPath(fd)] : [dirfd, String(fd)];
}

/**
 * Opens the file an fd refers to anew, with new access flags, through
 * `/proc/self/fd/N` (how virtiofsd turns an O_PATH fd from its inode table
 * into an fd it can read, write or list). This is safe against a guest that
 * renames or replaces files: the kernel jumps from the magic link directly to
 * the inode held by `fd`, so no name is looked up and no symbolic link in the
 * shared directory is followed. If `fd` itself holds a symbolic link (an
 * O_PATH|O_NOFOLLOW fd) the open fails with ELOOP instead of following it.
 *
 * O_NOFOLLOW is cleared (it would refuse the magic link itself) and so are
 * O_CREAT and O_EXCL (the file exists). Add O_CLOEXEC yourself if wanted.
 */
export function reopenFd(fd: number, flags: number): number {
  const [dirfd, name] = procSelfFdAt(fd);
  return openat(dirfd, name, flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL), 0);
}

// ---------------------------------------------------------------------------
// Metadata.

/** File status from {@linkcode fstatat} (`struct statx`). */
export interface StatxResult {
  /** File type (S_IF*) and permission bits. */
  mode: number;
  /** Number of hard links. */
  nlink: number;
  /** Owner user id. */
  uid: number;
  /** Owner group id. */
  gid: number;
  /** Device number of a device file, `makedev(major, minor)`. */
  rdev: number;
  /** Inode number. */
  ino: bigint;
  /** Device holding the file, `makedev(major, minor)` (what stat's st_dev says). */
  dev: number;
  /** Size in bytes. */
  size: number;
  /** Allocated 512-byte blocks. */
  blocks: number;
  /** Preferred I/O block size. */
  blksize: number;
  /** Last access, seconds since the epoch. */
  atimeSec: number;
  /** Last access, nanoseconds within the second. */
  atimeNsec: number;
  /** Last modification, seconds since the epoch. */
  mtimeSec: number;
  /** Last modification, nanoseconds within the second. */
  mtimeNsec: number;
  /** Last status change, seconds since the epoch. */
  ctimeSec: number;
  /** Last status change, nanoseconds within the second. */
  ctimeNsec: number;
}

/** Size of `struct statx`. */
const STATX_SIZE = 256;
/**
 * Byte offsets of the fields of the kernel's `struct statx`
 * (include/uapi/linux/stat.h), for readers of {@linkcode statxViewOrErrno}.
 * Times are an i64 of seconds and a u32 of nanoseconds.
 */
export const STATX_FIELD = {
  mask: 0,
  blksize: 4,
  nlink: 16,
  uid: 20,
  gid: 24,
  mode: 28,
  ino: 32,
  size: 40,
  blocks: 48,
  atimeSec: 64,
  atimeNsec: 72,
  ctimeSec: 96,
  ctimeNsec: 104,
  mtimeSec: 112,
  mtimeNsec: 120,
  rdevMajor: 128,
  rdevMinor: 132,
  devMajor: 136,
  devMinor: 140,
  mntId: 144,
} as const;
const F = STATX_FIELD;
/** The statx result of the call in progress, reused: read out before the next call. */
const statxBuffer = allocateBytes(STATX_SIZE);
const statxView = new DataView(statxBuffer.buffer);
const TWO_POW_32 = 0x1_0000_0000;

/** A little-endian i64 as a number (exact below 2^53; rounded once above, as Number(bigint)). */
function readI64(view: DataView, offset: number): number {
  return view.getInt32(offset + 4, true) * TWO_POW_32 + view.getUint32(offset, true);
}

/**
 * A device number from its major and minor parts, encoded as glibc's
 * `makedev` does (the value `stat` reports in st_dev and st_rdev).
 */
export function makedev(major: number, minor: number): number {
  // Multiplications instead of shifts: the result may pass 2^32.
  return (minor & 0xff) + (major & 0xfff) * 0x100 + Math.floor(minor / 0x100) * 0x10_0000 +
    Math.floor(major / 0x1000) * 0x1000_0000_0000;
}

/**
 * Status of `name` relative to `dirfd` (`statx`). `flags` takes
 * AT_SYMLINK_NOFOLLOW (stat a link itself) and AT_EMPTY_PATH (with name ""
 * stat `dirfd` itself, O_PATH fds included), and AT_NO_AUTOMOUNT.
 */
export function fstatat(dirfd: number, name: PathArg, flags: number): StatxResult {
  const st = fstatatOrErrno(dirfd, name, flags);
  if (typeof st === "number") throw new SyscallError("statx", -st, at(dirfd, name));
  return st;
}

/**
 * The raw `struct statx` of {@linkcode fstatat} (STATX_BASIC_STATS asked
 * for), or its errno negated: a view of one buffer kept for every call,
 * valid until the next statx of this isolate. For a caller
 * that copies a few fields straight into a reply (GETATTR's fuse_attr)
 * instead of making a status object first.
 */
export function statxViewOrErrno(dirfd: number, name: PathArg, flags: number): DataView | number {
  const path = scratchPath("statx", name);
  if (libc().statx(dirfd, path, flags, STATX_BASIC_STATS, statxBuffer) < 0) {
    return -lastErrno();
  }
  return statxView;
}

/**
 * {@linkcode fstatat} answering a failure with its errno, negated: a name
 * that is not there is an ordinary answer for a caller that only asks, and
 * an Error costs more than the statx (see {@linkcode openat2OrErrno}).
 */
export function fstatatOrErrno(dirfd: number, name: PathArg, flags: number): StatxResult | number {
  const view = statxViewOrErrno(dirfd, name, flags);
  if (typeof view === "number") return view;
  const result: StatxResult = {
    blksize: view.getUint32(F.blksize, true),
    nlink: view.getUint32(F.nlink, true),
    uid: view.getUint32(F.uid, true),
    gid: view.getUint32(F.gid, true),
    mode: view.getUint16(F.mode, true),
    ino: view.getBigUint64(F.ino, true),
    size: readU64(view, F.size),
    blocks: readU64(view, F.blocks),
    atimeSec: readI64(view, F.atimeSec),
    atimeNsec: view.getUint32(F.atimeNsec, true),
    ctimeSec: readI64(view, F.ctimeSec),
    ctimeNsec: view.getUint32(F.ctimeNsec, true),
    mtimeSec: readI64(view, F.mtimeSec),
    mtimeNsec: view.getUint32(F.mtimeNsec, true),
    rdev: makedev(view.getUint32(F.rdevMajor, true), view.getUint32(F.rdevMinor, true)),
    dev: makedev(view.getUint32(F.devMajor, true), view.getUint32(F.devMinor, true)),
  };
  return result;
}

/**
 * True when `fd` (O_PATH fds included, never following a link) holds the
 * host file `dev`/`ino` (as {@linkcode fstatat} reports them); false when
 * it holds another or its statx fails. No status object is made: an
 * identity check after an open needs two numbers, not the whole struct.
 */
export function fdHoldsFile(fd: number, dev: number, ino: bigint): boolean {
  const flags = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW;
  if (libc().statx(fd, scratchPath("statx", ""), flags, STATX_INO, statxBuffer) < 0) return false;
  return (statxView.getUint32(F.mask, true) & STATX_INO) !== 0 && statxIsFile(statxView, dev, ino);
}

/**
 * True when the raw `struct statx` in `view` (from {@linkcode statxViewOrErrno})
 * describes the host file `dev`/`ino`, as {@linkcode fstatat} reports them.
 */
export function statxIsFile(view: DataView, dev: number, ino: bigint): boolean {
  return view.getBigUint64(F.ino, true) === ino &&
    makedev(view.getUint32(F.devMajor, true), view.getUint32(F.devMinor, true)) === dev;
}

/** Direct-I/O alignment of an open file (`statx` STATX_DIOALIGN). */
export interface DioAlignment {
  /** Alignment of user memory buffers (stx_dio_mem_align). */
  memAlign: number;
  /** Alignment of file offsets and I/O segment lengths (stx_dio_offset_align). */
  offsetAlign: number;
}

/**
 * The direct-I/O alignment `fd`'s file system reports (`statx` with
 * STATX_DIOALIGN, Linux 6.1+), or `undefined` when it reports none (an older
 * kernel, or a file system that does not say). Both values are 0 when the
 * file system reports that direct I/O is not supported on this file.
 */
export function dioAlignment(fd: number): DioAlignment | undefined {
  const bytes = allocateBytes(STATX_SIZE);
  if (libc().statx(fd, cString("statx", ""), AT_EMPTY_PATH, STATX_DIOALIGN, bytes) < 0) {
    throwLastError("statx", `fd ${fd}`);
  }
  const view = new DataView(bytes.buffer);
  if ((view.getUint32(0, true) & STATX_DIOALIGN) === 0) return undefined;
  // struct statx: stx_dio_mem_align at 152, stx_dio_offset_align at 156.
  return { memAlign: view.getUint32(152, true), offsetAlign: view.getUint32(156, true) };
}

/** File system statistics from {@linkcode fstatfs} (`struct statfs`). */
export interface StatfsResult {
  /** File system type magic (EXT4_SUPER_MAGIC, ...). */
  type: number;
  /** Optimal transfer block size. */
  bsize: number;
  /** Fragment size: the unit of `blocks`, `bfree` and `bavail`. */
  frsize: number;
  /** Total data blocks. */
  blocks: number;
  /** Free blocks. */
  bfree: number;
  /** Free blocks available to unprivileged users. */
  bavail: number;
  /** Total inodes. */
  files: number;
  /** Free inodes. */
  ffree: number;
  /** Maximum file name length. */
  namelen: number;
  /** Mount flags (ST_RDONLY, ST_NOSUID, ...). */
  flags: number;
}

/** Size of x86-64 `struct statfs`. */
const STATFS_SIZE = 120;

/** Statistics of the file system holding `fd` (`fstatfs`); O_PATH fds work. */
export function fstatfs(fd: number): StatfsResult {
  const bytes = allocateBytes(STATFS_SIZE);
  if (libc().fstatfs(fd, bytes) < 0) throwLastError("fstatfs", `fd ${fd}`);
  const view = new DataView(bytes.buffer);
  // x86-64 layout: every field is 8 bytes; f_fsid (two ints) sits at 56.
  return {
    type: readU64(view, 0),
    bsize: readU64(view, 8),
    blocks: readU64(view, 16),
    bfree: readU64(view, 24),
    bavail: readU64(view, 32),
    files: readU64(view, 40),
    ffree: readU64(view, 48),
    namelen: readU64(view, 64),
    frsize: readU64(view, 72),
    flags: readU64(view, 80),
  };
}

// ---------------------------------------------------------------------------
// Directory entries.

/** Creates directory `name` in `dirfd` (`mkdirat`); `mode` is reduced by the umask. */
export function mkdirat(dirfd: number, name: PathArg, mode: number): void {
  if (libc().mkdirat(dirfd, scratchPath("mkdirat", name), mode) < 0) {
    throwLastError("mkdirat", at(dirfd, name));
  }
}

/**
 * Creates a special file `name` in `dirfd` (`mknodat`): `mode` holds the type
 * (S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK) and permission bits; `dev`
 * is the device number ({@linkcode makedev}) for S_IFCHR and S_IFBLK.
 */
export function mknodat(dirfd: number, name: PathArg, mode: number, dev: number | bigint): void {
  const device = integerArg("mknodat", "dev", dev);
  if (libc().mknodat(dirfd, scratchPath("mknodat", name), mode, device) < 0) {
    throwLastError("mknodat", at(dirfd, name));
  }
}

/** Creates a symbolic link `name` in `dirfd` pointing at `target` (`symlinkat`). */
export function symlinkat(target: PathArg, dirfd: number, name: PathArg): void {
  const targetBytes = pathBytes("symlinkat", target);
  if (libc().symlinkat(targetBytes, dirfd, pathBytes("symlinkat", name)) < 0) {
    throwLastError("symlinkat", at(dirfd, name));
  }
}

/** The largest link target readlinkat will grow its buffer to. */
const READLINK_MAX = 1 << 16;

/**
 * The target of symbolic link `name` in `dirfd` (`readlinkat`), as the exact
 * bytes stored (targets need not be UTF-8). With name "" it reads the link an
 * O_PATH|O_NOFOLLOW fd holds. EINVAL when the file is not a symbolic link.
 */
export function readlinkat(dirfd: number, name: PathArg): Uint8Array<ArrayBuffer> {
  const path = pathBytes("readlinkat", name);
  // Linux caps link targets at a page; grow anyway rather than truncate.
  for (let size = 4096;; size *= 2) {
    const buf = allocateBytes(size);
    const n = Number(libc().readlinkat(dirfd, path, buf, BigInt(size)));
    if (n < 0) throwLastError("readlinkat", at(dirfd, name));
    if (n < size) return buf.slice(0, n);
    if (size >= READLINK_MAX) {
      throw new SyscallError("readlinkat", ENAMETOOLONG, at(dirfd, name));
    }
  }
}

/** Removes `name` from `dirfd` (`unlinkat`); with AT_REMOVEDIR it removes an empty directory. */
export function unlinkat(dirfd: number, name: PathArg, flags: number = 0): void {
  if (libc().unlinkat(dirfd, scratchPath("unlinkat", name), flags) < 0) {
    throwLastError("unlinkat", at(dirfd, name));
  }
}

/**
 * Renames `oldname` in `olddirfd` to `newname` in `newdirfd` (`renameat2`).
 * `flags`: RENAME_NOREPLACE (EEXIST instead of replacing), RENAME_EXCHANGE
 * (swap the two atomically), RENAME_WHITEOUT, or 0 for plain rename.
 */
export function renameat2(
  olddirfd: number,
  oldname: PathArg,
  newdirfd: number,
  newname: PathArg,
  flags: number = 0,
): void {
  const oldPath = pathBytes("renameat2", oldname);
  const newPath = pathBytes("renameat2", newname);
  if (libc().renameat2(olddirfd, oldPath, newdirfd, newPath, flags) < 0) {
    throwLastError("renameat2", `${at(olddirfd, oldname)} -> ${at(newdirfd, newname)}`);
  }
}

/**
 * Makes a hard link `newname` in `newdirfd` to `oldname` in `olddirfd`
 * (`linkat`). To link the file an O_PATH fd holds: either `linkat(fd, "",
 * dir, name, AT_EMPTY_PATH)`, which needs CAP_DAC_READ_SEARCH, or
 * `linkat(...procSelfFdAt(fd), dir, name, AT_SYMLINK_FOLLOW)`.
 */
export function linkat(
  olddirfd: number,
  oldname: PathArg,
  newdirfd: number,
  newname: PathArg,
  flags: number = 0,
): void {
  const oldPath = pathBytes("linkat", oldname);
  const newPath = pathBytes("linkat", newname);
  if (libc().linkat(olddirfd, oldPath, newdirfd, newPath, flags) < 0) {
    throwLastError("linkat", `${at(olddirfd, oldname)} -> ${at(newdirfd, newname)}`);
  }
}

// ---------------------------------------------------------------------------
// Attributes.

/**
 * Sets the permission bits of an open file (`fchmod`). An O_PATH fd gives
 * EBADF: use {@linkcode chmodProcFd} for those.
 */
export function fchmod(fd: number, mode: number): void {
  if (libc().fchmod(fd, mode) < 0) throwLastError("fchmod", `fd ${fd}`);
}

/**
 * Sets the permission bits of the file an fd holds, O_PATH fds included, by
 * `chmod("/proc/self/fd/N")`: the magic link leads straight to the inode with
 * no name lookup. (Linux's fchmodat cannot take AT_SYMLINK_NOFOLLOW, so this
 * is how a passthrough server changes modes without following links.)
 */
export function chmodProcFd(fd: number, mode: number): void {
  const [dirfd, name] = procSelfFdAt(fd);
  if (libc().fchmodat(dirfd, cString("fchmodat", name), mode, 0) < 0) {
    throwLastError("fchmodat", at(dirfd, name));
  }
}

/**
 * Changes the owner and group of `name` in `dirfd` (`fchownat`); -1 leaves an
 * id unchanged. `flags`: AT_SYMLINK_NOFOLLOW (change a link itself),
 * AT_EMPTY_PATH (with name "", change `dirfd` itself, O_PATH fds included).
 */
export function fchownat(
  dirfd: number,
  name: PathArg,
  uid: number,
  gid: number,
  flags: number,
): void {
  if (libc().fchownat(dirfd, scratchPath("fchownat", name), uid >>> 0, gid >>> 0, flags) < 0) {
    throwLastError("fchownat", at(dirfd, name));
  }
}

/** A time for {@linkcode utimensat}: an exact time, the current time, or unchanged. */
export type TimeSpec = { sec: number | bigint; nsec: number } | "now" | "omit";

function writeTimespec(view: DataView, offset: number, time: TimeSpec): void {
  let sec = 0n;
  let nsec: number;
  if (time === "now") nsec = UTIME_NOW;
  else if (time === "omit") nsec = UTIME_OMIT;
  else {
    sec = integerArg("utimensat", "seconds", time.sec);
    // The kernel checks the range (EINVAL outside 0..999999999 unless UTIME_*).
    nsec = Number(integerArg("utimensat", "nanoseconds", time.nsec));
  }
  view.setBigInt64(offset, sec, true);
  view.setBigInt64(offset + 8, BigInt(nsec), true);
}

/**
 * Sets the access and modification times of `name` in `dirfd`
 * (`utimensat`). `flags`: AT_SYMLINK_NOFOLLOW (a link itself), AT_EMPTY_PATH
 * (with name "", `dirfd` itself, O_PATH fds included).
 */
export function utimensat(
  dirfd: number,
  name: PathArg,
  atime: TimeSpec,
  mtime: TimeSpec,
  flags: number,
): void {
  const times = allocateBytes(32);
  const view = new DataView(times.buffer);
  writeTimespec(view, 0, atime);
  writeTimespec(view, 16, mtime);
  if (libc().utimensat(dirfd, scratchPath("utimensat", name), times, flags) < 0) {
    throwLastError("utimensat", at(dirfd, name));
  }
}

/**
 * Checks access to `name` in `dirfd` (`faccessat`): `mode` is F_OK or a mix
 * of R_OK, W_OK, X_OK; `flags` AT_EACCESS, AT_SYMLINK_NOFOLLOW,
 * AT_EMPTY_PATH. Throws (EACCES, ENOENT, ...) when access is denied.
 */
export function faccessat(dirfd: number, name: PathArg, mode: number, flags: number = 0): void {
  if (libc().faccessat(dirfd, scratchPath("faccessat", name), mode, flags) < 0) {
    throwLastError("faccessat", at(dirfd, name));
  }
}

// ---------------------------------------------------------------------------
// Directory listing.

/**
 * Reads directory entries from directory fd `fd` into `buf` (`getdents64`)
 * and returns the byte count, 0 at the end. Each call continues where the
 * last stopped; {@linkcode lseek64} to an entry's `off` resumes after that
 * entry. EINVAL when `buf` cannot hold even one entry. Decode with
 * {@linkcode parseDirents}.
 */
export function getdents64(fd: number, buf: Uint8Array): number {
  const n = libc().syscall_getdents64(SYS_GETDENTS64, fd, buf, BigInt(buf.length));
  if (n < 0n) throwLastError("getdents64", `fd ${fd}`);
  return Number(n);
}

/** One record of a getdents64 buffer (`struct linux_dirent64`). */
export interface Dirent {
  /** Inode number. */
  ino: bigint;
  /** Directory offset of the next entry: seek here to resume after this one. */
  off: bigint;
  /** File type, DT_* (DT_UNKNOWN when the file system does not say). */
  type: number;
  /** The name's bytes, without the NUL (a copy, independent of the buffer, unless asked otherwise). */
  name: Uint8Array<ArrayBuffer>;
}

/** Where linux_dirent64's fields are in a record (d_ino, d_off, d_reclen, d_type, d_name). */
export const DIRENT_FIELD = { ino: 0, off: 8, reclen: 16, type: 18, name: 19 } as const;

/**
 * Checks the record at byte `at` of the first `n` bytes of a buffer filled
 * by {@linkcode getdents64} (`view` a DataView of the same bytes, from the
 * buffer's start) and returns the index of its name's NUL. Throws a
 * SyscallError with EIO when it is malformed (a record length that
 * overruns `n`, a name without NUL). The record's length is
 * `view.getUint16(at + DIRENT_FIELD.reclen, true)`.
 */
export function direntNameEnd(buf: Uint8Array, n: number, at: number, view: DataView): number {
  if (n - at < DIRENT_FIELD.name) {
    throw new SyscallError("getdents64", EIO, `truncated record at byte ${at}`);
  }
  const reclen = view.getUint16(at + DIRENT_FIELD.reclen, true);
  if (reclen < DIRENT_FIELD.name + 1 || reclen > n - at) {
    throw new SyscallError("getdents64", EIO, `bad record length ${reclen} at byte ${at}`);
  }
  // The NUL found in place: no view made for the search.
  const recordEnd = at + reclen;
  let nameEnd = at + DIRENT_FIELD.name;
  while (nameEnd < recordEnd && buf[nameEnd] !== 0) nameEnd++;
  if (nameEnd === recordEnd) {
    throw new SyscallError("getdents64", EIO, `unterminated name at byte ${at}`);
  }
  return nameEnd;
}

/**
 * The entry of the record at byte `at` (checked by {@linkcode direntNameEnd},
 * which gave `nameEnd`); its name a view of `buf` with `nameAsView`.
 */
export function direntAt(
  buf: Uint8Array,
  view: DataView,
  at: number,
  nameEnd: number,
  nameAsView: boolean,
): Dirent {
  const nameStart = at + DIRENT_FIELD.name;
  return {
    ino: view.getBigUint64(at + DIRENT_FIELD.ino, true),
    off: view.getBigInt64(at + DIRENT_FIELD.off, true),
    type: view.getUint8(at + DIRENT_FIELD.type),
    name: nameAsView
      ? buf.subarray(nameStart, nameEnd) as Uint8Array<ArrayBuffer>
      : buf.slice(nameStart, nameEnd),
  };
}

/**
 * Decodes the first `n` bytes of a buffer filled by {@linkcode getdents64}.
 * Throws a SyscallError with EIO when a record is malformed (a record length
 * that overruns `n` or a name without NUL). With `namesAsViews` the names
 * are views of `buf` (no ArrayBuffer, so no malloc, per entry), valid until
 * `buf` is filled again.
 */
export function parseDirents(buf: Uint8Array, n: number, namesAsViews = false): Dirent[] {
  if (!(Number.isInteger(n) && n >= 0 && n <= buf.length)) {
    throw new SyscallError("getdents64", EINVAL, `byte count ${n}, buffer ${buf.length}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, n);
  const entries: Dirent[] = [];
  for (let at = 0; at < n; at += view.getUint16(at + DIRENT_FIELD.reclen, true)) {
    entries.push(direntAt(buf, view, at, direntNameEnd(buf, n, at, view), namesAsViews));
  }
  return entries;
}

/**
 * `lseek` with a bigint offset and result: exact for the 63-bit hash cookies
 * that directories (ext4, xfs) use as entry offsets, which a number would
 * round. Returns the new offset.
 */
export function lseek64(fd: number, offset: bigint, whence: number): bigint {
  const result = libc().lseek(fd, offset, whence);
  if (result < 0n) throwLastError("lseek", `fd ${fd}, offset ${offset}`);
  return result;
}

// ---------------------------------------------------------------------------
// Process.

/**
 * Sets the file mode creation mask (`umask`) and returns the previous one.
 * The mask belongs to the process: every Worker sees the change.
 */
export function umask(mask: number): number {
  return libc().umask(mask);
}

/** The real user id of the process (`getuid`). */
export function getuid(): number {
  return libc().getuid();
}

/** The real group id of the process (`getgid`). */
export function getgid(): number {
  return libc().getgid();
}
