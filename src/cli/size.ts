/**
 * Human sizes on the command line: `4096`, `64K`, `64M`, `1G`, `1.5G`, with
 * an optional `iB`/`B` suffix (binary units, as qemu-img).
 *
 * @module
 */

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** Parses a size; returns undefined for anything that is not a non-negative whole byte count. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) return undefined;
  const bytes = Number(m[1]) * UNITS[m[2].toUpperCase()];
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Formats a byte count with the largest binary unit that divides it (64 MiB, 1 GiB, 1536 KiB). */
export function formatSize(bytes: number): string {
  for (
    const [unit, factor] of [["TiB", 2 ** 40], ["GiB", 2 ** 30], ["MiB", 2 ** 20], [
      "KiB",
      2 ** 10,
    ]] as const
  ) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor} ${unit}`;
  }
  return `${bytes} bytes`;
}
