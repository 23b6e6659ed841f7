/**
 * Maps a device kind to the factory of its data half. Imported by the queue
 * Worker; static imports keep every handler inside a `deno compile` binary.
 *
 * @module
 */

import type { QueueHandlerFactory } from "./device.ts";
import { createBlkRequestHandler } from "./blk/request_handler.ts";
import { createFsRequestHandler } from "./fs/request_handler.ts";

const FACTORIES: Record<string, QueueHandlerFactory> = {
  blk: createBlkRequestHandler,
  fs: createFsRequestHandler,
};

/** The handler factory for `kind`, or `undefined` for an unknown kind. */
export function queueHandlerFactory(kind: string): QueueHandlerFactory | undefined {
  return FACTORIES[kind];
}
