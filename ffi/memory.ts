/**
 * Shared memory: memfd, mmap, and ArrayBuffer views over mapped memory.
 *
 * A mapping's address is a `bigint` that can be posted to a Worker; the
 * Worker calls {@linkcode mapArrayBuffer} with it to see the same memory.
 * Every isolate holding such a view must stop touching it before `munmap`,
 * or the process dies.
 *
 * @module
 */

import { MFD_CLOEXEC } from "./constants.ts";
import { EINVAL, SyscallError } from "./errno.ts";
import { libc, throwLastError } from "./libc.ts";
import { cString } from "./struct.ts";

/** mmap's failure value, (void *) -1, as an unsigned 64-bit address. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/**
 * Creates an anonymous memory-backed file (`memfd_create`) and returns its fd.
 * The name only shows in /proc; it need not be unique.
 */
export function memfdCreate(name: string, flags: number = MFD_CLOEXEC): number {
  const fd = libc().memfd_create(cString("memfd_create", name), flags);
  if (fd < 0) throwLastError("memfd_create", name);
  return fd;
}

/** Sets a file's length (`ftruncate`). */
export function ftruncate(fd: number, size: number): void {
  if (libc().ftruncate(fd, BigInt(size)) < 0) throwLastError("ftruncate", `fd ${fd}`);
}

/**
 * Maps `length` bytes of `fd` from `offset` (or anonymous memory with
 * MAP_ANONYMOUS and fd -1) at an address the kernel picks; returns it.
 */
export function mmap(
  length: number,
  prot: number,
  flags: number,
  fd: number,
  offset: number,
): bigint {
  const addr = libc().mmap(0n, BigInt(length), prot, flags, fd, BigInt(offset));
  if (addr === MAP_FAILED) throwLastError("mmap", `fd ${fd}, length ${length}, offset ${offset}`);
  return addr;
}

/** Unmaps `length` bytes at `addr` (`munmap`). All views over them must be dead. */
export function munmap(addr: bigint, length: number): void {
  if (libc().munmap(addr, BigInt(length)) < 0) throwLastError("munmap");
}

/**
 * An ArrayBuffer over `length` bytes of mapped memory at `addr`, without
 * copying. Works in any isolate of the process given the address. The buffer
 * does not own the memory: it must not be used after `munmap`.
 */
export function mapArrayBuffer(addr: bigint, length: number): ArrayBuffer {
  if (addr <= 0n || !Number.isSafeInteger(length) || length <= 0) {
    throw new SyscallError("mapArrayBuffer", EINVAL, `address ${addr}, length ${length}`);
  }
  const pointer = Deno.UnsafePointer.create(addr);
  if (pointer === null) {
    throw new SyscallError("mapArrayBuffer", EINVAL, `address ${addr}`);
  }
  return Deno.UnsafePointerView.getArrayBuffer(pointer, length);
}

/**
 * Host address of a typed array's first byte (its `byteOffset` included), as
 * a number; 0 for an empty array without storage. Use it to fill iovecs.
 * The address stays valid while the array's buffer is alive and not
 * detached; buffers made with `new ArrayBuffer` or {@linkcode mapArrayBuffer}
 * never move. Costs a pointer object (~0.2 µs): compute once and cache on
 * hot paths.
 */
export function pointerValue(buf: Uint8Array): number {
  const pointer = Deno.UnsafePointer.of(buf);
  return pointer === null ? 0 : Number(Deno.UnsafePointer.value(pointer));
}
