/**
 * Credentials of the calling thread: filesystem uid and gid, supplementary
 * groups and capability sets, through raw system calls (x86-64 Linux).
 *
 * Linux keeps credentials per thread. glibc's `setgroups`, `setuid` and
 * friends make the whole process consistent by signalling every thread to
 * change too (the "setxid broadcast"); these wrappers call the kernel
 * directly, so a change stays on the thread that made it. That is what a
 * Worker serving one request at a time on its own thread needs: switch for
 * one request, switch back, and leave every other thread alone.
 *
 * `setfsuid` and `setfsgid` never report failure: they return the previous
 * id whether or not the change took. Read the id back with
 * {@linkcode threadFsuid} / {@linkcode threadFsgid} to know.
 *
 * @module
 */

import { EINVAL, SyscallError } from "./errno.ts";
import { libc, throwLastError } from "./libc.ts";
import { allocateBytes } from "./struct.ts";

const SYS_getgroups = 115n;
const SYS_setgroups = 116n;
const SYS_setfsuid = 122n;
const SYS_setfsgid = 123n;
const SYS_capget = 125n;
const SYS_capset = 126n;

/** `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two 32-bit words. */
const CAPABILITY_VERSION_3 = 0x20080522;
/** Size of `struct __user_cap_header_struct` (version, pid). */
const CAP_HEADER_SIZE = 8;
/** Two `struct __user_cap_data_struct` (effective, permitted, inheritable). */
const CAP_DATA_SIZE = 2 * 12;
/** An id no one has: `setfsuid(-1)` changes nothing and returns the current id. */
const NO_ID = 0xffff_ffff;
/** `NGROUPS_MAX` of Linux. */
const MAX_GROUPS = 65536;

/** Capability number of CAP_FSETID: keep setuid/setgid bits on write and chmod. */
export const CAP_FSETID = 4;

/** The three capability sets of a thread, one bit per capability number. */
export interface CapabilitySets {
  /** What the thread may use now. */
  effective: bigint;
  /** What it may raise into `effective`. */
  permitted: bigint;
  /** What survives an execve. */
  inheritable: bigint;
}

/**
 * Sets this thread's filesystem uid (raw `setfsuid`) and returns the
 * previous one. The change silently does not take without CAP_SETUID
 * (unless `uid` is one of the thread's own ids): check with
 * {@linkcode threadFsuid}.
 */
export function setThreadFsuid(uid: number): number {
  return libc().syscall_setfsid(SYS_setfsuid, uid >>> 0) >>> 0;
}

/** Sets this thread's filesystem gid (raw `setfsgid`); see {@linkcode setThreadFsuid}. */
export function setThreadFsgid(gid: number): number {
  return libc().syscall_setfsid(SYS_setfsgid, gid >>> 0) >>> 0;
}

/** This thread's filesystem uid (a `setfsuid` with an invalid id changes nothing). */
export function threadFsuid(): number {
  return setThreadFsuid(NO_ID);
}

/** This thread's filesystem gid. */
export function threadFsgid(): number {
  return setThreadFsgid(NO_ID);
}

/** This thread's supplementary groups (raw `getgroups`). */
export function threadGroups(): number[] {
  const count = libc().syscall_groups(SYS_getgroups, 0, null);
  if (count < 0) throwLastError("getgroups");
  if (count === 0) return [];
  const list = new Uint32Array(allocateBytes(count * 4).buffer);
  const got = libc().syscall_groups(SYS_getgroups, count, list);
  if (got < 0) throwLastError("getgroups");
  return [...list.subarray(0, got)];
}

const EMPTY_GROUPS = new Uint32Array(allocateBytes(4).buffer);

/**
 * Replaces this thread's supplementary groups (raw `setgroups`, this thread
 * only). Needs CAP_SETGID: EPERM without it.
 */
export function setThreadGroups(groups: readonly number[]): void {
  if (groups.length > MAX_GROUPS) {
    throw new SyscallError("setgroups", EINVAL, `${groups.length} groups`);
  }
  const list = groups.length === 0
    ? EMPTY_GROUPS
    : new Uint32Array(allocateBytes(groups.length * 4).buffer);
  for (let i = 0; i < groups.length; i++) list[i] = groups[i] >>> 0;
  if (libc().syscall_groups(SYS_setgroups, groups.length, list) < 0) {
    throwLastError("setgroups");
  }
}

// One header and one data buffer per isolate, reused: capget/capset sit on
// the WRITE path when the guest asks for setuid bits to be cleared.
const capHeader = allocateBytes(CAP_HEADER_SIZE);
const capHeaderView = new DataView(capHeader.buffer);
const capData = allocateBytes(CAP_DATA_SIZE);
const capDataView = new DataView(capData.buffer);

function prepareHeader(): void {
  capHeaderView.setUint32(0, CAPABILITY_VERSION_3, true);
  capHeaderView.setInt32(4, 0, true); // 0: the calling thread
}

function capWord(index: number, field: number): bigint {
  return BigInt(capDataView.getUint32(index * 12 + field * 4, true));
}

function setCapWords(field: number, value: bigint): void {
  capDataView.setUint32(field * 4, Number(value & 0xffff_ffffn), true);
  capDataView.setUint32(12 + field * 4, Number((value >> 32n) & 0xffff_ffffn), true);
}

/** This thread's capability sets (raw `capget` of pid 0). */
export function threadCapabilities(): CapabilitySets {
  prepareHeader();
  if (libc().syscall_capability(SYS_capget, capHeader, capData) < 0) {
    throwLastError("capget");
  }
  const set = (field: number) => capWord(0, field) | (capWord(1, field) << 32n);
  return { effective: set(0), permitted: set(1), inheritable: set(2) };
}

/**
 * Sets this thread's capability sets (raw `capset` of pid 0, which changes
 * only the calling thread). A set may only shrink `permitted`, and
 * `effective` must stay within `permitted`: EPERM otherwise.
 */
export function setThreadCapabilities(sets: CapabilitySets): void {
  prepareHeader();
  setCapWords(0, sets.effective);
  setCapWords(1, sets.permitted);
  setCapWords(2, sets.inheritable);
  if (libc().syscall_capability(SYS_capset, capHeader, capData) < 0) {
    throwLastError("capset");
  }
}

/** The bit of capability `cap` in a {@linkcode CapabilitySets} set. */
export function capabilityBit(cap: number): bigint {
  return 1n << BigInt(cap);
}
