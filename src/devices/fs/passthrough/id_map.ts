/**
 * A map keyed by FUSE's 64-bit ids (node ids, file handles), which the
 * protocol carries as u64 and the core as bigint. A lookup by bigint key
 * hashes the bigint's digits on every call; the ids vhostd hands out are
 * counters far below 2^53, so those are kept under their number instead,
 * and only an id from 2^53 up (a restored snapshot may hold any u64) under
 * the bigint itself. One Map holds both, so iteration keeps insertion order.
 *
 * @module
 */

/** Ids up to this are exact as numbers. */
const MAX_NUMBER_ID = BigInt(Number.MAX_SAFE_INTEGER);

function keyOf(id: bigint): number | bigint {
  return id <= MAX_NUMBER_ID ? Number(id) : id;
}

/** A Map from u64 ids to `V`, cheap to look up for ids below 2^53. */
export class IdMap<V> {
  readonly #entries = new Map<number | bigint, V>();

  /** Number of entries. */
  get size(): number {
    return this.#entries.size;
  }

  /** The value of `id`, if present. */
  get(id: bigint): V | undefined {
    return this.#entries.get(keyOf(id));
  }

  /** True when `id` is present. */
  has(id: bigint): boolean {
    return this.#entries.has(keyOf(id));
  }

  /** Sets the value of `id`. */
  set(id: bigint, value: V): void {
    this.#entries.set(keyOf(id), value);
  }

  /** Removes `id`; true when it was present. */
  delete(id: bigint): boolean {
    return this.#entries.delete(keyOf(id));
  }

  /** Removes every entry. */
  clear(): void {
    this.#entries.clear();
  }

  /** The values, in insertion order. */
  values(): IterableIterator<V> {
    return this.#entries.values();
  }
}
