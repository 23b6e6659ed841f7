/**
 * Transfer progress for the `vhostd state` tools: `label: N MiB (R MiB/s)`,
 * redrawn in place on a terminal, and only once a transfer has run for a
 * second (short transfers stay quiet; scripts, whose stderr is no terminal,
 * get nothing).
 *
 * @module
 */

/** Where progress goes and what time it is (replaceable in tests). */
export interface ProgressOutput {
  /** True when the output is a terminal. */
  isTerminal: boolean;
  /** Writes text as is. */
  write(text: string): void;
  /** Milliseconds, monotonic. */
  now(): number;
}

const encoder = new TextEncoder();

/** stderr and the performance clock. */
export const STDERR_PROGRESS: ProgressOutput = {
  isTerminal: Deno.stderr.isTerminal(),
  write: (text) => Deno.stderr.writeSync(encoder.encode(text)),
  now: () => performance.now(),
};

/** Delay before the first line, and the shortest interval between redraws. */
const FIRST_DRAW_MS = 1000;
const REDRAW_MS = 200;

/** Progress of one transfer. */
export class Progress {
  readonly #label: string;
  readonly #out: ProgressOutput;
  readonly #started: number;
  #lastDraw = -Infinity;
  #drawn = false;

  /** Progress labelled `label` ("saving"), shown on `out`. */
  constructor(label: string, out: ProgressOutput = STDERR_PROGRESS) {
    this.#label = label;
    this.#out = out;
    this.#started = out.now();
  }

  /** Reports `bytes` moved so far. */
  update(bytes: number): void {
    if (!this.#out.isTerminal) return;
    const now = this.#out.now();
    if (now - this.#started < FIRST_DRAW_MS || now - this.#lastDraw < REDRAW_MS) return;
    this.#lastDraw = now;
    this.#drawn = true;
    const mib = bytes / 2 ** 20;
    const rate = mib / ((now - this.#started) / 1000);
    this.#out.write(`\r${this.#label}: ${mib.toFixed(1)} MiB (${rate.toFixed(0)} MiB/s)  `);
  }

  /** Ends the progress line, if one was drawn. */
  done(): void {
    if (this.#drawn) this.#out.write("\n");
  }
}
