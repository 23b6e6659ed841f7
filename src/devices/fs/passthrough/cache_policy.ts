/**
 * What a share's cache policy ({@linkcode FsOptions.cache}, virtiofsd's
 * `--cache`) lets the guest keep: how long entries and attributes stay
 * valid, and the FOPEN_* flags file and directory handles are opened with.
 *
 * The default ("auto"): entries and attributes are valid for 1 s
 * ({@linkcode FsOptions.entryTimeoutSec}); files are opened with no FOPEN_*
 * flags, so the guest page cache is invalidated on open when the file
 * changed (AUTO_INVAL_DATA).
 *
 * @module
 */

import { FuseOpenOutFlag } from "../fuse/fuse_abi.ts";
import { type CachePolicy, type FsOptions, isCachePolicy } from "./fs_types.ts";

/** Default entry and attribute cache timeout, seconds. */
const DEFAULT_TIMEOUT_SEC = 1;

/** Entry and attribute timeouts of each cache policy (virtiofsd's values). */
const CACHE_TIMEOUT_SEC: Record<CachePolicy, number> = {
  never: 0,
  metadata: 86400,
  auto: DEFAULT_TIMEOUT_SEC,
  always: 86400,
};

/** The caching a share allows the guest, resolved once from its options. */
export interface CacheSettings {
  /** How long the guest may cache a name → inode binding, seconds. */
  entryTimeoutSec: number;
  /** How long the guest may cache attributes, seconds. */
  attrTimeoutSec: number;
  /** FOPEN_* flags of file handles. */
  fileOpenFlags: number;
  /** FOPEN_* flags of directory handles. */
  dirOpenFlags: number;
}

/**
 * The cache settings of `opts`: the policy's (default "auto") timeouts
 * unless `entryTimeoutSec` / `attrTimeoutSec` say otherwise, and its open
 * flags. Throws an Error saying why for an unknown policy or a timeout that
 * is not a finite number >= 0.
 */
export function cacheSettings(
  opts: Pick<FsOptions, "cache" | "entryTimeoutSec" | "attrTimeoutSec">,
): CacheSettings {
  const cache = opts.cache ?? "auto";
  if (!isCachePolicy(cache)) throw new Error(`cache must be never, metadata, auto or always`);
  const timeout = CACHE_TIMEOUT_SEC[cache];
  return {
    entryTimeoutSec: checkTimeout(opts.entryTimeoutSec ?? timeout, "entryTimeoutSec"),
    attrTimeoutSec: checkTimeout(opts.attrTimeoutSec ?? timeout, "attrTimeoutSec"),
    fileOpenFlags: cache === "never" || cache === "metadata"
      ? FuseOpenOutFlag.DIRECT_IO
      : cache === "always"
      ? FuseOpenOutFlag.KEEP_CACHE
      : 0,
    dirOpenFlags: cache === "always" || cache === "metadata"
      ? FuseOpenOutFlag.KEEP_CACHE | FuseOpenOutFlag.CACHE_DIR
      : 0,
  };
}

function checkTimeout(value: number, what: string): number {
  if (!Number.isFinite(value) || value < 0) throw new Error(`${what} must be a number >= 0`);
  return value;
}
