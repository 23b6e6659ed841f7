/**
 * The vhostd device-state stream format: constants and the section registry.
 *
 * The same byte stream travels through the pipe of SET_DEVICE_STATE_FD and is
 * stored in state files (`vhostd state save`). Every integer is little-endian.
 *
 * ```text
 * Header (HEADER_LENGTH = 80 bytes)
 *   0  magic            8 bytes  ASCII "VHOSTDST"
 *   8  format version   u16      FORMAT_VERSION (1); a reader refuses newer ones
 *  10  header length    u16      >= 80; a reader skips the bytes past 80 that a
 *                                newer minor revision may add
 *  12  flags            u32      0 (any other value is refused)
 *  16  device kind      16 bytes ASCII, NUL-padded ("blk", "fs")
 *  32  fingerprint      32 bytes SHA-256 of the canonical JSON of the device's
 *                                identity (fingerprint.ts); must match on load
 *  64  created at       u64      milliseconds since the epoch
 *  72  reserved         8 bytes  0 (any other value is refused)
 *
 * Sections, one after the other. Section header (8 bytes):
 *   0  type             u16      see SectionType
 *   2  flags            u16      bit 0 MANDATORY: a reader that does not know
 *                                the type refuses the stream; an optional
 *                                unknown section is skipped. Other bits: refused
 *   4  reserved         u32      0 (any other value is refused)
 * then the payload as chunks: u32 length + that many bytes, repeated; a chunk
 * of length 0 ends the section. A chunk is at most MAX_CHUNK_LENGTH (16 MiB)
 * long. A writer can stream a section of unknown size, a reader can skip one
 * without understanding it, and chunk boundaries carry no meaning.
 *
 * The last section is END (type 0xFFFF, MANDATORY) with exactly one chunk of
 * 8 bytes: u32 CRC-32 (IEEE, as zlib) of every byte of the stream before the
 * END section's header, then u32 the number of sections before END; then the
 * terminating 0-length chunk, then end of stream. Bytes after it are refused.
 *
 * METADATA (1, mandatory): one UTF-8 JSON document
 *   { "vhostd": version, "kind": string, "identity": object, "state": object }
 *   where identity is the fingerprinted configuration and state is
 *   device-specific.
 * RAM_DISK (2, mandatory): a sequence of extents, each a 16-byte record
 *   { offset u64, length u64 } followed by `length` bytes of data (records and
 *   data may straddle chunk boundaries). Extents are non-empty, in increasing
 *   offset order and do not overlap; ranges not covered are zero.
 * 3..0xFFFE: free for later devices (virtio-fs inode and handle tables).
 * ```
 *
 * @module
 */

/** First 8 bytes of every state stream. */
export const MAGIC: Uint8Array = new TextEncoder().encode("VHOSTDST");

/** The format version this vhostd writes and the newest it reads. */
export const FORMAT_VERSION = 1;

/** Length of the version-1 header; longer headers are accepted. */
export const HEADER_LENGTH = 80;

/**
 * Largest header length accepted. A newer minor revision may add fields, but
 * a header this long is far more likely to be a corrupt length field.
 */
export const MAX_HEADER_LENGTH = 4096;

/** Bytes of the device-kind field. */
export const KIND_LENGTH = 16;

/** Bytes of the configuration fingerprint (SHA-256). */
export const FINGERPRINT_LENGTH = 32;

/** Byte offsets of the header fields. */
export const HeaderOffset = {
  MAGIC: 0,
  FORMAT_VERSION: 8,
  HEADER_LENGTH: 10,
  FLAGS: 12,
  KIND: 16,
  FINGERPRINT: 32,
  CREATED_AT: 64,
  RESERVED: 72,
} as const;

/** Length of a section header. */
export const SECTION_HEADER_LENGTH = 8;

/** Length of a chunk's length prefix. */
export const CHUNK_PREFIX_LENGTH = 4;

/** Section flag bit 0: a reader that does not know the type must refuse the stream. */
export const SECTION_FLAG_MANDATORY = 0x1;

/** Every section flag bit this version defines. */
export const SECTION_FLAGS_KNOWN = SECTION_FLAG_MANDATORY;

/** Largest chunk (16 MiB); a longer length is corruption. */
export const MAX_CHUNK_LENGTH = 16 * 1024 * 1024;

/** Payload length of the END section's single chunk (crc u32 + section count u32). */
export const END_PAYLOAD_LENGTH = 8;

/** Length of a RAM_DISK extent record (offset u64 + length u64). */
export const EXTENT_RECORD_LENGTH = 16;

/** Largest METADATA document a reader accepts. */
export const METADATA_LIMIT = 1024 * 1024;

/**
 * Registry of section types. A new type is one line here; give it the next
 * free number and never reuse one.
 */
export const SectionType = {
  /** Mandatory: device identity and small device-specific state as JSON. */
  METADATA: 1,
  /** Mandatory: a RAM disk's contents as data extents. */
  RAM_DISK: 2,
  /** Mandatory, last: checksum and section count. */
  END: 0xffff,
} as const;

/** Name of a registered section type. */
export type SectionName = keyof typeof SectionType;

const NAMES = new Map<number, SectionName>(
  (Object.entries(SectionType) as [SectionName, number][]).map(([name, type]) => [type, name]),
);

/** Every registered section type. */
export const KNOWN_SECTION_TYPES: ReadonlySet<number> = new Set(NAMES.keys());

/** The registered name of `type` ("RAM_DISK"), or "type N" for an unregistered one. */
export function sectionName(type: number): string {
  return NAMES.get(type) ?? `type ${type}`;
}
