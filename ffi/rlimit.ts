/**
 * The process's open file limit (`getrlimit`/`setrlimit` on RLIMIT_NOFILE),
 * for virtiofsd's `--rlimit-nofile`.
 *
 * @module
 */

import { libc, throwLastError } from "./libc.ts";

/** `RLIMIT_NOFILE` on Linux. */
const RLIMIT_NOFILE = 7;

/** A resource limit: the soft limit enforced now and the hard ceiling it may be raised to. */
export interface ResourceLimit {
  /** `rlim_cur`. */
  soft: bigint;
  /** `rlim_max`. */
  hard: bigint;
}

/** The open file limit of this process. Throws SyscallError. */
export function openFileLimit(): ResourceLimit {
  const buf = new BigUint64Array(2);
  if (libc().getrlimit(RLIMIT_NOFILE, buf) !== 0) throwLastError("getrlimit", "RLIMIT_NOFILE");
  return { soft: buf[0], hard: buf[1] };
}

/**
 * Sets the open file limit of this process (inherited by the processes it
 * starts). Throws SyscallError: EPERM for raising the hard limit without
 * CAP_SYS_RESOURCE, EINVAL for soft above hard or above fs.nr_open.
 */
export function setOpenFileLimit(limit: ResourceLimit): void {
  const buf = new BigUint64Array([limit.soft, limit.hard]);
  if (libc().setrlimit(RLIMIT_NOFILE, buf) !== 0) {
    throwLastError("setrlimit", `RLIMIT_NOFILE ${limit.soft}:${limit.hard}`);
  }
}
