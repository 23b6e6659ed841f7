/**
 * Builds the sandboxed daemon's new root inside its mount namespace and
 * switches it there, from the launcher's main thread.
 *
 * The new root is a small read-only tmpfs holding only: the shared
 * directory (bound at its host path, read-write unless `--read-only`),
 * `/proc` (the daemon's own PID namespace's proc, which the passthrough
 * needs for `/proc/self/fd`, and which shows no other process and only the
 * process directories, `subset=pid`), the program
 * files read-only when vhostd runs from source (`deno run` loads Worker
 * modules lazily, also after the switch), and any directory an option names
 * (`--dump-state`). The old root is detached.
 *
 * Why the launcher does it: pivot_root needs CAP_SYS_ADMIN, and the daemon,
 * a multithreaded Deno process, could never drop it again from its runtime
 * threads (capabilities are per thread). pivot_root moves the root and
 * working directory of every task of the namespace that uses the old root,
 * so the daemon's threads move too. The launcher's main thread first stops
 * sharing its root with the launcher's other threads (unshare CLONE_FS),
 * enters the namespace with setns, and returns to its own namespace,
 * root and working directory afterwards; the launcher's other threads never
 * leave the host's.
 *
 * @module
 */

import {
  chdir,
  CLONE_FS,
  CLONE_NEWNS,
  closeQuietly,
  fchdir,
  MNT_DETACH,
  mount,
  MS_BIND,
  MS_NODEV,
  MS_NOEXEC,
  MS_NOSUID,
  MS_RDONLY,
  MS_REC,
  MS_REMOUNT,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  O_RDONLY,
  openFile,
  pivotRoot,
  setns,
  umount2,
  unshare,
} from "../../ffi/mod.ts";

/** One directory (or file) of the host to show in the new root, at the same path. */
export interface RootBind {
  /** Absolute, canonical host path. */
  path: string;
  /** Bind it read-only. */
  readOnly: boolean;
}

/** What the new root holds besides /proc. */
export interface RootLayout {
  /** Directories to bind, at their host paths. */
  binds: RootBind[];
}

/**
 * Gives the mount namespace of process `pid` a new root with `layout` and
 * detaches the old one. Throws SyscallError when a step fails (the daemon
 * is then left half set up and must not run).
 */
export function switchNamespaceRoot(pid: number, layout: RootLayout): void {
  const stage = Deno.makeTempDirSync({ prefix: "vhostd-root-" });
  const hostNamespace = openFile("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  const workingDir = openFile(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  let target = -1;
  try {
    target = openFile(`/proc/${pid}/ns/mnt`, O_RDONLY | O_CLOEXEC);
    unshare(CLONE_FS); // setns into a mount namespace needs an fs_struct of our own
    setns(target, CLONE_NEWNS);
    try {
      buildAndPivot(stage, layout);
    } finally {
      setns(hostNamespace, CLONE_NEWNS);
      fchdir(workingDir);
    }
  } finally {
    closeQuietly(target);
    closeQuietly(hostNamespace);
    closeQuietly(workingDir);
    // On the host the stage is an empty directory again (its mount moved away).
    Deno.removeSync(stage);
  }
}

function bindInto(stage: string, source: string, readOnly: boolean): void {
  const target = `${stage}${source}`;
  if (Deno.statSync(source).isDirectory) {
    Deno.mkdirSync(target, { recursive: true });
  } else {
    // A file (the compiled binary) is bound onto an empty file.
    Deno.mkdirSync(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    Deno.writeFileSync(target, new Uint8Array());
  }
  mount(source, target, null, MS_BIND | MS_REC);
  if (readOnly) mount(null, target, null, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV);
}

function buildAndPivot(stage: string, layout: RootLayout): void {
  mount("vhostd-root", stage, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k");
  // Parents before children, so a bind inside another lands on top of it.
  const binds = [...layout.binds].sort((a, b) => a.path.length - b.path.length);
  for (const bind of binds) bindInto(stage, bind.path, bind.readOnly);
  // The namespace's /proc is the fresh one `unshare --mount-proc` mounted for its PID namespace,
  // used by nothing else: keep only its process directories (no /proc/sys, kcore, sysrq-trigger).
  bindInto(stage, "/proc", false);
  mount(null, `${stage}/proc`, null, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid");
  chdir(stage);
  // pivot_root(".", "."): the old root ends up stacked on the new one, then goes.
  pivotRoot(".", ".");
  umount2(".", MNT_DETACH);
  chdir("/");
  // Sharing "/" itself puts the share on top of the tmpfs: that root must stay writable.
  if (binds.some((bind) => bind.path === "/")) return;
  mount(null, "/", null, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
}
