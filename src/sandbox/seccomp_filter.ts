/**
 * The sandbox's seccomp filter, built as classic BPF in TypeScript, and its
 * installation on every thread of the process.
 *
 * Why a deny-list: V8 and Deno's runtime use a large, version-dependent set
 * of system calls (futexes, io_uring, memory protection, signals, clock and
 * poll variants); an allow-list that misses one kills the daemon in the
 * middle of a guest's I/O. What the filter refuses instead is everything a
 * confined file server never needs and an escape or a privilege gain would:
 * mounts and the new mount API (open_tree only when it would copy a mount:
 * without OPEN_TREE_CLONE it is an O_PATH open), pivot_root, chroot,
 * namespaces (unshare, setns, and clone with a CLONE_NEW* flag), execve,
 * ptrace and the
 * cross-process memory calls, kernel modules, kexec, reboot, swap, BPF,
 * perf, keyrings, userfaultfd, clocks, host names, raw I/O ports, accounting
 * and quotas, and open_by_handle_at unless file handles are enabled. These
 * fail with EPERM. clone3 fails with ENOSYS: its flags live in memory a
 * filter cannot read, and glibc falls back to clone (whose flags it can).
 * A call from another architecture (i386 `int 0x80`) or from the x32 ABI,
 * which would bypass the numbers below, kills the process.
 *
 * @module
 */

import {
  CLONE_NEWCGROUP,
  CLONE_NEWIPC,
  CLONE_NEWNET,
  CLONE_NEWNS,
  CLONE_NEWPID,
  CLONE_NEWTIME,
  CLONE_NEWUSER,
  CLONE_NEWUTS,
  OPEN_TREE_CLONE,
  PR_SET_NO_NEW_PRIVS,
  prctl,
  SECCOMP_FILTER_FLAG_TSYNC,
  seccompSetFilter,
  SYS_open_tree,
} from "../../ffi/mod.ts";

/** `AUDIT_ARCH_X86_64`: what `seccomp_data.arch` says for a native x86-64 call. */
export const AUDIT_ARCH_X86_64 = 0xc000_003e;
/** `__X32_SYSCALL_BIT`: x32 system calls have it set in their number. */
export const X32_SYSCALL_BIT = 0x4000_0000;

/** Filter verdicts (`SECCOMP_RET_*`). */
export const SECCOMP_RET_KILL_PROCESS = 0x8000_0000;
/** Fail the call with the errno in the low 16 bits. */
export const SECCOMP_RET_ERRNO = 0x0005_0000;
/** Let the call run. */
export const SECCOMP_RET_ALLOW = 0x7fff_0000;

const EPERM = 1;
const ENOSYS = 38;

/** x86-64 numbers of the system calls the filter refuses with EPERM, by name. */
export const DENIED_SYSCALLS: Readonly<Record<string, number>> = {
  execve: 59,
  ptrace: 101,
  syslog: 103,
  uselib: 134,
  vhangup: 153,
  pivot_root: 155,
  chroot: 161,
  acct: 163,
  settimeofday: 164,
  mount: 165,
  umount2: 166,
  swapon: 167,
  swapoff: 168,
  reboot: 169,
  sethostname: 170,
  setdomainname: 171,
  iopl: 172,
  ioperm: 173,
  create_module: 174,
  init_module: 175,
  delete_module: 176,
  quotactl: 179,
  nfsservctl: 180,
  lookup_dcookie: 212,
  clock_settime: 227,
  kexec_load: 246,
  add_key: 248,
  request_key: 249,
  keyctl: 250,
  unshare: 272,
  perf_event_open: 298,
  clock_adjtime: 305,
  setns: 308,
  process_vm_readv: 310,
  process_vm_writev: 311,
  kcmp: 312,
  finit_module: 313,
  kexec_file_load: 320,
  bpf: 321,
  execveat: 322,
  userfaultfd: 323,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  pidfd_getfd: 438,
  process_madvise: 440,
  mount_setattr: 442,
  quotactl_fd: 443,
};

/** open_by_handle_at: refused unless the share uses file handles. */
export const SYS_OPEN_BY_HANDLE_AT = 304;
/** clone: refused when its flags (first argument) ask for a new namespace. */
export const SYS_CLONE = 56;
/** clone3: refused with ENOSYS (its flags are out of the filter's reach). */
export const SYS_CLONE3 = 435;

/** The clone flags that create namespaces. */
export const CLONE_NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
  CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP | CLONE_NEWTIME;

/** Options of {@linkcode buildSeccompFilter}. */
export interface SeccompFilterOptions {
  /** Let open_by_handle_at through (`--inode-file-handles`). Default false. */
  allowFileHandles?: boolean;
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_W_ABS = 0x20;
const BPF_JMP_JEQ_K = 0x15;
const BPF_JMP_JGE_K = 0x35;
const BPF_JMP_JSET_K = 0x45;
const BPF_RET_K = 0x06;

// struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const OFFSET_ARG0_LOW = 16;
const OFFSET_ARG2_LOW = 32;

type Label = "allow" | "eperm" | "enosys" | "kill" | "open_tree";

interface Instruction {
  code: number;
  k: number;
  jt?: Label;
  jf?: Label;
  /** The label of this instruction, for a jump to it. */
  name?: Label;
}

/**
 * Builds the filter program: 8-byte `struct sock_filter` entries, ready
 * for {@linkcode installSeccompFilter}.
 */
export function buildSeccompFilter(options: SeccompFilterOptions = {}): Uint8Array {
  const denied = Object.values(DENIED_SYSCALLS);
  if (!options.allowFileHandles) denied.push(SYS_OPEN_BY_HANDLE_AT);
  const body: Instruction[] = [
    { code: BPF_LD_W_ABS, k: OFFSET_ARCH },
    { code: BPF_JMP_JEQ_K, k: AUDIT_ARCH_X86_64, jf: "kill" },
    { code: BPF_LD_W_ABS, k: OFFSET_NR },
    { code: BPF_JMP_JGE_K, k: X32_SYSCALL_BIT, jt: "kill" },
    ...[...new Set(denied)].sort((a, b) => a - b).map((nr): Instruction => ({
      code: BPF_JMP_JEQ_K,
      k: nr,
      jt: "eperm",
    })),
    { code: BPF_JMP_JEQ_K, k: SYS_CLONE3, jt: "enosys" },
    // open_tree is refused only with OPEN_TREE_CLONE (its third argument): a new mount.
    { code: BPF_JMP_JEQ_K, k: SYS_open_tree, jt: "open_tree" },
    { code: BPF_JMP_JEQ_K, k: SYS_CLONE, jf: "allow" },
    { code: BPF_LD_W_ABS, k: OFFSET_ARG0_LOW },
    { code: BPF_JMP_JSET_K, k: CLONE_NAMESPACE_FLAGS, jt: "eperm", jf: "allow" },
    // open_tree(fd, "", AT_EMPTY_PATH) is how CREATE gets its O_PATH fd; a mount copy is not.
    { code: BPF_LD_W_ABS, k: OFFSET_ARG2_LOW, name: "open_tree" },
    { code: BPF_JMP_JSET_K, k: OPEN_TREE_CLONE, jt: "eperm", jf: "allow" },
  ];
  const targets: Record<Label, number> = {
    open_tree: body.findIndex((insn) => insn.name === "open_tree"),
    allow: body.length,
    eperm: body.length + 1,
    enosys: body.length + 2,
    kill: body.length + 3,
  };
  const program: Instruction[] = [
    ...body,
    { code: BPF_RET_K, k: SECCOMP_RET_ALLOW },
    { code: BPF_RET_K, k: SECCOMP_RET_ERRNO | EPERM },
    { code: BPF_RET_K, k: SECCOMP_RET_ERRNO | ENOSYS },
    { code: BPF_RET_K, k: SECCOMP_RET_KILL_PROCESS },
  ];
  const bytes = new Uint8Array(program.length * 8);
  const view = new DataView(bytes.buffer);
  program.forEach((insn, index) => {
    // Jumps are relative to the next instruction, forward only, at most 255.
    const offset = (label: Label | undefined) => {
      if (label === undefined) return 0;
      const distance = targets[label] - index - 1;
      if (distance < 0 || distance > 255) throw new RangeError(`jump to ${label} out of range`);
      return distance;
    };
    view.setUint16(index * 8, insn.code, true);
    view.setUint8(index * 8 + 2, offset(insn.jt));
    view.setUint8(index * 8 + 3, offset(insn.jf));
    view.setUint32(index * 8 + 4, insn.k >>> 0, true);
  });
  return bytes;
}

/**
 * Installs `filter` on every thread of the process (TSYNC), after setting
 * no_new_privs, which TSYNC carries to the other threads too. Irreversible.
 */
export function installSeccompFilter(filter: Uint8Array): void {
  prctl(PR_SET_NO_NEW_PRIVS, 1);
  seccompSetFilter(filter, SECCOMP_FILTER_FLAG_TSYNC);
}
