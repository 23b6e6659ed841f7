/**
 * Files of random bytes for the benchmarks: reads of holes or of zeros
 * would be cheaper than reads of data.
 *
 * @module
 */

import { fillRandom } from "./bench_state.ts";

/** Writes `size` bytes of random data to `path` (created or truncated), 1 MiB at a time. */
export async function writeRandomFile(path: string, size: number): Promise<void> {
  const file = await Deno.open(path, { create: true, write: true, truncate: true });
  try {
    const chunk = new Uint8Array(1 << 20);
    for (let off = 0; off < size; off += chunk.length) {
      fillRandom(chunk);
      await file.write(chunk.subarray(0, Math.min(chunk.length, size - off)));
    }
  } finally {
    file.close();
  }
}
