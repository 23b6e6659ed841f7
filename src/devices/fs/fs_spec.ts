/**
 * virtio-fs facts from the virtio 1.2 specification (§5.11): the feature
 * bit, the queue layout and the configuration space.
 *
 * @module
 */

/** virtio-fs feature bit numbers. */
export const FsFeature = {
  /** A notification queue exists and `notify_buf_size` is valid (vhostd does not offer it). */
  NOTIFICATION: 0,
} as const;

/** Virtio device id of a file system device. */
export const FS_DEVICE_ID = 26;

/** Index of the high-priority queue (FORGET, BATCH_FORGET, INTERRUPT). */
export const HIPRIO_QUEUE = 0;
/** Index of the first request queue (no notification queue without NOTIFICATION). */
export const FIRST_REQUEST_QUEUE = 1;

/** Length of the `tag` field: UTF-8, NUL-padded, not NUL-terminated when 36 bytes long. */
export const FS_TAG_LENGTH = 36;
/** Most request queues vhostd serves. */
export const MAX_REQUEST_QUEUES = 64;

/** Byte offsets of the fields of `struct virtio_fs_config`. */
export const FsConfigOffset = {
  tag: 0,
  numRequestQueues: 36,
  /** Only with NOTIFICATION, which vhostd does not offer. */
  notifyBufSize: 40,
} as const;

/** Size of the configuration space without NOTIFICATION: tag and num_request_queues. */
export const FS_CONFIG_SIZE = 40;

/** Checks a tag: 1 to 36 bytes of UTF-8 without NUL. Returns the problem, if any. */
export function validateTag(tag: string): string | undefined {
  if (tag.length === 0) return "tag must not be empty";
  if (tag.includes("\0")) return "tag must not contain NUL";
  const length = new TextEncoder().encode(tag).length;
  if (length > FS_TAG_LENGTH) {
    return `tag must be at most ${FS_TAG_LENGTH} bytes of UTF-8, got ${length}`;
  }
  return undefined;
}

/** Encodes the configuration space (little-endian, FS_CONFIG_SIZE bytes). Throws RangeError for a bad tag. */
export function encodeFsConfig(tag: string, numRequestQueues: number): Uint8Array {
  const problem = validateTag(tag);
  if (problem) throw new RangeError(problem);
  const bytes = new Uint8Array(FS_CONFIG_SIZE);
  bytes.set(new TextEncoder().encode(tag), FsConfigOffset.tag);
  new DataView(bytes.buffer).setUint32(FsConfigOffset.numRequestQueues, numRequestQueues, true);
  return bytes;
}

/** Decoded configuration space (what a driver reads). */
export interface FsConfig {
  /** The mount tag. */
  tag: string;
  /** Number of request queues. */
  numRequestQueues: number;
}

/** Decodes a configuration space of at least FS_CONFIG_SIZE bytes; throws RangeError when shorter. */
export function decodeFsConfig(bytes: Uint8Array): FsConfig {
  if (bytes.byteLength < FS_CONFIG_SIZE) {
    throw new RangeError(`virtio-fs config is ${bytes.byteLength} bytes, need ${FS_CONFIG_SIZE}`);
  }
  const raw = bytes.subarray(FsConfigOffset.tag, FsConfigOffset.tag + FS_TAG_LENGTH);
  const nul = raw.indexOf(0);
  const tag = new TextDecoder().decode(nul < 0 ? raw : raw.subarray(0, nul));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { tag, numRequestQueues: view.getUint32(FsConfigOffset.numRequestQueues, true) };
}
