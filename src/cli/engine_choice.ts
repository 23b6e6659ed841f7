/**
 * Which file I/O engine a device's queue Workers open (`--aio`), decided
 * once on the main thread, and the log lines that say why.
 *
 * @module
 */

import type { FileIoEngineKind } from "../io/file_io_engine.ts";
import { probeIoUring } from "../io/open_engine.ts";
import { log } from "../log.ts";
import { UsageError } from "./usage_error.ts";

/** The engine chosen for the queue Workers, and why io_uring was not, if it was not. */
export interface EngineChoice {
  /** Engine every Worker opens. */
  kind: FileIoEngineKind;
  /** Set when io_uring was the default but does not work here. */
  fallbackReason?: string;
  /** Set when the default went to sync because the image lives in memory. */
  inMemory?: boolean;
}

/**
 * Decides the engine on the main thread: `requested` when given (io_uring
 * that does not work is a UsageError: exit 2 with the reason). Otherwise
 * sync for an image that lives in memory (`inMemory`: a RAM disk, tmpfs),
 * where a read is a memory copy and io_uring hands most of them to kernel
 * worker threads (measured 10x slower at depth 1, 2x at depth 32 on
 * tmpfs), and io_uring when `probe` (probeIoUring) finds it works, else sync.
 */
export function chooseEngine(
  requested: FileIoEngineKind | undefined,
  probe: () => string | undefined = probeIoUring,
  inMemory = false,
): EngineChoice {
  if (requested === "sync") return { kind: "sync" };
  if (requested === undefined && inMemory) return { kind: "sync", inMemory: true };
  const reason = probe();
  if (reason === undefined) return { kind: "io_uring" };
  if (requested === "io_uring") {
    throw new UsageError(`--aio io_uring: io_uring is not usable here: ${reason}`);
  }
  return { kind: "sync", fallbackReason: reason };
}

/**
 * Logs why the engine is not io_uring, if it is not: once, at start-up.
 * `what` names the data ("the disk", "the shared directory").
 */
export function logEngineChoice(choice: EngineChoice, what: string): void {
  if (choice.fallbackReason !== undefined) {
    log.warn(`io_uring is not usable here (${choice.fallbackReason}); using the sync engine`);
  }
  if (choice.inMemory) {
    log.info(`${what} lives in memory: using the sync engine (--aio io_uring to override)`);
  }
}
