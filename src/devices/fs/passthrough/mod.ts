/**
 * The virtio-fs passthrough filesystem: {@linkcode PassthroughFs} serves a
 * host directory through FUSE operations, with confinement to that
 * directory, lookup counting, file and directory handles, and migration
 * snapshots.
 *
 * @module
 */

export * from "./passthrough_fs.ts";
export { entryOut, splitTimeout } from "./fs_attr.ts";
export { FS_SNAPSHOT_VERSION } from "./fs_snapshot.ts";
export { xattrServed } from "./xattr_ops.ts";
