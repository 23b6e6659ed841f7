/**
 * Aligned bounce buffers for direct I/O (`--cache none`): a guest buffer
 * whose address or length does not meet the backing's O_DIRECT alignment is
 * copied through one of these (in before a write, out after a read).
 * Buffers are anonymous mmap pages, so they are page aligned, which meets
 * every direct-I/O memory alignment; they are pooled and reused.
 *
 * @module
 */

import {
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  mapArrayBuffer,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "../../../ffi/mod.ts";

/** One page-aligned buffer of the pool. */
export interface BounceBuffer {
  /** Host address of the first byte (for iovecs). */
  readonly address: number;
  /** The bytes. */
  readonly bytes: Uint8Array;
}

interface MappedBuffer extends BounceBuffer {
  readonly mapping: bigint;
}

/** A pool of equally sized, page-aligned bounce buffers. */
export class BouncePool {
  /** Bytes of each buffer (a multiple of the page size). */
  readonly bufferSize: number;
  readonly #keep: number;
  readonly #free: MappedBuffer[] = [];
  #out = 0;
  #closed = false;

  /**
   * A pool of `bufferSize`-byte buffers that keeps at most `keep` unused
   * ones mapped (more are unmapped when returned).
   */
  constructor(bufferSize: number, keep: number) {
    if (!(bufferSize > 0 && bufferSize % 4096 === 0)) {
      throw new RangeError(`bounce buffer size ${bufferSize} is not a multiple of 4096`);
    }
    this.bufferSize = bufferSize;
    this.#keep = keep;
  }

  /** Buffers handed out and not returned yet. */
  get outstanding(): number {
    return this.#out;
  }

  /** A buffer (its contents are whatever the last user left). */
  acquire(): BounceBuffer {
    let buffer = this.#free.pop();
    if (buffer === undefined) {
      const mapping = mmap(
        this.bufferSize,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
        -1,
        0,
      );
      buffer = {
        mapping,
        address: Number(mapping),
        bytes: new Uint8Array(mapArrayBuffer(mapping, this.bufferSize)),
      };
    }
    this.#out++;
    return buffer;
  }

  /** Gives `buffer` back (it must come from this pool and not be in use any more). */
  release(buffer: BounceBuffer): void {
    this.#out--;
    const mapped = buffer as MappedBuffer;
    if (!this.#closed && this.#free.length < this.#keep) this.#free.push(mapped);
    else munmap(mapped.mapping, this.bufferSize);
  }

  /** Unmaps the unused buffers (buffers still out are unmapped when returned). */
  close(): void {
    this.#closed = true;
    for (const buffer of this.#free) munmap(buffer.mapping, this.bufferSize);
    this.#free.length = 0;
  }
}
