/**
 * io_uring driven from TypeScript: io_uring_setup/enter/register through
 * libc's `syscall`, the SQ ring, CQ ring and SQE array mapped into this
 * isolate, and head/tail exchanged with the kernel through Atomics on
 * Uint32Array views of those mappings.
 *
 * One {@linkcode IoUring} belongs to one isolate (one thread): the kernel
 * shares its rings with this process only, and nothing here locks. The hot
 * path (`prep*`, `submit`, `reap`) allocates nothing per operation: SQEs are
 * written as 16 32-bit words, user data is a number below 2^53 (a slot
 * number), and iovec arrays are passed by address (see
 * {@linkcode IovecArray.bufferAddress}).
 *
 * Layouts are those of include/uapi/linux/io_uring.h on x86-64.
 *
 * @module
 */

import {
  IO_URING_OP_SUPPORTED,
  IORING_ENTER_GETEVENTS,
  IORING_FEAT_SINGLE_MMAP,
  IORING_OFF_CQ_RING,
  IORING_OFF_SQ_RING,
  IORING_OFF_SQES,
  IORING_OP_CLOSE,
  IORING_OP_FALLOCATE,
  IORING_OP_FSYNC,
  IORING_OP_NOP,
  IORING_OP_READV,
  IORING_OP_WRITEV,
  IORING_REGISTER_EVENTFD,
  IORING_REGISTER_PROBE,
  IORING_SETUP_CLAMP,
  IORING_SETUP_CQSIZE,
  IORING_SETUP_SUBMIT_ALL,
  IORING_SQ_CQ_OVERFLOW,
  IORING_UNREGISTER_EVENTFD,
  IOSQE_IO_HARDLINK,
  MAP_POPULATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  SYS_io_uring_enter,
  SYS_io_uring_register,
  SYS_io_uring_setup,
} from "./constants.ts";
import { EAGAIN, EBUSY, EINTR, EINVAL, SyscallError } from "./errno.ts";
import { lastErrno, libc } from "./libc.ts";
import { mapArrayBuffer, mmap, munmap } from "./memory.ts";
import { closeQuietly } from "./fd.ts";

const TWO_POW_32 = 0x1_0000_0000;
/** sizeof(struct io_uring_params). */
const PARAMS_SIZE = 120;
/** sizeof(struct io_uring_sqe), in 32-bit words. */
const SQE_WORDS = 16;
/** sizeof(struct io_uring_cqe) without CQE32, in 32-bit words. */
const CQE_WORDS = 4;
/** Opcodes a struct io_uring_probe has room for (the kernel caps it at 256). */
const PROBE_OPS = 256;

const SYSCALL_SETUP = BigInt(SYS_io_uring_setup);
const SYSCALL_ENTER = BigInt(SYS_io_uring_enter);
const SYSCALL_REGISTER = BigInt(SYS_io_uring_register);

/**
 * Receives one completion from {@linkcode IoUring.reap}: the SQE's user
 * data, its result (bytes, 0, or `-errno`) and the CQE flags.
 */
export type CqeHandler = (userData: number, res: number, flags: number) => void;

/** Options of {@linkcode IoUring}. */
export interface IoUringOptions {
  /**
   * CQ ring size (IORING_SETUP_CQSIZE); the kernel's default is twice the
   * SQ size.
   */
  cqEntries?: number;
  /**
   * IORING_SETUP_* flags. Default IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL
   * (SUBMIT_ALL is dropped again on kernels older than 5.18, which refuse it).
   */
  flags?: number;
}

interface Mapping {
  readonly addr: bigint;
  readonly length: number;
}

/** Calls io_uring_enter; returns its result, or `-errno` on failure. */
function enterRaw(fd: number, toSubmit: number, minComplete: number, flags: number): number {
  const rc = libc().syscall_io_uring_enter(
    SYSCALL_ENTER,
    fd,
    toSubmit,
    minComplete,
    flags,
    null,
    0n,
  );
  return rc < 0 ? -lastErrno() : rc;
}

/**
 * An io_uring instance: its fd, the mapped rings, and SQE preparation for
 * the operations file I/O needs.
 *
 * `prep*` methods write one SQE and return `false` when the SQ ring is full
 * (call {@linkcode submit} and retry). Prepared SQEs reach the kernel only in
 * `submit`. Completions are read with {@linkcode reap}.
 *
 * @example
 * ```ts
 * import { IoUring } from "./io_uring.ts";
 * const ring = new IoUring(8);
 * ring.prepNop(42);
 * ring.submit(1);
 * ring.reap((userData, res) => console.log(userData, res)); // 42 0
 * ring.close();
 * ```
 */
export class IoUring {
  /** The ring's fd. */
  readonly fd: number;
  /** SQ ring size (the kernel may round up or clamp the requested size). */
  readonly sqEntries: number;
  /** CQ ring size. */
  readonly cqEntries: number;
  /** IORING_FEAT_* bits the kernel reported. */
  readonly features: number;
  /** IORING_SETUP_* flags the ring was created with. */
  readonly setupFlags: number;

  readonly #mappings: Mapping[] = [];
  readonly #sq: Uint32Array;
  readonly #cq: Uint32Array;
  readonly #sqes: Uint32Array;
  readonly #sqHead: number;
  readonly #sqTail: number;
  readonly #sqMask: number;
  readonly #sqFlags: number;
  readonly #cqHead: number;
  readonly #cqTail: number;
  readonly #cqMask: number;
  readonly #cqOverflow: number;
  readonly #cqes: number;
  /** Our copy of the SQ tail: SQEs prepared so far (u32, wraps). */
  #tail = 0;
  #closed = false;
  readonly #registerArg = new Int32Array(new ArrayBuffer(4));

  /**
   * Creates a ring with room for `entries` SQEs (io_uring_setup) and maps it.
   * Throws {@linkcode SyscallError} (EPERM when io_uring is disabled, ENOSYS
   * on kernels without it, ENOMEM past the memlock limit on old kernels).
   */
  constructor(entries: number, options: IoUringOptions = {}) {
    if (!Number.isInteger(entries) || entries < 1) {
      throw new SyscallError("io_uring_setup", EINVAL, `entries ${entries}`);
    }
    const params = new Uint8Array(new ArrayBuffer(PARAMS_SIZE));
    const view = new DataView(params.buffer);
    const explicitFlags = options.flags !== undefined;
    let flags = options.flags ?? (IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL);
    if (options.cqEntries !== undefined) flags |= IORING_SETUP_CQSIZE;
    let fd: number;
    for (;;) {
      params.fill(0);
      view.setUint32(8, flags, true);
      if (options.cqEntries !== undefined) view.setUint32(4, options.cqEntries, true);
      fd = libc().syscall_io_uring_setup(SYSCALL_SETUP, entries, params);
      if (fd >= 0) break;
      const errno = lastErrno();
      if (errno === EINTR) continue;
      // Kernels before 5.18 refuse SUBMIT_ALL with EINVAL; it is only a
      // convenience, so try once more without it.
      if (errno === EINVAL && !explicitFlags && (flags & IORING_SETUP_SUBMIT_ALL) !== 0) {
        flags &= ~IORING_SETUP_SUBMIT_ALL;
        continue;
      }
      throw new SyscallError(
        "io_uring_setup",
        errno,
        `entries ${entries}, flags 0x${flags.toString(16)}`,
      );
    }
    this.fd = fd;
    this.setupFlags = flags;
    this.sqEntries = view.getUint32(0, true);
    this.cqEntries = view.getUint32(4, true);
    this.features = view.getUint32(20, true);
    // struct io_sqring_offsets at 40 and io_cqring_offsets at 80, u32 each.
    const sqOff = (field: number) => view.getUint32(40 + field * 4, true);
    const cqOff = (field: number) => view.getUint32(80 + field * 4, true);
    try {
      const sqSize = sqOff(6) + this.sqEntries * 4; // array + one u32 per entry
      const cqSize = cqOff(5) + this.cqEntries * CQE_WORDS * 4; // cqes + the CQEs
      if ((this.features & IORING_FEAT_SINGLE_MMAP) !== 0) {
        const ring = this.#map(Math.max(sqSize, cqSize), IORING_OFF_SQ_RING);
        this.#sq = ring;
        this.#cq = ring;
      } else {
        this.#sq = this.#map(sqSize, IORING_OFF_SQ_RING);
        this.#cq = this.#map(cqSize, IORING_OFF_CQ_RING);
      }
      this.#sqes = this.#map(this.sqEntries * SQE_WORDS * 4, IORING_OFF_SQES);
    } catch (error) {
      this.#unmapAll();
      closeQuietly(fd);
      throw error;
    }
    // Offsets are byte offsets of u32 fields; the views index words.
    this.#sqHead = sqOff(0) / 4;
    this.#sqTail = sqOff(1) / 4;
    this.#sqMask = this.#sq[sqOff(2) / 4];
    this.#sqFlags = sqOff(4) / 4;
    this.#cqHead = cqOff(0) / 4;
    this.#cqTail = cqOff(1) / 4;
    this.#cqMask = this.#cq[cqOff(2) / 4];
    this.#cqOverflow = cqOff(4) / 4;
    this.#cqes = cqOff(5) / 4;
    this.#tail = Atomics.load(this.#sq, this.#sqTail);
    // SQE i always sits in slot i of the indirection array, so it is filled
    // once here and never again.
    const array = sqOff(6) / 4;
    for (let i = 0; i < this.sqEntries; i++) this.#sq[array + i] = i;
  }

  #map(length: number, offset: number): Uint32Array {
    const addr = mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, this.fd, offset);
    this.#mappings.push({ addr, length });
    return new Uint32Array(mapArrayBuffer(addr, length));
  }

  #unmapAll(): void {
    for (const { addr, length } of this.#mappings.splice(0)) munmap(addr, length);
  }

  /** Free SQE slots: how many more `prep*` calls succeed before a submit. */
  get sqSpace(): number {
    return this.sqEntries - this.sqPending;
  }

  /** SQEs prepared that the kernel has not consumed yet. */
  get sqPending(): number {
    return (this.#tail - Atomics.load(this.#sq, this.#sqHead)) >>> 0;
  }

  /** CQEs waiting in the CQ ring. */
  get cqReady(): number {
    return (Atomics.load(this.#cq, this.#cqTail) - Atomics.load(this.#cq, this.#cqHead)) >>> 0;
  }

  /**
   * True when completions overflowed the CQ ring and wait in the kernel
   * (IORING_SQ_CQ_OVERFLOW); {@linkcode reap} flushes them.
   */
  get cqOverflowPending(): boolean {
    return (Atomics.load(this.#sq, this.#sqFlags) & IORING_SQ_CQ_OVERFLOW) !== 0;
  }

  /**
   * Completions the kernel had to drop because the CQ ring was full (only on
   * kernels without IORING_FEAT_NODROP).
   */
  get cqDropped(): number {
    return Atomics.load(this.#cq, this.#cqOverflow);
  }

  /**
   * Zeroes the next SQE and fills its common fields; returns the index of
   * its first word, or -1 when the SQ ring is full.
   */
  #sqe(opcode: number, fd: number, offset: number, addr: number, userData: number): number {
    if (this.#closed) throw new Error("IoUring used after close()");
    if (this.sqPending >= this.sqEntries) return -1;
    const w = (this.#tail & this.#sqMask) * SQE_WORDS;
    const sqes = this.#sqes;
    sqes[w] = opcode; // flags 0, ioprio 0
    sqes[w + 1] = fd;
    sqes[w + 2] = offset >>> 0;
    sqes[w + 3] = Math.floor(offset / TWO_POW_32);
    sqes[w + 4] = addr >>> 0;
    sqes[w + 5] = Math.floor(addr / TWO_POW_32);
    sqes[w + 6] = 0; // len
    sqes[w + 7] = 0; // rw_flags, fsync_flags...
    sqes[w + 8] = userData >>> 0;
    sqes[w + 9] = Math.floor(userData / TWO_POW_32);
    // buf_index, personality, splice_fd_in, addr3, pad: the kernel refuses
    // some operations (EINVAL) when these are not zero.
    for (let i = 10; i < SQE_WORDS; i++) sqes[w + i] = 0;
    this.#tail = (this.#tail + 1) >>> 0;
    return w;
  }

  /**
   * Prepares IORING_OP_READV: `count` iovecs at host address `iovAddress`
   * into which `fd` is read from `offset`. Returns `false` when the SQ is full.
   */
  prepReadv(
    fd: number,
    iovAddress: number,
    count: number,
    offset: number,
    userData: number,
  ): boolean {
    const w = this.#sqe(IORING_OP_READV, fd, offset, iovAddress, userData);
    if (w < 0) return false;
    this.#sqes[w + 6] = count;
    return true;
  }

  /**
   * Prepares IORING_OP_WRITEV of `count` iovecs at `iovAddress` to `fd` at
   * `offset`, with RWF_* `rwFlags` (RWF_DSYNC). Returns `false` when full.
   */
  prepWritev(
    fd: number,
    iovAddress: number,
    count: number,
    offset: number,
    rwFlags: number,
    userData: number,
  ): boolean {
    const w = this.#sqe(IORING_OP_WRITEV, fd, offset, iovAddress, userData);
    if (w < 0) return false;
    this.#sqes[w + 6] = count;
    this.#sqes[w + 7] = rwFlags;
    return true;
  }

  /**
   * Prepares IORING_OP_FSYNC of the whole file; `fsyncFlags`
   * IORING_FSYNC_DATASYNC makes it fdatasync. Returns `false` when full.
   */
  prepFsync(fd: number, fsyncFlags: number, userData: number): boolean {
    const w = this.#sqe(IORING_OP_FSYNC, fd, 0, 0, userData);
    if (w < 0) return false;
    this.#sqes[w + 7] = fsyncFlags;
    return true;
  }

  /**
   * Prepares IORING_OP_FALLOCATE (Linux 5.6+). The SQE carries the length in
   * its `addr` field and the mode in `len`, as io_fallocate_prep reads them.
   * Returns `false` when full.
   */
  prepFallocate(
    fd: number,
    mode: number,
    offset: number,
    length: number,
    userData: number,
  ): boolean {
    const w = this.#sqe(IORING_OP_FALLOCATE, fd, offset, length, userData);
    if (w < 0) return false;
    this.#sqes[w + 6] = mode;
    return true;
  }

  /**
   * Prepares IORING_OP_CLOSE of `fd` (Linux 5.6+): closed by the kernel when
   * the operation runs, so the caller must not use or close `fd` after
   * submitting. Returns `false` when full.
   */
  prepClose(fd: number, userData: number): boolean {
    return this.#sqe(IORING_OP_CLOSE, fd, 0, 0, userData) >= 0;
  }

  /**
   * Makes the SQE prepared last start the next one only once it completed,
   * whether or not it succeeded (IOSQE_IO_HARDLINK). The next SQE must be
   * prepared before {@linkcode submit}.
   */
  hardLinkLast(): void {
    const w = (((this.#tail - 1) >>> 0) & this.#sqMask) * SQE_WORDS;
    this.#sqes[w] |= IOSQE_IO_HARDLINK << 8;
  }

  /** Prepares IORING_OP_NOP (completes with 0). Returns `false` when full. */
  prepNop(userData: number): boolean {
    return this.#sqe(IORING_OP_NOP, -1, 0, 0, userData) >= 0;
  }

  /**
   * Hands the prepared SQEs to the kernel (io_uring_enter) and, with
   * `waitFor` > 0, waits until that many completions are in the CQ ring.
   * Returns how many SQEs the kernel consumed.
   *
   * EINTR is retried. EAGAIN and EBUSY (the kernel is short of memory, or
   * holds overflowed completions) return 0 with the SQEs still in the ring:
   * nothing is lost, and a later `submit` (after a {@linkcode reap}) hands
   * them over. Other failures throw {@linkcode SyscallError}.
   */
  submit(waitFor = 0): number {
    if (this.#closed) throw new Error("IoUring used after close()");
    // Publish the SQEs written since the last submit; the store orders them
    // before the new tail for the kernel.
    Atomics.store(this.#sq, this.#sqTail, this.#tail);
    const pending = this.sqPending;
    if (pending === 0 && waitFor === 0) return 0;
    const flags = waitFor > 0 ? IORING_ENTER_GETEVENTS : 0;
    for (;;) {
      const rc = enterRaw(this.fd, pending, waitFor, flags);
      if (rc >= 0) return rc;
      if (rc === -EINTR) continue;
      if (rc === -EAGAIN || rc === -EBUSY) return 0;
      throw new SyscallError("io_uring_enter", -rc, `fd ${this.fd}, to_submit ${pending}`);
    }
  }

  /**
   * Calls `handler` for each completion in the CQ ring, oldest first, up to
   * `max`; returns how many. The CQE is released to the kernel before its
   * handler runs, so a handler may prepare, submit and even reap again.
   * When completions overflowed into the kernel (IORING_SQ_CQ_OVERFLOW), it
   * asks the kernel to move them into the ring (io_uring_enter with
   * IORING_ENTER_GETEVENTS) and keeps reaping.
   */
  reap(handler: CqeHandler, max = Number.POSITIVE_INFINITY): number {
    if (this.#closed) throw new Error("IoUring used after close()");
    const cq = this.#cq;
    let reaped = 0;
    while (reaped < max) {
      const head = Atomics.load(cq, this.#cqHead);
      if (head === Atomics.load(cq, this.#cqTail)) {
        if (!this.cqOverflowPending) break;
        const rc = enterRaw(this.fd, 0, 0, IORING_ENTER_GETEVENTS);
        if (rc < 0 && rc !== -EINTR && rc !== -EAGAIN && rc !== -EBUSY) {
          throw new SyscallError("io_uring_enter", -rc, "flushing overflowed completions");
        }
        if (rc < 0 || this.cqReady === 0) break;
        continue;
      }
      const w = this.#cqes + (head & this.#cqMask) * CQE_WORDS;
      const userData = cq[w] + cq[w + 1] * TWO_POW_32;
      const res = cq[w + 2] | 0;
      const flags = cq[w + 3];
      Atomics.store(cq, this.#cqHead, (head + 1) >>> 0);
      reaped++;
      handler(userData, res, flags);
    }
    return reaped;
  }

  /**
   * Has the kernel signal `eventfd` for every completion
   * (IORING_REGISTER_EVENTFD). One eventfd per ring.
   */
  registerEventfd(eventfd: number): void {
    this.#registerArg[0] = eventfd;
    this.#register(IORING_REGISTER_EVENTFD, this.#registerArg, 1, "IORING_REGISTER_EVENTFD");
  }

  /** Stops signalling the registered eventfd (IORING_UNREGISTER_EVENTFD). */
  unregisterEventfd(): void {
    this.#register(IORING_UNREGISTER_EVENTFD, null, 0, "IORING_UNREGISTER_EVENTFD");
  }

  /**
   * Opcodes this kernel supports (IORING_REGISTER_PROBE, Linux 5.6+; older
   * kernels throw EINVAL).
   */
  supportedOpcodes(): Set<number> {
    // struct io_uring_probe: last_op u8, ops_len u8, resv u16, resv2 u32[3],
    // then struct io_uring_probe_op { op u8, resv u8, flags u16, resv2 u32 }.
    const probe = new Uint8Array(new ArrayBuffer(16 + PROBE_OPS * 8));
    this.#register(IORING_REGISTER_PROBE, probe, PROBE_OPS, "IORING_REGISTER_PROBE");
    const view = new DataView(probe.buffer);
    const supported = new Set<number>();
    const opsLength = probe[1];
    for (let i = 0; i < opsLength; i++) {
      const entry = 16 + i * 8;
      if ((view.getUint16(entry + 2, true) & IO_URING_OP_SUPPORTED) !== 0) {
        supported.add(probe[entry]);
      }
    }
    return supported;
  }

  #register(opcode: number, arg: BufferSource | null, count: number, what: string): void {
    if (this.#closed) throw new Error("IoUring used after close()");
    for (;;) {
      const rc = libc().syscall_io_uring_register(SYSCALL_REGISTER, this.fd, opcode, arg, count);
      if (rc >= 0) return;
      const errno = lastErrno();
      if (errno !== EINTR) throw new SyscallError("io_uring_register", errno, what);
    }
  }

  /**
   * Unmaps the rings and closes the ring's fd. Operations still in flight
   * are cancelled by the kernel; their memory must stay valid until then,
   * so close only when nothing is in flight. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unmapAll();
    closeQuietly(this.fd);
  }
}
