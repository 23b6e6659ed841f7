/**
 * File I/O engines for the devices' data halves: the interface, the io_uring
 * engine, the synchronous fallback, and how to pick one.
 *
 * @module
 */

export * from "./file_io_engine.ts";
export * from "./sync_engine.ts";
export * from "./uring_engine.ts";
export * from "./open_engine.ts";
