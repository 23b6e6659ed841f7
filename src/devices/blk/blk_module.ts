/**
 * virtio-blk as a vhostd device module.
 *
 * @module
 */

import type { DeviceModule } from "../device_module.ts";
import { createBlkRequestHandler } from "./request_handler.ts";

/** `vhostd blk`: a disk image or a RAM disk. */
export const blkModule: DeviceModule = {
  kind: "blk",
  summary: "serve a virtio-blk disk",
  run: async (args) => (await import("./blk_command.ts")).runBlk(args),
  createQueueHandler: createBlkRequestHandler,
  descriptor: { type: "block", description: "vhostd virtio-blk back-end" },
};
