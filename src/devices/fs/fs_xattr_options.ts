/**
 * The extended attribute options of `vhostd fs` (`--xattr`, `--posix-acl`,
 * `--xattr-mapping`): their parseArgs specifications, help text and checks.
 *
 * @module
 */

import type { FsXattrOptions } from "./passthrough/fs_types.ts";
import { parseXattrMapping, XattrMappingError } from "./passthrough/xattr_mapping.ts";
import { UsageError } from "../../cli/usage_error.ts";

/** parseArgs specifications of the extended attribute options. */
export const FS_XATTR_OPTIONS = {
  xattr: { type: "boolean", default: false },
  "posix-acl": { type: "boolean", default: false },
  "xattr-mapping": { type: "string" },
} as const;

/** Help text of the extended attribute options. */
export const FS_XATTR_HELP = `Extended attributes:
  --xattr                serve extended attributes (off: the guest gets ENOSYS)
  --posix-acl            POSIX ACLs, enforced by the guest and stored on the host
                         (implies --xattr; needs a guest offering FUSE_POSIX_ACL)
  --xattr-mapping MAP    rename or hide attribute names, in virtiofsd's
                         --xattrmap syntax, e.g. ":map::user.virtiofs.:"
                         (implies --xattr)`;

/** The values parseArgs gives for {@linkcode FS_XATTR_OPTIONS}. */
export interface FsXattrValues {
  /** `--xattr`. */
  xattr?: boolean;
  /** `--posix-acl`. */
  "posix-acl"?: boolean;
  /** `--xattr-mapping`. */
  "xattr-mapping"?: string;
}

/** Checks the extended attribute options; UsageError for a mapping that does not parse. */
export function fsXattrArgs(values: FsXattrValues): FsXattrOptions {
  const mapping = values["xattr-mapping"];
  if (mapping !== undefined) {
    try {
      parseXattrMapping(mapping);
    } catch (e) {
      if (e instanceof XattrMappingError) throw new UsageError(`--xattr-mapping: ${e.message}`);
      throw e;
    }
  }
  const posixAcl = values["posix-acl"] ?? false;
  return {
    xattr: (values.xattr ?? false) || posixAcl || mapping !== undefined,
    posixAcl,
    ...(mapping === undefined ? {} : { xattrMapping: mapping }),
  };
}
