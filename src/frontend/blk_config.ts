/**
 * The virtio-blk configuration space as a driver reads it.
 *
 * @module
 */

import { BlkConfigOffset } from "../devices/blk/blk_spec.ts";

/** Bytes of `struct virtio_blk_config` a driver reads (through `write_zeroes_may_unmap`, padded). */
export const BLK_CONFIG_READ_SIZE = 60;

/** The fields of the configuration space a driver uses. */
export interface BlkConfig {
  /** Disk size in 512-byte sectors. */
  capacity: number;
  /** Largest data segment in bytes (0 when not given). */
  sizeMax: number;
  /** Most data segments per request. */
  segMax: number;
  /** Logical block size in bytes. */
  blkSize: number;
  /** Writeback cache on (FLUSH needed for durability). */
  writeback: boolean;
  /** Number of request queues. */
  numQueues: number;
  /** Largest discard in sectors. */
  maxDiscardSectors: number;
  /** Most discard segments per request. */
  maxDiscardSeg: number;
  /** Largest write-zeroes in sectors. */
  maxWriteZeroesSectors: number;
  /** Most write-zeroes segments per request. */
  maxWriteZeroesSeg: number;
  /** Write-zeroes may deallocate. */
  writeZeroesMayUnmap: boolean;
}

/** Decodes a configuration space read from offset 0; RangeError when it is too short. */
export function decodeBlkConfig(bytes: Uint8Array): BlkConfig {
  if (bytes.byteLength < BLK_CONFIG_READ_SIZE) {
    throw new RangeError(
      `virtio-blk config of ${bytes.byteLength} bytes, expected ${BLK_CONFIG_READ_SIZE}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const o = BlkConfigOffset;
  return {
    capacity: Number(view.getBigUint64(o.capacity, true)),
    sizeMax: view.getUint32(o.sizeMax, true),
    segMax: view.getUint32(o.segMax, true),
    blkSize: view.getUint32(o.blkSize, true),
    writeback: view.getUint8(o.writeback) !== 0,
    numQueues: view.getUint16(o.numQueues, true),
    maxDiscardSectors: view.getUint32(o.maxDiscardSectors, true),
    maxDiscardSeg: view.getUint32(o.maxDiscardSeg, true),
    maxWriteZeroesSectors: view.getUint32(o.maxWriteZeroesSectors, true),
    maxWriteZeroesSeg: view.getUint32(o.maxWriteZeroesSeg, true),
    writeZeroesMayUnmap: view.getUint8(o.writeZeroesMayUnmap) !== 0,
  };
}
