/**
 * Choosing and opening a file I/O engine: whether io_uring works here (and
 * why not), the default engine, and opening the one asked for.
 *
 * @module
 */

import {
  IORING_OP_FALLOCATE,
  IORING_OP_FSYNC,
  IORING_OP_READV,
  IORING_OP_WRITEV,
} from "../../ffi/constants.ts";
import { EINVAL, ENOMEM, ENOSYS, EPERM, SyscallError } from "../../ffi/errno.ts";
import { IoUring } from "../../ffi/io_uring.ts";
import type { FileIoEngine, FileIoEngineKind } from "./file_io_engine.ts";
import { SyncFileIoEngine } from "./sync_engine.ts";
import { type UringEngineOptions, UringFileIoEngine } from "./uring_engine.ts";

/**
 * Environment variable that makes {@linkcode probeIoUring} fail when set to
 * `1`, as if `kernel.io_uring_disabled=2`: the test suite uses it to run the
 * daemon on the synchronous fallback.
 */
export const DISABLE_IO_URING_ENV = "VHOSTD_DISABLE_IO_URING";

const REQUIRED_OPCODES: readonly [number, string][] = [
  [IORING_OP_READV, "IORING_OP_READV"],
  [IORING_OP_WRITEV, "IORING_OP_WRITEV"],
  [IORING_OP_FSYNC, "IORING_OP_FSYNC"],
  [IORING_OP_FALLOCATE, "IORING_OP_FALLOCATE"],
];

let probed: { reason: string | undefined } | undefined;

function disabledByEnvironment(): boolean {
  // Asking without the permission would prompt (or throw): without it the
  // variable cannot have been meant for us.
  const env = { name: "env", variable: DISABLE_IO_URING_ENV } as const;
  if (Deno.permissions.querySync(env).state !== "granted") return false;
  return Deno.env.get(DISABLE_IO_URING_ENV) === "1";
}

/** kernel.io_uring_disabled (0, 1 or 2), or undefined when it cannot be read. */
function ioUringDisabledSysctl(): string | undefined {
  const path = "/proc/sys/kernel/io_uring_disabled";
  try {
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return undefined;
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined; // kernels before 6.6 have no such sysctl
  }
}

function describeSetupError(error: SyscallError): string {
  const prefix = `${error.syscall}: ${error.code}`;
  if (error.errno === EPERM) {
    const sysctl = ioUringDisabledSysctl();
    if (sysctl !== undefined && sysctl !== "0") {
      return `${prefix} (kernel.io_uring_disabled=${sysctl})`;
    }
    if (sysctl === "0") return `${prefix} (refused by a seccomp profile or the container runtime)`;
    return `${prefix} (kernel.io_uring_disabled=2 or a seccomp profile)`;
  }
  if (error.errno === ENOSYS) return `${prefix} (kernel too old, or built without io_uring)`;
  if (error.errno === ENOMEM && error.syscall === "io_uring_setup") {
    return `${prefix} (RLIMIT_MEMLOCK too low for the rings; kernels before 5.12 charge it)`;
  }
  return error.message;
}

function runProbe(): string | undefined {
  if (disabledByEnvironment()) {
    return `disabled by ${DISABLE_IO_URING_ENV}=1 (simulating kernel.io_uring_disabled=2)`;
  }
  let ring: IoUring;
  try {
    ring = new IoUring(4);
  } catch (error) {
    if (error instanceof SyscallError) return describeSetupError(error);
    return `io_uring unavailable: ${error instanceof Error ? error.message : String(error)}`;
  }
  try {
    let opcodes: Set<number>;
    try {
      opcodes = ring.supportedOpcodes();
    } catch (error) {
      if (error instanceof SyscallError && error.errno === EINVAL) {
        return "io_uring_register: IORING_REGISTER_PROBE refused (kernel older than 5.6)";
      }
      throw error;
    }
    for (const [opcode, name] of REQUIRED_OPCODES) {
      if (!opcodes.has(opcode)) return `io_uring lacks ${name} (kernel older than 5.6)`;
    }
    // A seccomp profile may allow io_uring_setup and refuse io_uring_enter:
    // only a completed operation proves the ring works.
    ring.prepNop(1);
    ring.submit(1);
    let result: number | undefined;
    ring.reap((_userData, res) => result = res);
    if (result !== 0) return `io_uring: a NOP did not complete (result ${result})`;
    return undefined;
  } catch (error) {
    if (error instanceof SyscallError) return describeSetupError(error);
    return `io_uring unavailable: ${error instanceof Error ? error.message : String(error)}`;
  } finally {
    ring.close();
  }
}

/**
 * Checks once per isolate whether io_uring works here: creates a small ring,
 * checks that the kernel has the operations the engine uses (READV, WRITEV,
 * FSYNC, FALLOCATE) and completes a NOP through it. Returns `undefined` when
 * it works, otherwise the reason, for example
 * `"io_uring_setup: EPERM (kernel.io_uring_disabled=2)"` or
 * `"io_uring_setup: ENOSYS (kernel too old, or built without io_uring)"`.
 *
 * Setting `VHOSTD_DISABLE_IO_URING=1` in the environment makes it fail as if
 * `kernel.io_uring_disabled=2` were set: this is how the test suite exercises
 * the synchronous fallback. (The variable is read only when env permission
 * for it is granted.)
 */
export function probeIoUring(): string | undefined {
  probed ??= { reason: runProbe() };
  return probed.reason;
}

/** `"io_uring"` when {@linkcode probeIoUring} passes, otherwise `"sync"`. */
export function defaultEngineKind(): FileIoEngineKind {
  return probeIoUring() === undefined ? "io_uring" : "sync";
}

/** Options of {@linkcode openFileIoEngine}. */
export type OpenFileIoEngineOptions = UringEngineOptions;

/**
 * Opens the engine `kind`: `"sync"` always works; `"io_uring"` throws an
 * Error naming the reason when io_uring is unavailable or the ring cannot be
 * created (`entries` is its ring size, default 256).
 *
 * @example
 * ```ts
 * import { defaultEngineKind, openFileIoEngine } from "./open_engine.ts";
 * const engine = openFileIoEngine(defaultEngineKind());
 * engine.close();
 * ```
 */
export function openFileIoEngine(
  kind: FileIoEngineKind,
  options: OpenFileIoEngineOptions = {},
): FileIoEngine {
  if (kind === "sync") return new SyncFileIoEngine();
  if (kind !== "io_uring") {
    throw new Error(`unknown file I/O engine ${JSON.stringify(kind)} (io_uring or sync)`);
  }
  const reason = probeIoUring();
  if (reason !== undefined) {
    throw new Error(`the io_uring file I/O engine was requested but is unavailable: ${reason}`);
  }
  try {
    return new UringFileIoEngine(options);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new Error(`the io_uring file I/O engine could not start: ${detail}`, { cause: error });
  }
}
