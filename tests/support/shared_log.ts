/**
 * A dirty-page log for integration tests: a memfd the front-end shares with
 * SET_LOG_BASE, mapped here to read (and clear) the bits the back-end sets.
 *
 * @module
 */

import {
  closeQuietly,
  ftruncate,
  MAP_SHARED,
  mapArrayBuffer,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "../../ffi/mod.ts";
import type { VhostUserClient } from "../../src/frontend/mod.ts";

/** A dirty log in a memfd, mapped here at `offset` as the back-end will map it. */
export class SharedLog {
  /** The memfd. */
  readonly fd: number;
  /** The bitmap, one bit per 4 KiB guest page. */
  readonly bits: Uint8Array;
  readonly #address: bigint;
  readonly #length: number;

  /** A zeroed log of `size` bytes at `offset` of a new memfd. */
  constructor(readonly size: number, readonly offset: number) {
    this.#length = offset + size;
    this.fd = memfdCreate("vhostd-test-dirty-log");
    try {
      ftruncate(this.fd, this.#length);
      this.#address = mmap(this.#length, PROT_READ | PROT_WRITE, MAP_SHARED, this.fd, 0);
    } catch (e) {
      closeQuietly(this.fd);
      throw e;
    }
    this.bits = new Uint8Array(mapArrayBuffer(this.#address + BigInt(offset), size));
  }

  /** Shares it with the back-end. */
  share(client: VhostUserClient): void {
    client.setLogBase({ mmapSize: BigInt(this.size), mmapOffset: BigInt(this.offset) }, this.fd);
  }

  /** Page numbers whose bit is set, ascending. */
  markedPages(): number[] {
    const pages: number[] = [];
    this.bits.forEach((byte, i) => {
      for (let b = 0; b < 8; b++) if (byte & (1 << b)) pages.push(i * 8 + b);
    });
    return pages;
  }

  /** `using` support: {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Unmaps and closes the log. */
  close(): void {
    munmap(this.#address, this.#length);
    closeQuietly(this.fd);
  }
}
