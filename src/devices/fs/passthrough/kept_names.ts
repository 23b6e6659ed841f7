/**
 * Copies of entry names that outlive their request (an inode's recorded
 * location): the name the request decoder hands over is a view of a buffer
 * the next request overwrites. A `slice()` of it is a new ArrayBuffer each
 * time, ~0.5 µs in Deno 2.9.6 against ~0.09 µs for a view of a shared slab
 * (a loop of 14-byte names), on every new inode a LOOKUP, CREATE or
 * READDIRPLUS adopts. Slabs are small: a slab that one surviving name
 * keeps alive while the rest of its names are gone costs 1 KiB at worst
 * (about an inode's own share of memory), and a new slab is needed only
 * every few dozen names.
 *
 * @module
 */

/** Bytes per slab: a few dozen typical names. */
const SLAB_BYTES = 1024;
/** Names longer than this get an array of their own (no entry name is: NAME_MAX is 255). */
const LONGEST_SHARED = 256;

/** Hands out kept copies of names, packed into shared slabs; one per isolate is enough. */
export class KeptNames {
  #slab = new Uint8Array(SLAB_BYTES);
  #used = 0;

  /** A copy of `name` that no later request changes (a view of a slab, not of `name`). */
  keep(name: Uint8Array): Uint8Array {
    const length = name.byteLength;
    if (length > LONGEST_SHARED) return name.slice();
    if (this.#used + length > SLAB_BYTES) {
      this.#slab = new Uint8Array(SLAB_BYTES);
      this.#used = 0;
    }
    const copy = this.#slab.subarray(this.#used, this.#used + length);
    copy.set(name);
    this.#used += length;
    return copy;
  }
}

/** This isolate's slabs (every Worker has its own module instance). */
const keptNames = new KeptNames();

/** {@linkcode KeptNames.keep} on this isolate's slabs. */
export function keepName(name: Uint8Array): Uint8Array {
  return keptNames.keep(name);
}
