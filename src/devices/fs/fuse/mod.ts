/**
 * The FUSE kernel ABI (Linux 6.1, protocol 7.37) as pure codecs for a
 * virtio-fs back-end: constants, struct layouts, request decoders and reply
 * encoders, plus the driver-side request encoders and reply decoders that
 * tests and front-ends use. No I/O.
 *
 * @module
 */

export * from "./fuse_abi.ts";
export * from "./fuse_errors.ts";
export * from "./fuse_struct.ts";
export * from "./fuse_layouts.ts";
export * from "./fuse_names.ts";
export * from "./fuse_request.ts";
export * from "./fuse_extensions.ts";
export * from "./fuse_reply.ts";
export * from "./fuse_request_encode.ts";
export * from "./fuse_reply_decode.ts";
