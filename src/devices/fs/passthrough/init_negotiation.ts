/**
 * What vhostd accepts of the guest's INIT offer, and the limits it answers
 * with (the FUSE session's parameters; they are migrated with the state).
 *
 * @module
 */

import { EPROTO } from "../../../../ffi/mod.ts";
import {
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FuseInitFlag,
  FuseInitFlag2,
} from "../fuse/fuse_abi.ts";
import type { FuseInitArgs } from "../fuse/fuse_request.ts";
import { FsError } from "./fs_errors.ts";
import type { FsInitResult } from "./fs_types.ts";
import type { XattrOps } from "./xattr_ops.ts";

const PAGE_SIZE = 4096;
/** Pages per request when the guest accepts MAX_PAGES (1 MiB requests). */
const MAX_PAGES = 256;
/** The kernel's own limit without MAX_PAGES. */
const DEFAULT_MAX_PAGES = 32;

/**
 * INIT capabilities vhostd accepts when the guest offers them. Not
 * WRITEBACK_CACHE (the host file would lag the guest's writes), POSIX_ACL
 * (only with `posixAcl`, see xattr_ops.ts), HANDLE_KILLPRIV (v1: it would
 * ask to clear bits on every write, even a privileged one), locks,
 * EXPORT_SUPPORT or DAX.
 */
const ACCEPTED_INIT_FLAGS = FuseInitFlag.ASYNC_READ | FuseInitFlag.ATOMIC_O_TRUNC |
  FuseInitFlag.BIG_WRITES | FuseInitFlag.AUTO_INVAL_DATA | FuseInitFlag.DO_READDIRPLUS |
  FuseInitFlag.READDIRPLUS_AUTO | FuseInitFlag.ASYNC_DIO | FuseInitFlag.PARALLEL_DIROPS |
  FuseInitFlag.MAX_PAGES | FuseInitFlag.HANDLE_KILLPRIV_V2;

/**
 * The session negotiated from the guest's INIT `args`: the offered flags
 * vhostd accepts, with what `xattr` accepts (the POSIX ACL flags), and
 * CREATE_SUPP_GROUP in `flags2` only when operations run as their caller
 * (`switching`: without a switch the group could not be used). EPROTO for
 * a major version below 7, before `xattr` is asked.
 */
export function negotiateInit(
  args: FuseInitArgs,
  xattr: Pick<XattrOps, "initFlags">,
  switching: boolean,
): FsInitResult {
  if (args.major < FUSE_KERNEL_VERSION) {
    throw new FsError(EPROTO, `FUSE major version ${args.major} is too old`);
  }
  const flags = ((args.flags & ACCEPTED_INIT_FLAGS) | xattr.initFlags(args.flags)) >>> 0;
  const maxPages = (flags & FuseInitFlag.MAX_PAGES) !== 0 ? MAX_PAGES : DEFAULT_MAX_PAGES;
  return {
    flags,
    flags2: switching ? (args.flags2 & FuseInitFlag2.CREATE_SUPP_GROUP) >>> 0 : 0,
    maxWrite: maxPages * PAGE_SIZE,
    maxReadahead: args.maxReadahead,
    maxPages,
    timeGran: 1,
    minor: FUSE_KERNEL_MINOR_VERSION,
  };
}
