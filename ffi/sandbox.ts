/**
 * The system calls of the sandbox (src/sandbox/): namespaces, mounts,
 * pivot_root, chroot, prctl, seccomp and capabilities, with their constants
 * (x86-64 Linux).
 *
 * Mind the unit each call acts on. unshare, setns, chdir-like calls and
 * capabilities act on the calling THREAD only (the main thread of a Deno
 * process, when called from it): a Deno process is multithreaded before any
 * script runs. Mounts and pivot_root act on the mount namespace; seccomp with
 * {@linkcode SECCOMP_FILTER_FLAG_TSYNC} on every thread of the process.
 *
 * @module
 */

import { libc, throwLastError } from "./libc.ts";
import { allocateBytes, cString } from "./struct.ts";

/** unshare/setns: a new mount namespace (implies CLONE_FS for unshare). */
export const CLONE_NEWNS = 0x0002_0000;
/** unshare: stop sharing the root, cwd and umask with the other threads. */
export const CLONE_FS = 0x0000_0200;
/** unshare/clone: a new PID namespace (for the children). */
export const CLONE_NEWPID = 0x2000_0000;
/** unshare/clone: a new user namespace. */
export const CLONE_NEWUSER = 0x1000_0000;
/** clone: a new network namespace. */
export const CLONE_NEWNET = 0x4000_0000;
/** clone: a new UTS namespace. */
export const CLONE_NEWUTS = 0x0400_0000;
/** clone: a new IPC namespace. */
export const CLONE_NEWIPC = 0x0800_0000;
/** clone: a new cgroup namespace. */
export const CLONE_NEWCGROUP = 0x0200_0000;
/** clone: a new time namespace. */
export const CLONE_NEWTIME = 0x0000_0080;

/** mount: read-only. */
export const MS_RDONLY = 1;
/** mount: ignore set-user-ID and file capabilities. */
export const MS_NOSUID = 2;
/** mount: no device files. */
export const MS_NODEV = 4;
/** mount: no execution. */
export const MS_NOEXEC = 8;
/** mount: change the flags of an existing mount. */
export const MS_REMOUNT = 32;
/** mount: a bind mount. */
export const MS_BIND = 4096;
/** mount: recursively (with MS_BIND or a propagation type). */
export const MS_REC = 16384;
/** mount: private propagation. */
export const MS_PRIVATE = 1 << 18;
/** umount2: detach now, clean up once nothing uses the mount. */
export const MNT_DETACH = 2;

/** prctl: the signal sent when the parent thread dies. */
export const PR_SET_PDEATHSIG = 1;
/** prctl: the seccomp mode of the thread (0 none, 1 strict, 2 filter). */
export const PR_GET_SECCOMP = 21;
/** prctl: whether a capability is in the thread's bounding set. */
export const PR_CAPBSET_READ = 23;
/** prctl: drop a capability from the thread's bounding set. */
export const PR_CAPBSET_DROP = 24;
/** prctl: execve never grants privileges again (needed for seccomp without CAP_SYS_ADMIN). */
export const PR_SET_NO_NEW_PRIVS = 38;
/** prctl: whether no_new_privs is set. */
export const PR_GET_NO_NEW_PRIVS = 39;

/** seccomp(2) operation: install a BPF filter. */
export const SECCOMP_SET_MODE_FILTER = 1;
/** seccomp(2) flag: install the filter on every thread of the process. */
export const SECCOMP_FILTER_FLAG_TSYNC = 1;
/** The seccomp system call number on x86-64. */
export const SYS_seccomp = 317;

const SYSCALL_SECCOMP = BigInt(SYS_seccomp);

/** Unshares `flags` (CLONE_*) for the calling thread (`unshare`). */
export function unshare(flags: number): void {
  if (libc().unshare(flags) < 0) throwLastError("unshare", `flags 0x${flags.toString(16)}`);
}

/** Moves the calling thread into the namespace `fd` refers to (`setns`). */
export function setns(fd: number, nstype: number): void {
  if (libc().setns(fd, nstype) < 0) throwLastError("setns", `fd ${fd}`);
}

/** `mount(source, target, fstype, flags, data)`; null leaves an argument NULL. */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null = null,
): void {
  const result = libc().mount(
    source === null ? null : cString("mount", source),
    cString("mount", target),
    fstype === null ? null : cString("mount", fstype),
    BigInt(flags),
    data === null ? null : cString("mount", data),
  );
  if (result < 0) throwLastError("mount", `${source ?? "(none)"} on ${target}`);
}

/** Unmounts `target` (`umount2`). */
export function umount2(target: string, flags: number): void {
  if (libc().umount2(cString("umount2", target), flags) < 0) throwLastError("umount2", target);
}

/** Moves the root mount to `newRoot` and the old one to `putOld` (`pivot_root`). */
export function pivotRoot(newRoot: string, putOld: string): void {
  if (libc().pivot_root(cString("pivot_root", newRoot), cString("pivot_root", putOld)) < 0) {
    throwLastError("pivot_root", `${newRoot}, ${putOld}`);
  }
}

/** Changes the working directory (`chdir`; shared by threads unless CLONE_FS was unshared). */
export function chdir(path: string): void {
  if (libc().chdir(cString("chdir", path)) < 0) throwLastError("chdir", path);
}

/** Changes the working directory to the directory `fd` holds (`fchdir`). */
export function fchdir(fd: number): void {
  if (libc().fchdir(fd) < 0) throwLastError("fchdir", `fd ${fd}`);
}

/** Changes the root directory (`chroot`; shared by threads unless CLONE_FS was unshared). */
export function chroot(path: string): void {
  if (libc().chroot(cString("chroot", path)) < 0) throwLastError("chroot", path);
}

/** `prctl(option, args...)`; returns its non-negative result. */
export function prctl(option: number, arg2 = 0, arg3 = 0, arg4 = 0, arg5 = 0): number {
  const result = libc().prctl(option, BigInt(arg2), BigInt(arg3), BigInt(arg4), BigInt(arg5));
  if (result < 0) throwLastError("prctl", `option ${option}`);
  return result;
}

/**
 * Installs the classic-BPF program `filter` (8-byte `struct sock_filter`
 * entries) with `seccomp(SECCOMP_SET_MODE_FILTER, flags, &sock_fprog)`.
 */
export function seccompSetFilter(filter: Uint8Array, flags: number): void {
  if (filter.length % 8 !== 0 || filter.length === 0 || filter.length / 8 > 0xffff) {
    throw new RangeError(`a seccomp filter is 1 to 65535 instructions, got ${filter.length} bytes`);
  }
  const program = allocateBytes(filter.length);
  program.set(filter);
  // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
  const fprog = allocateBytes(16);
  const view = new DataView(fprog.buffer);
  view.setUint16(0, filter.length / 8, true);
  view.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(program))), true);
  const result = libc().syscall_seccomp(SYSCALL_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, fprog);
  if (result < 0n) throwLastError("seccomp", `${filter.length / 8} instructions`);
}
