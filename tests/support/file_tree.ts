/**
 * Large trees of empty files for the file handle tests, made fast: one
 * mknodat per file, on tmpfs where the machine has it.
 *
 * @module
 */

import {
  AT_FDCWD,
  closeFd,
  mkdirat,
  mknodat,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  openat,
  S_IFREG,
} from "../../ffi/mod.ts";

/** Name of directory `d` of a tree from {@linkcode makeFileTree}. */
export function treeDirName(d: number): string {
  return `d${d}`;
}

/** Name of file `f` in each directory of a tree from {@linkcode makeFileTree}. */
export function treeFileName(f: number): string {
  return `f${f}`;
}

/** Creates directories `d0`… (`dirs` of them) of `perDir` empty files `f0`… each under `root`. */
export function makeFileTree(root: string, dirs: number, perDir: number): void {
  const rootFd = openat(AT_FDCWD, root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    for (let d = 0; d < dirs; d++) {
      mkdirat(rootFd, treeDirName(d), 0o755);
      const dirFd = openat(rootFd, treeDirName(d), O_PATH | O_DIRECTORY | O_CLOEXEC);
      try {
        for (let f = 0; f < perDir; f++) mknodat(dirFd, treeFileName(f), S_IFREG | 0o644, 0);
      } finally {
        closeFd(dirFd);
      }
    }
  } finally {
    closeFd(rootFd);
  }
}

/** A parent for temporary trees: /dev/shm (tmpfs) when there is one, else the default temp dir. */
export function treeParentDir(): string | undefined {
  try {
    return Deno.statSync("/dev/shm").isDirectory ? "/dev/shm" : undefined;
  } catch {
    return undefined;
  }
}
