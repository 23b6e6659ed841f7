/**
 * Device-state migration: the versioned, sectioned, checksummed stream
 * format moved through SET_DEVICE_STATE_FD and stored in state files.
 *
 * @module
 */

export * from "./byte_stream.ts";
export * from "./errors.ts";
export * from "./fingerprint.ts";
export * from "./inspect.ts";
export * from "./metadata.ts";
export * from "./ram_disk_extents.ts";
export * from "./state_format.ts";
export * from "./state_header.ts";
export * from "./state_reader.ts";
export * from "./state_writer.ts";
export * from "./zero_runs.ts";
