/**
 * virtio-fs as a vhostd device module.
 *
 * @module
 */

import type { DeviceModule } from "../device_module.ts";
import { createFsRequestHandler } from "./request_handler.ts";
import { describeFsState } from "./fs_state_view.ts";

/** `vhostd fs`: a host directory shared with the guest. */
export const fsModule: DeviceModule = {
  kind: "fs",
  summary: "share a directory as a virtio-fs device",
  run: async (args) => (await import("./fs_command.ts")).runFs(args),
  createQueueHandler: createFsRequestHandler,
  describeState: describeFsState,
  descriptor: { type: "fs", description: "vhostd virtio-fs back-end" },
};
