/**
 * The libc symbol table and its lazy `dlopen`. This is the only file of the
 * project that calls `Deno.dlopen`.
 *
 * Each isolate (the main thread and every Worker) has its own copy of this
 * module's state, so each opens libc on its first call and keeps its own
 * view of its thread's `errno`.
 *
 * Every symbol is synchronous (`nonblocking: false`): calls on Deno's
 * non-blocking FFI pool lose errno, and long waits belong in Workers that
 * block (see DESIGN.md "Threads"). 64-bit C types are `bigint` in Deno's FFI,
 * and passing a `number` where a `bigint` is declared takes a slow path, so
 * the wrappers convert with `BigInt()`/`Number()` at the call site.
 *
 * @module
 */

import { SyscallError } from "./errno.ts";

/** Signatures of the libc functions used by `ffi/` (x86-64 Linux, glibc). */
export const LIBC_SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer", nonblocking: false },

  // Files.
  open: { parameters: ["buffer", "i32", "u32"], result: "i32", nonblocking: false },
  close: { parameters: ["i32"], result: "i32", nonblocking: false },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: false },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: false },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: false },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: false },
  preadv: { parameters: ["i32", "buffer", "i32", "i64"], result: "isize", nonblocking: false },
  pwritev: { parameters: ["i32", "buffer", "i32", "i64"], result: "isize", nonblocking: false },
  pwritev2: {
    parameters: ["i32", "buffer", "i32", "i64", "i32"],
    result: "isize",
    nonblocking: false,
  },
  fsync: { parameters: ["i32"], result: "i32", nonblocking: false },
  getrandom: { parameters: ["buffer", "usize", "u32"], result: "isize", nonblocking: false },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },
  fdatasync: { parameters: ["i32"], result: "i32", nonblocking: false },
  fstat: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32", nonblocking: false },
  ftruncate: { parameters: ["i32", "i64"], result: "i32", nonblocking: false },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64", nonblocking: false },
  // fcntl and ioctl are variadic; on x86-64 integer and pointer varargs travel
  // in the same registers as fixed arguments, so a fixed signature is sound.
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32", nonblocking: false },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32", nonblocking: false },
  pipe2: { parameters: ["buffer", "i32"], result: "i32", nonblocking: false },
  splice: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "isize",
    nonblocking: false,
  },

  // Memory.
  memfd_create: { parameters: ["buffer", "u32"], result: "i32", nonblocking: false },
  mmap: {
    parameters: ["usize", "usize", "i32", "i32", "i32", "i64"],
    result: "usize",
    nonblocking: false,
  },
  munmap: { parameters: ["usize", "usize"], result: "i32", nonblocking: false },

  // Sockets.
  socket: { parameters: ["i32", "i32", "i32"], result: "i32", nonblocking: false },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32", nonblocking: false },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32", nonblocking: false },
  listen: { parameters: ["i32", "i32"], result: "i32", nonblocking: false },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32", nonblocking: false },
  accept4: {
    parameters: ["i32", "pointer", "pointer", "i32"],
    result: "i32",
    nonblocking: false,
  },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize", nonblocking: false },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize", nonblocking: false },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize", nonblocking: false },
  shutdown: { parameters: ["i32", "i32"], result: "i32", nonblocking: false },
  getsockopt: {
    parameters: ["i32", "i32", "i32", "buffer", "buffer"],
    result: "i32",
    nonblocking: false,
  },

  // Events.
  eventfd: { parameters: ["u32", "i32"], result: "i32", nonblocking: false },
  eventfd_read: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },
  eventfd_write: { parameters: ["i32", "u64"], result: "i32", nonblocking: false },
  epoll_create1: { parameters: ["i32"], result: "i32", nonblocking: false },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32", nonblocking: false },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: false },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: false },

  // Filesystem (*at calls for the virtio-fs passthrough). Like open, openat is
  // variadic only in its mode argument, which travels in a register.
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32", nonblocking: false },
  statx: {
    parameters: ["i32", "buffer", "i32", "u32", "buffer"],
    result: "i32",
    nonblocking: false,
  },
  fstatfs: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32", nonblocking: false },
  mknodat: { parameters: ["i32", "buffer", "u32", "u64"], result: "i32", nonblocking: false },
  symlinkat: { parameters: ["buffer", "i32", "buffer"], result: "i32", nonblocking: false },
  readlinkat: {
    parameters: ["i32", "buffer", "buffer", "usize"],
    result: "isize",
    nonblocking: false,
  },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32", nonblocking: false },
  renameat2: {
    parameters: ["i32", "buffer", "i32", "buffer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  linkat: {
    parameters: ["i32", "buffer", "i32", "buffer", "i32"],
    result: "i32",
    nonblocking: false,
  },
  fchmod: { parameters: ["i32", "u32"], result: "i32", nonblocking: false },
  chmod: { parameters: ["buffer", "u32"], result: "i32", nonblocking: false },
  fchmodat: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32", nonblocking: false },
  fchownat: {
    parameters: ["i32", "buffer", "u32", "u32", "i32"],
    result: "i32",
    nonblocking: false,
  },
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32", nonblocking: false },
  faccessat: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: false },
  umask: { parameters: ["u32"], result: "u32", nonblocking: false },
  // Extended attributes: f* on an open fd, plain (following) and l* (not
  // following a final symbolic link) on a path. A null value buffer with size
  // 0 asks for the size only.
  getxattr: {
    parameters: ["buffer", "buffer", "buffer", "usize"],
    result: "isize",
    nonblocking: false,
  },
  lgetxattr: {
    parameters: ["buffer", "buffer", "buffer", "usize"],
    result: "isize",
    nonblocking: false,
  },
  fgetxattr: {
    parameters: ["i32", "buffer", "buffer", "usize"],
    result: "isize",
    nonblocking: false,
  },
  listxattr: { parameters: ["buffer", "buffer", "usize"], result: "isize", nonblocking: false },
  llistxattr: { parameters: ["buffer", "buffer", "usize"], result: "isize", nonblocking: false },
  flistxattr: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: false },
  setxattr: {
    parameters: ["buffer", "buffer", "buffer", "usize", "i32"],
    result: "i32",
    nonblocking: false,
  },
  lsetxattr: {
    parameters: ["buffer", "buffer", "buffer", "usize", "i32"],
    result: "i32",
    nonblocking: false,
  },
  fsetxattr: {
    parameters: ["i32", "buffer", "buffer", "usize", "i32"],
    result: "i32",
    nonblocking: false,
  },
  removexattr: { parameters: ["buffer", "buffer"], result: "i32", nonblocking: false },
  lremovexattr: { parameters: ["buffer", "buffer"], result: "i32", nonblocking: false },
  fremovexattr: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },

  getuid: { parameters: [], result: "u32", nonblocking: false },
  getgid: { parameters: [], result: "u32", nonblocking: false },
  // File handles (glibc 2.14+). The mount id argument is an int, or a u64
  // with AT_HANDLE_MNT_ID_UNIQUE: a buffer of 8 bytes serves both.
  name_to_handle_at: {
    parameters: ["i32", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
    nonblocking: false,
  },
  open_by_handle_at: { parameters: ["i32", "buffer", "i32"], result: "i32", nonblocking: false },
  // Sandbox (ffi/sandbox.ts). prctl is variadic in C but takes unsigned longs
  // in registers, so one fixed five-argument signature is sound. glibc has no
  // seccomp wrapper (syscall_seccomp below).
  unshare: { parameters: ["i32"], result: "i32", nonblocking: false },
  setns: { parameters: ["i32", "i32"], result: "i32", nonblocking: false },
  mount: {
    parameters: ["buffer", "buffer", "buffer", "u64", "buffer"],
    result: "i32",
    nonblocking: false,
  },
  umount2: { parameters: ["buffer", "i32"], result: "i32", nonblocking: false },
  chdir: { parameters: ["buffer"], result: "i32", nonblocking: false },
  fchdir: { parameters: ["i32"], result: "i32", nonblocking: false },
  chroot: { parameters: ["buffer"], result: "i32", nonblocking: false },
  prctl: {
    parameters: ["i32", "u64", "u64", "u64", "u64"],
    result: "i32",
    nonblocking: false,
  },
  pivot_root: { parameters: ["buffer", "buffer"], result: "i32", nonblocking: false },
  syscall_seccomp: {
    name: "syscall",
    parameters: ["i64", "u32", "u32", "buffer"],
    result: "i64",
    nonblocking: false,
  },
  // syscall(2) is variadic, but glibc implements it in assembly that just
  // moves registers, so one fixed signature per system call is sound. glibc
  // has no openat2 wrapper, and a getdents64 one only since 2.30.
  syscall_openat2: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "buffer", "usize"],
    result: "i64",
    nonblocking: false,
  },
  syscall_open_tree: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "u32"],
    result: "i64",
    nonblocking: false,
  },
  syscall_getdents64: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "usize"],
    result: "i64",
    nonblocking: false,
  },
  // Per-thread credentials. Raw system calls on purpose: glibc's setgroups
  // and set*id wrappers copy the change to every thread of the process
  // (setxid broadcast), and a Worker must change only its own thread.
  // setfsuid and setfsgid never fail visibly: they return the previous id.
  syscall_setfsid: {
    name: "syscall",
    parameters: ["i64", "u32"],
    result: "i32",
    nonblocking: false,
  },
  syscall_groups: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer"],
    result: "i32",
    nonblocking: false,
  },
  syscall_capability: {
    name: "syscall",
    parameters: ["i64", "buffer", "buffer"],
    result: "i32",
    nonblocking: false,
  },
  // io_uring has no glibc wrappers. Results are declared i32: syscall returns
  // a long, and these calls' results (-1, counts, fds) fit its low half,
  // which avoids a BigInt per submission on the hot path.
  syscall_io_uring_setup: {
    name: "syscall",
    parameters: ["i64", "u32", "buffer"],
    result: "i32",
    nonblocking: false,
  },
  syscall_io_uring_enter: {
    name: "syscall",
    parameters: ["i64", "i32", "u32", "u32", "u32", "pointer", "usize"],
    result: "i32",
    nonblocking: false,
  },
  syscall_io_uring_register: {
    name: "syscall",
    parameters: ["i64", "i32", "u32", "buffer", "u32"],
    result: "i32",
    nonblocking: false,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The typed libc functions (raw: they return -1 and leave errno set). */
export type LibcSymbols = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

interface OpenedLibc {
  readonly symbols: LibcSymbols;
  /** This thread's errno, read in place (errno lives in thread-local storage). */
  readonly errnoCell: Int32Array;
}

let opened: OpenedLibc | undefined;

function openLibc(): OpenedLibc {
  const library = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  const location = library.symbols.__errno_location();
  if (location === null) throw new Error("__errno_location returned NULL");
  // An isolate runs on one thread for its whole life, so the address of its
  // errno never changes: map it once instead of calling per failure.
  const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(location, 4));
  return { symbols: library.symbols, errnoCell };
}

/** The libc symbols of this isolate; opens libc on first use. */
export function libc(): LibcSymbols {
  return (opened ??= openLibc()).symbols;
}

/** This thread's current errno; call it right after a call returned -1. */
export function lastErrno(): number {
  return (opened ??= openLibc()).errnoCell[0];
}

/** Throws a {@linkcode SyscallError} for `syscall` with the current errno. */
export function throwLastError(syscall: string, detail?: string): never {
  throw new SyscallError(syscall, lastErrno(), detail);
}
