/**
 * The 12-byte vhost-user message header and whole-message framing.
 *
 * Layout (native = little-endian on x86-64): `request` u32, `flags` u32,
 * `size` u32 (payload length), then `size` payload bytes.
 *
 * @module
 */

import { checkU32, viewOf } from "./bytes.ts";
import { ProtocolError } from "./errors.ts";

/** Length of the message header in bytes. */
export const HEADER_SIZE = 12;
/** The only protocol version, carried in flags bits 0-1. */
export const VHOST_USER_VERSION = 0x1;
/** Flags bits that hold the version. */
export const FLAG_VERSION_MASK = 0x3;
/** Flags bit 2: set on every reply from the back-end. */
export const FLAG_REPLY = 0x4;
/** Flags bit 3: the front-end asks for a REPLY_ACK answer. */
export const FLAG_NEED_REPLY = 0x8;

/**
 * Largest payload a message may carry. The biggest legal request payloads are
 * far smaller (config: 12 + 256 bytes; memory table: 8 + 8 * 32 = 264 bytes),
 * so anything above this bound is refused before it is read into memory.
 */
export const MAX_PAYLOAD_SIZE = 4096;

/** A decoded message header. */
export interface MessageHeader {
  /** Request number (see `FrontendRequest`). */
  request: number;
  /** Version and reply bits (see the `FLAG_*` constants). */
  flags: number;
  /** Length of the payload that follows the header, in bytes. */
  size: number;
}

/**
 * Decodes the header from the first 12 bytes of `bytes` (extra bytes are
 * ignored). Throws ProtocolError when fewer than 12 bytes are given.
 */
export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.byteLength < HEADER_SIZE) {
    throw new ProtocolError(
      `message header is ${bytes.byteLength} bytes, expected ${HEADER_SIZE}`,
    );
  }
  const view = viewOf(bytes);
  return {
    request: view.getUint32(0, true),
    flags: view.getUint32(4, true),
    size: view.getUint32(8, true),
  };
}

/**
 * Builds a whole message, header followed by `payload`, in one buffer so it can
 * go out in a single `sendmsg` together with its fds. Throws RangeError when a
 * field does not fit its u32 or the payload exceeds MAX_PAYLOAD_SIZE.
 */
export function encodeMessage(
  request: number,
  flags: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  checkU32("request", request);
  checkU32("flags", flags);
  if (payload.byteLength > MAX_PAYLOAD_SIZE) {
    throw new RangeError(
      `payload of ${payload.byteLength} bytes exceeds the ${MAX_PAYLOAD_SIZE}-byte limit`,
    );
  }
  const message = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const view = viewOf(message);
  view.setUint32(0, request, true);
  view.setUint32(4, flags, true);
  view.setUint32(8, payload.byteLength, true);
  message.set(payload, HEADER_SIZE);
  return message;
}

/** The flags every back-end reply carries: version 1 plus REPLY (0x5). */
export function replyFlags(): number {
  return VHOST_USER_VERSION | FLAG_REPLY;
}

/** Builds a reply to `request` with the given payload and reply flags. */
export function encodeReply(request: number, payload?: Uint8Array): Uint8Array {
  return encodeMessage(request, replyFlags(), payload);
}

/** The version number held in `flags` bits 0-1. */
export function flagsVersion(flags: number): number {
  return flags & FLAG_VERSION_MASK;
}

/** True when `flags` has the REPLY bit. */
export function isReply(flags: number): boolean {
  return (flags & FLAG_REPLY) !== 0;
}

/** True when `flags` has the NEED_REPLY bit. */
export function needsReply(flags: number): boolean {
  return (flags & FLAG_NEED_REPLY) !== 0;
}
