/**
 * One reused buffer for the C path argument of single-path calls (statx,
 * openat, openat2, unlinkat, mkdirat, ...). Every call used to allocate a
 * fresh ArrayBuffer for its NUL-terminated name, which V8 takes from malloc:
 * on the virtio-fs request path that was a malloc and a free per syscall.
 *
 * The buffer holds one path at a time and is only valid until the next
 * call: take it right before the syscall and pass it straight in. Calls
 * with two paths (renameat2, linkat, symlinkat) must keep using
 * {@linkcode pathBytes}. Each Worker has its own module instance, so its
 * own buffer.
 *
 * @module
 */

import { EINVAL, SyscallError } from "./errno.ts";
import { allocateBytes } from "./struct.ts";

/** PATH_MAX, NUL included: longer paths fail in the kernel anyway (they get their own buffer). */
const SCRATCH_BYTES = 4096;
const scratch = allocateBytes(SCRATCH_BYTES);
const encoder = new TextEncoder();

/**
 * `name` NUL-terminated in the shared scratch buffer (bytes after the NUL
 * are whatever an earlier path left there; C stops at the NUL). A longer
 * name gets a buffer of its own. EINVAL for a name containing NUL.
 */
export function scratchPath(syscall: string, name: string | Uint8Array): Uint8Array<ArrayBuffer> {
  if (typeof name === "string") {
    if (name.length === 0) {
      // AT_EMPTY_PATH calls on an fd, the most frequent of all: no encoder call.
      scratch[0] = 0;
      return scratch;
    }
    if (name.includes("\0")) throw new SyscallError(syscall, EINVAL, "string contains a NUL byte");
    // Up to 3 bytes per UTF-16 unit: when that fits, encodeInto cannot stop short.
    if (name.length * 3 < SCRATCH_BYTES) {
      const { written } = encoder.encodeInto(name, scratch);
      scratch[written] = 0;
      return scratch;
    }
    const bytes = encoder.encode(name);
    const own = allocateBytes(bytes.length + 1);
    own.set(bytes);
    return own;
  }
  if (name.includes(0)) throw new SyscallError(syscall, EINVAL, "name contains a NUL byte");
  const target = name.length < SCRATCH_BYTES ? scratch : allocateBytes(name.length + 1);
  target.set(name);
  target[name.length] = 0;
  return target;
}
