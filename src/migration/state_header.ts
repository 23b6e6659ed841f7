/**
 * The 80-byte header of a state stream: encoding and validation (layout in
 * `state_format.ts`).
 *
 * @module
 */

import { StateFormatError } from "./errors.ts";
import {
  FINGERPRINT_LENGTH,
  FORMAT_VERSION,
  HEADER_LENGTH,
  HeaderOffset,
  KIND_LENGTH,
  MAGIC,
  MAX_HEADER_LENGTH,
} from "./state_format.ts";

/** What the header of a state stream says. */
export interface StateHeader {
  /** Format version of the stream (1). */
  formatVersion: number;
  /** Device kind ("blk", "fs"). */
  kind: string;
  /** SHA-256 of the canonical JSON of the device identity (32 bytes). */
  fingerprint: Uint8Array;
  /** When the state was saved, in milliseconds since the epoch. */
  createdAt: number;
}

/** Length of the header prefix that says how long the whole header is. */
export const HEADER_PREFIX_LENGTH = 12;

const TWO_POW_32 = 0x1_0000_0000;

function isKindCharacter(code: number): boolean {
  return code > 0x20 && code < 0x7f;
}

/**
 * Checks a device kind before writing it: 1 to 16 printable ASCII characters
 * without spaces. Throws a RangeError otherwise (a programming error).
 */
export function checkKind(kind: string): void {
  const ok = kind.length >= 1 && kind.length <= KIND_LENGTH &&
    [...kind].every((c) => isKindCharacter(c.charCodeAt(0)));
  if (!ok) {
    throw new RangeError(
      `device kind must be 1 to ${KIND_LENGTH} printable ASCII characters, got ${
        JSON.stringify(kind)
      }`,
    );
  }
}

/** Encodes a version-1 header. `fingerprint` must be 32 bytes. */
export function encodeHeader(kind: string, fingerprint: Uint8Array, createdAt: number): Uint8Array {
  checkKind(kind);
  if (fingerprint.length !== FINGERPRINT_LENGTH) {
    throw new RangeError(
      `fingerprint must be ${FINGERPRINT_LENGTH} bytes, got ${fingerprint.length}`,
    );
  }
  if (!Number.isSafeInteger(createdAt) || createdAt < 0) {
    throw new RangeError(`createdAt must be a non-negative integer, got ${createdAt}`);
  }
  const bytes = new Uint8Array(HEADER_LENGTH);
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, HeaderOffset.MAGIC);
  view.setUint16(HeaderOffset.FORMAT_VERSION, FORMAT_VERSION, true);
  view.setUint16(HeaderOffset.HEADER_LENGTH, HEADER_LENGTH, true);
  view.setUint32(HeaderOffset.FLAGS, 0, true);
  for (let i = 0; i < kind.length; i++) bytes[HeaderOffset.KIND + i] = kind.charCodeAt(i);
  bytes.set(fingerprint, HeaderOffset.FINGERPRINT);
  view.setUint32(HeaderOffset.CREATED_AT, createdAt >>> 0, true);
  view.setUint32(HeaderOffset.CREATED_AT + 4, Math.floor(createdAt / TWO_POW_32), true);
  return bytes;
}

/**
 * Validates the first 12 bytes (magic, format version, header length) and
 * returns the full header length. Throws StateFormatError for a stream that
 * is not ours, too new, or has an impossible header length.
 */
export function checkHeaderPrefix(prefix: Uint8Array): number {
  for (let i = 0; i < MAGIC.length; i++) {
    if (prefix[HeaderOffset.MAGIC + i] !== MAGIC[i]) {
      throw new StateFormatError("not a vhostd state stream (bad magic)");
    }
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, HEADER_PREFIX_LENGTH);
  const version = view.getUint16(HeaderOffset.FORMAT_VERSION, true);
  if (version > FORMAT_VERSION) {
    throw new StateFormatError(
      `format version ${version} is newer than this vhostd (${FORMAT_VERSION})`,
    );
  }
  if (version === 0) throw new StateFormatError("format version 0 is invalid: stream is corrupt");
  const length = view.getUint16(HeaderOffset.HEADER_LENGTH, true);
  if (length < HEADER_LENGTH || length > MAX_HEADER_LENGTH) {
    throw new StateFormatError(
      `header length ${length} is outside ${HEADER_LENGTH}..${MAX_HEADER_LENGTH}: stream is corrupt`,
    );
  }
  return length;
}

function decodeKind(bytes: Uint8Array): string {
  let kind = "";
  let ended = false;
  for (const code of bytes) {
    if (code === 0) {
      ended = true;
    } else if (ended || !isKindCharacter(code)) {
      throw new StateFormatError("device kind field is not NUL-padded ASCII: stream is corrupt");
    } else {
      kind += String.fromCharCode(code);
    }
  }
  if (kind === "") throw new StateFormatError("device kind is empty: stream is corrupt");
  return kind;
}

/**
 * Decodes a header whose prefix passed {@linkcode checkHeaderPrefix}; `bytes`
 * holds at least its first 80 bytes. Throws StateFormatError for non-zero
 * flags or reserved bytes and a malformed kind.
 */
export function decodeHeader(bytes: Uint8Array): StateHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_LENGTH);
  const flags = view.getUint32(HeaderOffset.FLAGS, true);
  if (flags !== 0) {
    throw new StateFormatError(`unknown header flags 0x${flags.toString(16)}: refusing the stream`);
  }
  for (let i = HeaderOffset.RESERVED; i < HEADER_LENGTH; i++) {
    if (bytes[i] !== 0) throw new StateFormatError("reserved header bytes are not zero");
  }
  const low = view.getUint32(HeaderOffset.CREATED_AT, true);
  const high = view.getUint32(HeaderOffset.CREATED_AT + 4, true);
  const createdAt = high * TWO_POW_32 + low;
  if (!Number.isSafeInteger(createdAt)) {
    throw new StateFormatError("creation time is out of range: stream is corrupt");
  }
  return {
    formatVersion: view.getUint16(HeaderOffset.FORMAT_VERSION, true),
    kind: decodeKind(bytes.subarray(HeaderOffset.KIND, HeaderOffset.KIND + KIND_LENGTH)),
    fingerprint: bytes.slice(
      HeaderOffset.FINGERPRINT,
      HeaderOffset.FINGERPRINT + FINGERPRINT_LENGTH,
    ),
    createdAt,
  };
}
