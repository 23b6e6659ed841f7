/**
 * LOAD's staging writes with one copy: RAM disk data is spliced from the
 * state pipe straight into the staging memfd (the kernel copies each pipe
 * page into the memfd's page), and the checksum reads the landed bytes
 * through a read-only mapping of the memfd. Reading into a buffer and
 * writing it out again (see `ram_disk_stager.ts`) copies every byte twice.
 *
 * @module
 */

import {
  fstat,
  MAP_SHARED,
  mapArrayBuffer,
  mmap,
  munmap,
  PROT_READ,
  S_IFIFO,
  S_IFMT,
} from "../../ffi/mod.ts";
import { FdSource } from "./byte_stream.ts";
import { StateStreamError } from "./errors.ts";
import type { DirectDataPath } from "./state_reader.ts";

/** Most bytes moved by one splice (the state pipe holds about this much). */
export const SPLICE_PIECE = 1 << 20;
/** Bytes of the staging memfd mapped at a time for the checksum. */
export const WINDOW_LENGTH = 64 << 20;
const PAGE = 4096;

/**
 * A {@linkcode DirectDataPath} that splices from a pipe into `stagingFd`.
 * {@linkcode close} must be called on every way out (it unmaps).
 */
export class SpliceStager implements DirectDataPath {
  readonly #source: FdSource;
  readonly #fd: number;
  readonly #size: number;
  #windowStart = 0;
  #windowLength = 0;
  #windowAddress = 0n;
  #window: Uint8Array | undefined;
  #moved = 0;

  /** Splices from `source` (a pipe) into `stagingFd` of `size` bytes (neither closed here). */
  constructor(source: FdSource, stagingFd: number, size: number) {
    this.#source = source;
    this.#fd = stagingFd;
    this.#size = size;
  }

  /** A stager when `source` reads from a pipe (splice needs one end to be a pipe). */
  static tryCreate(source: unknown, stagingFd: number, size: number): SpliceStager | undefined {
    if (!(source instanceof FdSource) || size <= 0) return undefined;
    try {
      if ((fstat(source.fd).mode & S_IFMT) !== S_IFIFO) return undefined;
    } catch {
      return undefined;
    }
    return new SpliceStager(source, stagingFd, size);
  }

  /** Splices up to `length` bytes (at most a piece) to `offset` and returns them as landed. */
  move(offset: number, length: number): Uint8Array {
    const wanted = Math.min(length, SPLICE_PIECE, this.#size - offset);
    if (wanted <= 0) return new Uint8Array(0);
    let n: number;
    try {
      n = this.#source.spliceTo(this.#fd, offset, wanted);
    } catch (error) {
      if (error instanceof StateStreamError) throw error;
      throw new StateStreamError(`writing the RAM disk state failed: ${error}`, { cause: error });
    }
    if (n < 0) {
      throw new StateStreamError("writing the RAM disk state failed: the state fd cannot splice");
    }
    this.#moved += n;
    if (n === 0) return new Uint8Array(0);
    return this.#landed(offset, n);
  }

  /** Bytes taken by {@linkcode move} so far. */
  get bytesMoved(): number {
    return this.#moved;
  }

  /** Nothing is in flight: every splice returned once its bytes were in place. */
  finish(): void {}

  /** Unmaps the checksum window. Idempotent. */
  close(): void {
    this.#unmap();
  }

  /** A view of `n` staged bytes at `offset`, through a window mapping that covers them. */
  #landed(offset: number, n: number): Uint8Array {
    const start = this.#windowStart;
    if (this.#window === undefined || offset < start || offset + n > start + this.#windowLength) {
      this.#unmap();
      const from = offset - (offset % PAGE);
      const length = Math.min(WINDOW_LENGTH + SPLICE_PIECE, this.#size - from);
      this.#windowAddress = mmap(length, PROT_READ, MAP_SHARED, this.#fd, from);
      this.#window = new Uint8Array(mapArrayBuffer(this.#windowAddress, length));
      this.#windowStart = from;
      this.#windowLength = length;
    }
    const at = offset - this.#windowStart;
    return this.#window!.subarray(at, at + n);
  }

  #unmap(): void {
    if (this.#window === undefined) return;
    this.#window = undefined;
    munmap(this.#windowAddress, this.#windowLength);
  }
}
