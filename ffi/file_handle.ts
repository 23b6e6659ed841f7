/**
 * File handles (`name_to_handle_at`, `open_by_handle_at`): a persistent,
 * opaque name for a file that the kernel can turn back into an open fd
 * without keeping anything open in between. This is how a passthrough
 * filesystem can know hundreds of thousands of files without holding an fd
 * for each (virtiofsd's `--inode-file-handles`).
 *
 * A handle is kept here as the bytes of the whole `struct file_handle`
 * (`u32 handle_bytes`, `i32 handle_type`, then `handle_bytes` opaque bytes),
 * so it can be compared byte for byte and passed back as is. Opening one
 * needs an fd on the same mount (any file or directory on it that is not an
 * O_PATH fd: the kernel refuses those with EBADF) and CAP_DAC_READ_SEARCH
 * (EPERM otherwise), because a handle bypasses every directory permission on
 * the way to the file.
 *
 * @module
 */

import { EINVAL, SyscallError } from "./errno.ts";
import { lastErrno, libc, throwLastError } from "./libc.ts";
import { allocateBytes } from "./struct.ts";
import type { PathArg } from "./fs.ts";

/** Largest handle payload the kernel produces (`MAX_HANDLE_SZ`). */
export const MAX_HANDLE_SZ = 128;
/** Size of the `struct file_handle` header (`handle_bytes`, `handle_type`). */
export const FILE_HANDLE_HEADER_SIZE = 8;
/** name_to_handle_at: report the 64-bit unique mount id (Linux 6.12+) instead of the reusable int. */
export const AT_HANDLE_MNT_ID_UNIQUE = 0x001;
/** name_to_handle_at: a handle that identifies but need not open the file (Linux 6.5+). */
export const AT_HANDLE_FID = 0x200;

/** A file's handle and the mount it lives on. */
export interface NamedFileHandle {
  /** The whole `struct file_handle`, header included. */
  handle: Uint8Array;
  /** The mount's id: the unique 64-bit id when `uniqueMountId`, else the (reusable) legacy id. */
  mountId: bigint;
  /** True when the kernel gave the unique 64-bit mount id. */
  uniqueMountId: boolean;
}

const encoder = new TextEncoder();
/** Scratch `struct file_handle` of the largest size, reused by every call of this isolate. */
const scratch = allocateBytes(FILE_HANDLE_HEADER_SIZE + MAX_HANDLE_SZ);
const scratchView = new DataView(scratch.buffer);
const mountIdCell = allocateBytes(8);
const mountIdView = new DataView(mountIdCell.buffer);
/** False once the kernel refused AT_HANDLE_MNT_ID_UNIQUE (before 6.12): not asked again. */
let uniqueMountIdSupported = true;

function pathArgument(name: PathArg): Uint8Array<ArrayBuffer> {
  const bytes = typeof name === "string" ? encoder.encode(name) : name;
  if (bytes.includes(0)) {
    throw new SyscallError("name_to_handle_at", EINVAL, "name contains a NUL byte");
  }
  const out = allocateBytes(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * The file handle of `name` relative to `dirfd` (`name_to_handle_at`); with
 * AT_EMPTY_PATH in `flags` and an empty name, of the file `dirfd` holds (an
 * O_PATH fd is fine, a symbolic link gives the link's own handle unless
 * AT_SYMLINK_FOLLOW). Asks for the unique mount id where the kernel has it.
 * Throws SyscallError: EOPNOTSUPP when the filesystem cannot make handles
 * that open files again, EOVERFLOW never in practice (the buffer is
 * MAX_HANDLE_SZ).
 */
export function nameToHandleAt(dirfd: number, name: PathArg, flags: number): NamedFileHandle {
  const path = pathArgument(name);
  const symbols = libc();
  for (;;) {
    scratchView.setUint32(0, MAX_HANDLE_SZ, true);
    scratchView.setInt32(4, 0, true);
    mountIdView.setBigUint64(0, 0n, true);
    const unique = uniqueMountIdSupported;
    const extra = unique ? AT_HANDLE_MNT_ID_UNIQUE : 0;
    if (symbols.name_to_handle_at(dirfd, path, scratch, mountIdCell, flags | extra) === 0) {
      const size = FILE_HANDLE_HEADER_SIZE + scratchView.getUint32(0, true);
      return {
        handle: scratch.slice(0, size),
        mountId: unique ? mountIdView.getBigUint64(0, true) : BigInt(mountIdView.getInt32(0, true)),
        uniqueMountId: unique,
      };
    }
    const errno = lastErrno();
    if (errno === EINVAL && unique) {
      // Kernels before 6.12 know no AT_HANDLE_MNT_ID_UNIQUE: use the int id from now on.
      uniqueMountIdSupported = false;
      continue;
    }
    throw new SyscallError("name_to_handle_at", errno, `dirfd ${dirfd}`);
  }
}

/** The `handle_type` field of a handle from {@linkcode nameToHandleAt}. */
export function fileHandleType(handle: Uint8Array): number {
  return new DataView(handle.buffer, handle.byteOffset, handle.byteLength).getInt32(4, true);
}

/**
 * Opens the file `handle` names (`open_by_handle_at`) with O_* `flags` (add
 * O_CLOEXEC yourself); `mountFd` is any non-O_PATH fd on the handle's
 * mount. Throws SyscallError: ESTALE when the file no longer exists, EPERM
 * without CAP_DAC_READ_SEARCH, EBADF for an O_PATH `mountFd`, EINVAL for a
 * malformed handle.
 */
export function openByHandleAt(mountFd: number, handle: Uint8Array, flags: number): number {
  if (handle.length < FILE_HANDLE_HEADER_SIZE || handle.length > scratch.length) {
    throw new SyscallError("open_by_handle_at", EINVAL, `handle of ${handle.length} bytes`);
  }
  const declared = new DataView(handle.buffer, handle.byteOffset, handle.byteLength)
    .getUint32(0, true);
  if (declared !== handle.length - FILE_HANDLE_HEADER_SIZE) {
    throw new SyscallError("open_by_handle_at", EINVAL, "handle_bytes does not match its length");
  }
  const fd = libc().open_by_handle_at(mountFd, handle.slice(), flags);
  if (fd < 0) throwLastError("open_by_handle_at", `mount fd ${mountFd}`);
  return fd;
}
