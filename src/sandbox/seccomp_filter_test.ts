import assert from "node:assert/strict";
import {
  AUDIT_ARCH_X86_64,
  buildSeccompFilter,
  DENIED_SYSCALLS,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SYS_CLONE,
  SYS_CLONE3,
  SYS_OPEN_BY_HANDLE_AT,
  X32_SYSCALL_BIT,
} from "./seccomp_filter.ts";
import { SYS_open_tree as SYS_OPEN_TREE } from "../../ffi/mod.ts";

const EPERM = SECCOMP_RET_ERRNO | 1;
const ENOSYS = SECCOMP_RET_ERRNO | 38;
const AUDIT_ARCH_I386 = 0x4000_0003;
const CLONE_THREAD_FLAGS = 0x3d0f00; // what glibc's pthread_create passes
const CLONE_NEWUSER = 0x1000_0000;
const CLONE_NEWNS = 0x0002_0000;

/**
 * Runs a classic BPF program the way the kernel's seccomp does, on a
 * struct seccomp_data with `nr`, `arch`, `args[0]` and `args[2]`; only the
 * instructions a seccomp filter may use are accepted.
 */
function runFilter(
  program: Uint8Array,
  nr: number,
  arch: number,
  arg0 = 0,
  arg2 = 0,
): number {
  const view = new DataView(program.buffer, program.byteOffset, program.byteLength);
  const data = new DataView(new ArrayBuffer(64));
  data.setInt32(0, nr, true);
  data.setUint32(4, arch, true);
  data.setUint32(16, arg0, true);
  data.setUint32(32, arg2, true);
  let a = 0;
  for (let pc = 0; pc < program.length / 8;) {
    const code = view.getUint16(pc * 8, true);
    const jt = view.getUint8(pc * 8 + 2);
    const jf = view.getUint8(pc * 8 + 3);
    const k = view.getUint32(pc * 8 + 4, true);
    pc++;
    switch (code) {
      case 0x20: // ld [k]
        a = data.getUint32(k, true);
        break;
      case 0x15: // jeq #k
        pc += a === k ? jt : jf;
        break;
      case 0x35: // jge #k
        pc += a >= k ? jt : jf;
        break;
      case 0x45: // jset #k
        pc += (a & k) !== 0 ? jt : jf;
        break;
      case 0x06: // ret #k
        return k;
      default:
        throw new Error(`unexpected opcode 0x${code.toString(16)} at ${pc - 1}`);
    }
  }
  throw new Error("the program ran off its end");
}

Deno.test("seccomp filter: refuses the dangerous calls with EPERM and lets the rest through", () => {
  const filter = buildSeccompFilter();
  for (const [name, nr] of Object.entries(DENIED_SYSCALLS)) {
    assert.equal(runFilter(filter, nr, AUDIT_ARCH_X86_64), EPERM, name);
  }
  assert.equal(runFilter(filter, SYS_OPEN_BY_HANDLE_AT, AUDIT_ARCH_X86_64), EPERM);
  // read, openat, futex, io_uring_enter, mmap, getdents64, statx, fchownat, mknodat.
  for (const nr of [0, 257, 202, 426, 9, 217, 332, 260, 259]) {
    assert.equal(runFilter(filter, nr, AUDIT_ARCH_X86_64), SECCOMP_RET_ALLOW, `nr ${nr}`);
  }
});

Deno.test("seccomp filter: open_by_handle_at only with file handles", () => {
  const filter = buildSeccompFilter({ allowFileHandles: true });
  assert.equal(runFilter(filter, SYS_OPEN_BY_HANDLE_AT, AUDIT_ARCH_X86_64), SECCOMP_RET_ALLOW);
  assert.equal(runFilter(filter, DENIED_SYSCALLS.mount, AUDIT_ARCH_X86_64), EPERM);
});

Deno.test("seccomp filter: clone may make threads but no namespaces; clone3 is ENOSYS", () => {
  const filter = buildSeccompFilter();
  assert.equal(
    runFilter(filter, SYS_CLONE, AUDIT_ARCH_X86_64, CLONE_THREAD_FLAGS),
    SECCOMP_RET_ALLOW,
  );
  for (const flag of [CLONE_NEWUSER, CLONE_NEWNS]) {
    assert.equal(runFilter(filter, SYS_CLONE, AUDIT_ARCH_X86_64, CLONE_THREAD_FLAGS | flag), EPERM);
  }
  assert.equal(runFilter(filter, SYS_CLONE3, AUDIT_ARCH_X86_64), ENOSYS);
});

Deno.test("seccomp filter: open_tree may open an O_PATH fd but not copy a mount", () => {
  const filter = buildSeccompFilter();
  const AT_EMPTY_PATH = 0x1000;
  const OPEN_TREE_CLOEXEC = 0o2000000;
  const AT_RECURSIVE = 0x8000;
  const plain = AT_EMPTY_PATH | OPEN_TREE_CLOEXEC;
  assert.equal(runFilter(filter, SYS_OPEN_TREE, AUDIT_ARCH_X86_64, 3, plain), SECCOMP_RET_ALLOW);
  for (const clone of [1, 1 | AT_RECURSIVE | OPEN_TREE_CLOEXEC]) {
    assert.equal(runFilter(filter, SYS_OPEN_TREE, AUDIT_ARCH_X86_64, 3, plain | clone), EPERM);
  }
  // The arguments of other calls are not judged as open_tree's.
  assert.equal(runFilter(filter, 257, AUDIT_ARCH_X86_64, 3, 1), SECCOMP_RET_ALLOW);
  assert.equal(runFilter(filter, DENIED_SYSCALLS.move_mount, AUDIT_ARCH_X86_64), EPERM);
});

Deno.test("seccomp filter: another architecture or the x32 ABI kills the process", () => {
  const filter = buildSeccompFilter();
  assert.equal(runFilter(filter, 0, AUDIT_ARCH_I386), SECCOMP_RET_KILL_PROCESS);
  // i386's mount is 21: it must not be judged by x86-64 numbers.
  assert.equal(runFilter(filter, 21, AUDIT_ARCH_I386), SECCOMP_RET_KILL_PROCESS);
  assert.equal(
    runFilter(filter, X32_SYSCALL_BIT | DENIED_SYSCALLS.mount, AUDIT_ARCH_X86_64),
    SECCOMP_RET_KILL_PROCESS,
  );
  assert.equal(runFilter(filter, X32_SYSCALL_BIT, AUDIT_ARCH_X86_64), SECCOMP_RET_KILL_PROCESS);
});

/** What a fresh Deno process reports after installing the filter (see the script below). */
const CHILD_SCRIPT = `
import { installSeccompFilter, buildSeccompFilter } from ${
  JSON.stringify(new URL("./seccomp_filter.ts", import.meta.url).href)
};
import { AT_FDCWD, CLONE_NEWNS, closeFd, mount, O_CLOEXEC, O_PATH, openat, pathFdOfOrErrno, unshare } from ${
  JSON.stringify(new URL("../../ffi/mod.ts", import.meta.url).href)
};
const code = (fn) => { try { fn(); return "ok"; } catch (e) { return e.code ?? String(e); } };
installSeccompFilter(buildSeccompFilter());
const result = {
  unshare: code(() => unshare(CLONE_NEWNS)),
  mount: code(() => mount("none", "/", null, 0)),
  // open_tree as CREATE calls it: an O_PATH fd of an fd's file, not a mount.
  openTree: (() => {
    const fd = openat(AT_FDCWD, "/", O_PATH | O_CLOEXEC);
    const pathFd = pathFdOfOrErrno(fd);
    closeFd(fd);
    if (pathFd < 0) return "errno " + -pathFd;
    closeFd(pathFd);
    return "ok";
  })(),
  spawn: code(() => new Deno.Command("true").outputSync()),
};
// A Worker is a new thread: pthread_create's clone3 gets ENOSYS and falls back to clone.
result.worker = await new Promise((resolve) => {
  const url = "data:text/javascript,postMessage('worker ok')";
  const worker = new Worker(url, { type: "module" });
  worker.onmessage = (e) => { resolve(e.data); worker.terminate(); };
  worker.onerror = (e) => { e.preventDefault(); resolve("worker failed: " + e.message); };
});
const seccomp = [];
for (const task of Deno.readDirSync("/proc/self/task")) {
  let status;
  try {
    status = Deno.readTextFileSync("/proc/self/task/" + task.name + "/status");
  } catch (e) {
    // A thread that ended (the Worker's, say) after the listing has no status to read.
    if (e instanceof Deno.errors.NotFound) continue;
    throw e;
  }
  seccomp.push(status.match(/^Seccomp:\\s*(\\d)/m)[1]);
}
result.seccomp = [...new Set(seccomp)];
console.log(JSON.stringify(result));
`;

Deno.test("seccomp filter: installed, it covers every thread and refuses mounts, namespaces and exec", async () => {
  const child = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", CHILD_SCRIPT],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(child.stderr);
  assert.ok(child.success, stderr);
  const result = JSON.parse(new TextDecoder().decode(child.stdout));
  assert.equal(result.unshare, "EPERM");
  assert.equal(result.mount, "EPERM");
  assert.equal(result.openTree, "ok");
  assert.notEqual(result.spawn, "ok", "a program was executed");
  assert.equal(result.worker, "worker ok");
  assert.deepEqual(result.seccomp, ["2"]);
});
