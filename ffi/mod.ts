/**
 * Typed synchronous wrappers around libc, through Deno FFI. Failures throw
 * {@linkcode SyscallError} with the errno read right after the call.
 *
 * @module
 */

export * from "./constants.ts";
export * from "./credentials.ts";
export * from "./errno.ts";
export * from "./events.ts";
export * from "./fd.ts";
export * from "./file_handle.ts";
export * from "./fs.ts";
export * from "./io_uring.ts";
export * from "./iovec.ts";
export * from "./memory.ts";
export * from "./random.ts";
export * from "./rlimit.ts";
export * from "./sandbox.ts";
export * from "./socket.ts";
export * from "./socket_options.ts";
export * from "./splice.ts";
export * from "./xattr.ts";
