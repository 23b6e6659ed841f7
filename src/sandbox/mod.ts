/**
 * The virtio-fs daemon's sandbox (`vhostd fs --sandbox`).
 *
 * @module
 */

export * from "./capabilities.ts";
export * from "./daemon_stage.ts";
export * from "./enter_sandbox.ts";
export * from "./launcher.ts";
export * from "./namespace_root.ts";
export * from "./sandbox_mode.ts";
export * from "./seccomp_filter.ts";
export * from "./stage_channel.ts";
