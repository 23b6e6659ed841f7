/**
 * virtio-vsock as a vhostd device module.
 *
 * @module
 */

import type { DeviceModule } from "../device_module.ts";
import { createVsockHandler } from "./vsock_handler.ts";
import { describeVsockState } from "./vsock_state.ts";

/** `vhostd vsock`: host Unix sockets to guest vsock streams and back. */
export const vsockModule: DeviceModule = {
  kind: "vsock",
  summary: "connect guest vsock streams with host Unix sockets",
  run: async (args) => (await import("./vsock_command.ts")).runVsock(args),
  createQueueHandler: createVsockHandler,
  describeState: describeVsockState,
  descriptor: { type: "vsock", description: "vhostd virtio-vsock back-end" },
};
