/**
 * vhost-user protocol: messages as pure bytes <-> typed values, with no I/O.
 *
 * @module
 */

export * from "./errors.ts";
export * from "./header.ts";
export * from "./requests.ts";
export * from "./features.ts";
export * from "./payloads.ts";
export * from "./message_spec.ts";
export * from "./validate.ts";
