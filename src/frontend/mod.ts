/**
 * A vhost-user front-end written in TypeScript: connects to a back-end
 * socket, negotiates, shares memfd guest memory and drives virtqueues as a
 * virtio driver. Used by the integration tests, the benchmark and the
 * `state save/load` commands.
 *
 * @module
 */

export * from "./errors.ts";
export * from "./vhost_user_client.ts";
export * from "./shared_memory.ts";
export * from "./buffer_pool.ts";
export * from "./driver_ring.ts";
export * from "./device_session.ts";
export * from "./blk_config.ts";
export * from "./blk_requests.ts";
export * from "./blk_driver.ts";
export * from "./device_state_client.ts";
export * from "./fs_driver.ts";
