/**
 * Finding the parts of a buffer that hold data, so that zero blocks of a RAM
 * disk are not sent (the reader leaves uncovered ranges zero).
 *
 * @module
 */

/**
 * True when every byte of `bytes` is zero. Compares 32-bit words when the
 * view is 4-byte aligned (about 5 GiB/s), bytes otherwise.
 */
export function isAllZero(bytes: Uint8Array): boolean {
  const words = bytes.byteOffset % 4 === 0 ? bytes.length >>> 2 : 0;
  if (words > 0) {
    const view = new Int32Array(bytes.buffer, bytes.byteOffset, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0) return false;
  }
  for (let i = words * 4; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * True when bytes [start, end) of `bytes` are zero; `words` is `bytes` as
 * 32-bit words when `bytes` is 4-byte aligned (undefined otherwise).
 * Allocates nothing: it runs once per 4 KiB block of a RAM disk.
 */
function rangeIsZero(
  bytes: Uint8Array,
  words: Int32Array | undefined,
  start: number,
  end: number,
): boolean {
  let at = start;
  if (words !== undefined) {
    // Bytes up to the first word boundary, then whole words, then the tail.
    for (; at < end && at % 4 !== 0; at++) if (bytes[at] !== 0) return false;
    const lastWord = end >>> 2;
    for (let w = at >>> 2; w < lastWord; w++) if (words[w] !== 0) return false;
    at = Math.max(at, lastWord * 4);
  }
  for (; at < end; at++) if (bytes[at] !== 0) return false;
  return true;
}

/**
 * Splits `bytes` into blocks of `blockSize` (the last may be shorter) and
 * writes the runs of consecutive non-zero blocks into `runs` as start/end
 * pairs (`runs[2k]` = start, `runs[2k+1]` = end, exclusive). Returns the
 * number of runs. `runs` is reused between calls to avoid garbage.
 */
export function findDataRuns(bytes: Uint8Array, blockSize: number, runs: number[]): number {
  const words = bytes.byteOffset % 4 === 0
    ? new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
    : undefined;
  let count = 0;
  let runStart = -1;
  for (let start = 0; start < bytes.length; start += blockSize) {
    const end = Math.min(start + blockSize, bytes.length);
    if (rangeIsZero(bytes, words, start, end)) {
      if (runStart >= 0) {
        runs[2 * count] = runStart;
        runs[2 * count + 1] = start;
        count++;
        runStart = -1;
      }
    } else if (runStart < 0) {
      runStart = start;
    }
  }
  if (runStart >= 0) {
    runs[2 * count] = runStart;
    runs[2 * count + 1] = bytes.length;
    count++;
  }
  return count;
}
