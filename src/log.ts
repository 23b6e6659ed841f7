/**
 * Levelled logging to stderr, shared by the main thread and the queue workers.
 *
 * Lines look like `vhostd[1234] warn: message` so that several back-ends in
 * one terminal (or one CI log) can be told apart.
 *
 * @module
 */

/** Log levels, most severe first. */
export type LogLevel = "error" | "warn" | "info" | "debug";

const LEVEL_RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

let threshold: number = LEVEL_RANK.info;
let tag = `vhostd[${Deno.pid}]`;
const encoder = new TextEncoder();

/** True when `value` names a log level. */
export function isLogLevel(value: string): value is LogLevel {
  return value in LEVEL_RANK;
}

/** Sets the most verbose level that is still printed. */
export function setLogLevel(level: LogLevel): void {
  threshold = LEVEL_RANK[level];
}

/** The current level (passed on to Workers so they log alike). */
export function logLevel(): LogLevel {
  return (Object.keys(LEVEL_RANK) as LogLevel[])[threshold];
}

/** Sets the prefix of every line (Workers add their name). */
export function setLogTag(newTag: string): void {
  tag = newTag;
}

/** True when messages at `level` are printed; guard costly debug formatting with it. */
export function logEnabled(level: LogLevel): boolean {
  return LEVEL_RANK[level] <= threshold;
}

function emit(level: LogLevel, message: string): void {
  if (LEVEL_RANK[level] > threshold) return;
  try {
    Deno.stderr.writeSync(encoder.encode(`${tag} ${level}: ${message}\n`));
  } catch {
    // stderr closed: nothing sensible left to do with a log line.
  }
}

/** The logger. */
export const log = {
  /** Something failed and was not recovered. */
  error: (message: string): void => emit("error", message),
  /** Something went wrong and was handled, or the user should know. */
  warn: (message: string): void => emit("warn", message),
  /** Lifecycle events: listening, connected, disconnected. */
  info: (message: string): void => emit("info", message),
  /** Per-message tracing. */
  debug: (message: string): void => emit("debug", message),
};
