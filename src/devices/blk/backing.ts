/**
 * The storage behind a virtio-blk device: a raw image file or RAM.
 *
 * RAM is a memfd, so both kinds are a file descriptor and every request path
 * (pread/pwrite, fallocate, fdatasync) is the same; the memfd is filled
 * lazily by the kernel, so `--ram 1G` costs nothing until written.
 *
 * @module
 */

import {
  closeQuietly,
  errnoDescription,
  fstat,
  ftruncate,
  memfdCreate,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  openFile,
  S_IFBLK,
  S_IFMT,
  S_IFREG,
  SyscallError,
} from "../../../ffi/mod.ts";
import { SECTOR_SIZE } from "./blk_spec.ts";

/** Where the disk's bytes live. */
export type BackingSpec =
  | { kind: "file"; path: string; readOnly: boolean }
  | { kind: "ram"; size: number; readOnly: boolean };

/** An opened backing: its fd (shared by all queue Workers) and its identity. */
export interface Backing {
  /** Open file descriptor (process-wide, valid in every Worker). */
  readonly fd: number;
  /** Size in bytes (a multiple of 512). */
  readonly size: number;
  /** Writes are refused. */
  readonly readOnly: boolean;
  /** "file" or "ram". */
  readonly kind: "file" | "ram";
  /** The image path, or "ram". */
  readonly path: string;
}

/** A backing that cannot be used, with a message for the user. */
export class BackingError extends Error {}

/** Opens a backing; throws BackingError with a one-line reason. */
export function openBacking(spec: BackingSpec): Backing {
  if (spec.kind === "ram") {
    if (!Number.isSafeInteger(spec.size) || spec.size <= 0 || spec.size % SECTOR_SIZE !== 0) {
      throw new BackingError(`RAM disk size must be a positive multiple of 512 bytes`);
    }
    const fd = memfdCreate("vhostd-ram-disk");
    try {
      ftruncate(fd, spec.size);
    } catch (e) {
      closeQuietly(fd);
      throw new BackingError(`cannot allocate a ${spec.size}-byte RAM disk: ${describe(e)}`);
    }
    return { fd, size: spec.size, readOnly: spec.readOnly, kind: "ram", path: "ram" };
  }
  let fd: number;
  try {
    fd = openFile(spec.path, (spec.readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  } catch (e) {
    throw new BackingError(`cannot open image ${spec.path}: ${describe(e)}`);
  }
  try {
    const st = fstat(fd);
    const type = st.mode & S_IFMT;
    if (type !== S_IFREG && type !== S_IFBLK) {
      throw new BackingError(`image ${spec.path} is not a regular file`);
    }
    if (type === S_IFBLK) {
      throw new BackingError(
        `image ${spec.path} is a block device; only regular files are supported`,
      );
    }
    if (st.size < SECTOR_SIZE) {
      throw new BackingError(`image ${spec.path} is smaller than one 512-byte sector`);
    }
    // A trailing partial sector is not addressable by the guest.
    const size = st.size - (st.size % SECTOR_SIZE);
    return { fd, size, readOnly: spec.readOnly, kind: "file", path: spec.path };
  } catch (e) {
    closeQuietly(fd);
    throw e instanceof BackingError
      ? e
      : new BackingError(`cannot use image ${spec.path}: ${describe(e)}`);
  }
}

function describe(e: unknown): string {
  if (e instanceof SyscallError) return `${errnoDescription(e.errno)} (${e.code})`;
  return e instanceof Error ? e.message : String(e);
}
