/**
 * Split virtqueues: layout constants, descriptor chains, the device side
 * ({@linkcode SplitQueue}) and the driver side ({@linkcode DriverQueue}).
 *
 * @module
 */

export * from "./layout.ts";
export * from "./descriptor_chain.ts";
export * from "./split_queue.ts";
export * from "./driver_queue.ts";
