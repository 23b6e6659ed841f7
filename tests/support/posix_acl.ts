/**
 * The binary form of a POSIX ACL as Linux stores it in the
 * `system.posix_acl_access` and `system.posix_acl_default` attributes
 * (`posix_acl_xattr_header` version 2, then 8-byte entries), for tests that
 * set ACLs from the host or check ACLs a guest set.
 *
 * @module
 */

/** ACL entry tags (linux/posix_acl.h). */
export const AclTag = {
  USER_OBJ: 0x01,
  USER: 0x02,
  GROUP_OBJ: 0x04,
  GROUP: 0x08,
  MASK: 0x10,
  OTHER: 0x20,
} as const;

/** One ACL entry: tag, rwx bits (4, 2, 1) and, for USER and GROUP, the id. */
export interface AclEntry {
  /** An {@linkcode AclTag}. */
  tag: number;
  /** Permission bits, 0 to 7. */
  perm: number;
  /** uid or gid for USER and GROUP entries; ignored otherwise. */
  id?: number;
}

const ACL_VERSION = 2;
const UNDEFINED_ID = 0xffffffff;

/** The attribute value for `entries` (the kernel wants them sorted by tag, then id). */
export function encodeAcl(entries: readonly AclEntry[]): Uint8Array {
  const out = new Uint8Array(4 + entries.length * 8);
  const view = new DataView(out.buffer);
  view.setUint32(0, ACL_VERSION, true);
  entries.forEach((entry, i) => {
    const named = entry.tag === AclTag.USER || entry.tag === AclTag.GROUP;
    view.setUint16(4 + i * 8, entry.tag, true);
    view.setUint16(6 + i * 8, entry.perm, true);
    view.setUint32(8 + i * 8, named ? entry.id ?? 0 : UNDEFINED_ID, true);
  });
  return out;
}

/** The entries of an attribute value; throws for a wrong version or length. */
export function decodeAcl(bytes: Uint8Array): AclEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 || (bytes.length - 4) % 8 !== 0 || view.getUint32(0, true) !== ACL_VERSION) {
    throw new Error(`not a version ${ACL_VERSION} POSIX ACL (${bytes.length} bytes)`);
  }
  const entries: AclEntry[] = [];
  for (let at = 4; at < bytes.length; at += 8) {
    const tag = view.getUint16(at, true);
    const named = tag === AclTag.USER || tag === AclTag.GROUP;
    entries.push({
      tag,
      perm: view.getUint16(at + 2, true),
      ...(named ? { id: view.getUint32(at + 4, true) } : {}),
    });
  }
  return entries;
}

/** u::rw-, u:`uid`:r--, g::r--, m::r--, o::--- : the smallest ACL the kernel keeps as one. */
export function extendedAcl(uid: number): Uint8Array {
  return encodeAcl([
    { tag: AclTag.USER_OBJ, perm: 6 },
    { tag: AclTag.USER, perm: 4, id: uid },
    { tag: AclTag.GROUP_OBJ, perm: 4 },
    { tag: AclTag.MASK, perm: 4 },
    { tag: AclTag.OTHER, perm: 0 },
  ]);
}

/**
 * An access ACL granting everything to the owner, `perm` to group `gid`
 * and nothing to the owning group or others (mode 07x0, mask `perm`).
 */
export function namedGroupAcl(gid: number, perm: number): Uint8Array {
  return encodeAcl([
    { tag: AclTag.USER_OBJ, perm: 7 },
    { tag: AclTag.GROUP_OBJ, perm: 0 },
    { tag: AclTag.GROUP, perm, id: gid },
    { tag: AclTag.MASK, perm },
    { tag: AclTag.OTHER, perm: 0 },
  ]);
}
