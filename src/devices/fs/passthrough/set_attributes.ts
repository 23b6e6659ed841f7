/**
 * SETATTR's changes to a file: mode, owner, size and times, each run on its
 * own as the guest caller (so the host decides who may change what, and a
 * refused change is retried with the involved groups before anything else
 * changes: group_claims.ts).
 *
 * @module
 */

import {
  AT_EMPTY_PATH,
  AT_SYMLINK_NOFOLLOW,
  chmodProcFd,
  closeQuietly,
  EINVAL,
  EISDIR,
  fchmod,
  fchownat,
  ftruncate,
  O_ACCMODE,
  O_CLOEXEC,
  O_RDONLY,
  O_WRONLY,
  reopenFd,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  type TimeSpec,
  utimensat,
} from "../../../../ffi/mod.ts";
import { FuseSetattrValid } from "../fuse/fuse_abi.ts";
import type { FuseSetattrArgs } from "../fuse/fuse_request.ts";
import type { CallerScope } from "./caller_scope.ts";
import type { Caller } from "./credentials.ts";
import { fileOffset } from "./file_offset.ts";
import { FsError } from "./fs_errors.ts";
import { groupOfFd, SETGID_BIT } from "./group_claims.ts";
import type { Handle } from "./handle_table.ts";
import type { Inode } from "./inode_table.ts";
import { PERMISSION_BITS } from "./fs_attr.ts";

/**
 * Applies the changes `args.valid` selects to `inode`, each as `caller`
 * through `scope` (see PassthroughFs.setattr); `handle` is the open handle
 * of `inode` FATTR_FH names, or undefined. Throws at the first change that
 * fails; the ones before it stay made.
 */
export function setAttributes(
  scope: CallerScope,
  inode: Inode,
  handle: Handle | undefined,
  args: FuseSetattrArgs,
  caller: Caller | undefined,
): void {
  const valid = args.valid;
  const killSuidgid = (valid & FuseSetattrValid.KILL_SUIDGID) !== 0;
  const newGid = (valid & FuseSetattrValid.GID) !== 0 ? args.gid : undefined;
  // Each change alone, so a refused one is retried before anything else changes.
  const change = (operation: () => void, eager = false) =>
    scope.asCallerClaiming(caller, () => [groupOfFd(inode.fd), newGid], operation, eager);
  if ((valid & FuseSetattrValid.MODE) !== 0 && inode.type !== S_IFLNK) {
    const mode = args.mode & PERMISSION_BITS;
    change(() => {
      if (handle !== undefined) fchmod(handle.fd, mode);
      else chmodProcFd(inode.fd, mode);
    }, (mode & SETGID_BIT) !== 0);
  }
  if ((valid & (FuseSetattrValid.UID | FuseSetattrValid.GID)) !== 0) {
    const uid = (valid & FuseSetattrValid.UID) !== 0 ? args.uid : -1;
    const gid = newGid ?? -1;
    change(() =>
      scope.maybeKillingPrivileges(killSuidgid, () => {
        fchownat(inode.fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
      })
    );
  }
  if ((valid & FuseSetattrValid.SIZE) !== 0) {
    change(() =>
      scope.maybeKillingPrivileges(killSuidgid, () => truncate(inode, handle, args.size))
    );
  }
  const times = FuseSetattrValid.ATIME | FuseSetattrValid.MTIME |
    FuseSetattrValid.ATIME_NOW | FuseSetattrValid.MTIME_NOW;
  if ((valid & times) !== 0) {
    const atime: TimeSpec = (valid & FuseSetattrValid.ATIME_NOW) !== 0
      ? "now"
      : (valid & FuseSetattrValid.ATIME) !== 0
      ? { sec: args.atime, nsec: args.atimensec }
      : "omit";
    const mtime: TimeSpec = (valid & FuseSetattrValid.MTIME_NOW) !== 0
      ? "now"
      : (valid & FuseSetattrValid.MTIME) !== 0
      ? { sec: args.mtime, nsec: args.mtimensec }
      : "omit";
    change(() => utimensat(inode.fd, "", atime, mtime, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
  }
}

/** Truncates a regular file to `size`, through `handle` when it is writable. */
function truncate(inode: Inode, handle: Handle | undefined, size: bigint): void {
  if (inode.type === S_IFDIR) throw new FsError(EISDIR, "truncate of a directory");
  if (inode.type !== S_IFREG) throw new FsError(EINVAL, "truncate of a special file");
  const length = fileOffset(size);
  if (handle !== undefined && (handle.flags & O_ACCMODE) !== O_RDONLY) {
    ftruncate(handle.fd, length);
    return;
  }
  const fd = reopenFd(inode.fd, O_WRONLY | O_CLOEXEC);
  try {
    ftruncate(fd, length);
  } finally {
    closeQuietly(fd);
  }
}
