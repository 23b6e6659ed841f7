/**
 * virtio-blk facts from the virtio 1.2 specification (§5.2): feature bits,
 * request types, status codes and the configuration-space layout.
 *
 * @module
 */

/** virtio-blk feature bit numbers. */
export const BlkFeature = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
} as const;

/** Request types (`type` field of the request header). */
export const BlkRequestType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  DISCARD: 11,
  WRITE_ZEROES: 13,
} as const;

/** Status byte values written at the end of each request. */
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

/** Size of the request header {type u32, reserved u32, sector u64}. */
export const REQUEST_HEADER_SIZE = 16;
/** Size of one discard/write-zeroes segment {sector u64, num_sectors u32, flags u32}. */
export const DISCARD_SEGMENT_SIZE = 16;
/** Flag bit in a write-zeroes segment: the device may unmap (deallocate) the range. */
export const WRITE_ZEROES_FLAG_UNMAP = 1;
/** Length of the GET_ID answer. */
export const DEVICE_ID_LENGTH = 20;
/** The unit of `sector` fields, whatever the logical block size. */
export const SECTOR_SIZE = 512;

/** Byte offsets of the fields of `struct virtio_blk_config`. */
export const BlkConfigOffset = {
  capacity: 0,
  sizeMax: 8,
  segMax: 12,
  geometry: 16,
  blkSize: 20,
  physicalBlockExp: 24,
  alignmentOffset: 25,
  minIoSize: 26,
  optIoSize: 28,
  writeback: 32,
  numQueues: 34,
  maxDiscardSectors: 36,
  maxDiscardSeg: 40,
  discardSectorAlignment: 44,
  maxWriteZeroesSectors: 48,
  maxWriteZeroesSeg: 52,
  writeZeroesMayUnmap: 56,
} as const;

/** Size of `struct virtio_blk_config` including the zoned characteristics (Linux 6.x, QEMU 10). */
export const BLK_CONFIG_SIZE = 96;

/** The values vhostd puts in the configuration space. */
export interface BlkConfigValues {
  /** Disk size in 512-byte sectors. */
  capacitySectors: number;
  /** Largest number of data segments in one request. */
  segMax: number;
  /** Logical block size in bytes. */
  blkSize: number;
  /** Writeback cache on (1) or write-through (0). */
  writeback: number;
  /** Number of request queues. */
  numQueues: number;
  /** Largest discard/write-zeroes request in sectors. */
  maxDiscardSectors: number;
  /** Largest number of segments in one discard/write-zeroes request. */
  maxDiscardSeg: number;
}

/** Encodes a configuration space (little-endian, BLK_CONFIG_SIZE bytes). */
export function encodeBlkConfig(values: BlkConfigValues): Uint8Array {
  const bytes = new Uint8Array(BLK_CONFIG_SIZE);
  const view = new DataView(bytes.buffer);
  const o = BlkConfigOffset;
  view.setBigUint64(o.capacity, BigInt(values.capacitySectors), true);
  view.setUint32(o.segMax, values.segMax, true);
  view.setUint32(o.blkSize, values.blkSize, true);
  view.setUint16(o.minIoSize, 1, true);
  view.setUint8(o.writeback, values.writeback);
  view.setUint16(o.numQueues, values.numQueues, true);
  view.setUint32(o.maxDiscardSectors, values.maxDiscardSectors, true);
  view.setUint32(o.maxDiscardSeg, values.maxDiscardSeg, true);
  view.setUint32(o.discardSectorAlignment, values.blkSize / SECTOR_SIZE, true);
  view.setUint32(o.maxWriteZeroesSectors, values.maxDiscardSectors, true);
  view.setUint32(o.maxWriteZeroesSeg, values.maxDiscardSeg, true);
  view.setUint8(o.writeZeroesMayUnmap, 1);
  return bytes;
}
