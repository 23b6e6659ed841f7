/**
 * A small seeded random generator for the fuzzer: the same seed gives the
 * same cases, so a failing seed printed by the test can be replayed.
 *
 * @module
 */

/** mulberry32: fast, 32-bit state, good enough to pick test cases. */
export class Random {
  #state: number;

  /** A generator whose whole sequence is determined by `seed`. */
  constructor(readonly seed: number) {
    this.#state = seed >>> 0 || 0x9e3779b9;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  /** `length` random bytes. */
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /**
   * A copy of `data` with a few mutations: flipped bits, bytes set to edge
   * values (0, 0xff, 0x80), and sometimes truncated or extended.
   */
  mutate(data: Uint8Array): Uint8Array {
    let out = data.slice();
    const edits = 1 + this.below(4);
    for (let e = 0; e < edits && out.length > 0; e++) {
      const at = this.below(out.length);
      switch (this.below(4)) {
        case 0:
          out[at] ^= 1 << this.below(8);
          break;
        case 1:
          out[at] = this.pick([0, 0xff, 0x80, 0x7f, 1]);
          break;
        case 2:
          out = out.slice(0, at);
          break;
        default: {
          const grown = new Uint8Array(out.length + 1 + this.below(16));
          grown.set(out);
          grown.set(this.bytes(grown.length - out.length), out.length);
          out = grown;
        }
      }
    }
    return out;
  }
}
