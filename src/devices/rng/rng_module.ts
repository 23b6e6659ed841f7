/**
 * virtio-rng as a vhostd device module.
 *
 * @module
 */

import type { DeviceModule } from "../device_module.ts";
import { createRngRequestHandler } from "./rng_handler.ts";
import { describeRngState } from "./rng_state.ts";

/** `vhostd rng`: entropy for the guest's /dev/hwrng. */
export const rngModule: DeviceModule = {
  kind: "rng",
  summary: "serve a virtio-rng entropy device",
  run: async (args) => (await import("./rng_command.ts")).runRng(args),
  createQueueHandler: createRngRequestHandler,
  describeState: describeRngState,
  descriptor: { type: "rng", description: "vhostd virtio-rng back-end" },
};
