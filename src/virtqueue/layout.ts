/**
 * Split virtqueue layout (virtio 1.2 §2.7): sizes, offsets, flags and
 * alignment of the descriptor table, the available ring and the used ring.
 * Every field is little-endian.
 *
 * @module
 */

/** Bytes per descriptor table entry: {addr u64, len u32, flags u16, next u16}. */
export const DESC_SIZE = 16;
/** Byte offset of `addr` inside a descriptor. */
export const DESC_ADDR_OFFSET = 0;
/** Byte offset of `len` inside a descriptor. */
export const DESC_LEN_OFFSET = 8;
/** Byte offset of `flags` inside a descriptor. */
export const DESC_FLAGS_OFFSET = 12;
/** Byte offset of `next` inside a descriptor. */
export const DESC_NEXT_OFFSET = 14;

/** Descriptor flag: the chain continues at `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device-writable (otherwise device-readable). */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer holds a table of descriptors (indirect descriptors). */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** Available ring flag set by the driver: the device need not interrupt it. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** Used ring flag set by the device: the driver need not kick it. */
export const VRING_USED_F_NO_NOTIFY = 1;

/** Required alignment of the descriptor table. */
export const DESC_TABLE_ALIGN = 16;
/** Required alignment of the available ring. */
export const AVAIL_RING_ALIGN = 2;
/** Required alignment of the used ring. */
export const USED_RING_ALIGN = 4;

/** Largest queue size a split virtqueue can have. */
export const MAX_QUEUE_SIZE = 32768;
/** Largest indirect table, in descriptors, that this implementation accepts. */
export const MAX_INDIRECT_DESCRIPTORS = 65536;

/** Byte offset of `flags` in the available ring. */
export const AVAIL_FLAGS_OFFSET = 0;
/** Byte offset of `idx` in the available ring. */
export const AVAIL_IDX_OFFSET = 2;
/** Byte offset of `ring[0]` in the available ring. */
export const AVAIL_RING_OFFSET = 4;
/** Bytes per available ring element (a u16 head index). */
export const AVAIL_ELEM_SIZE = 2;

/** Byte offset of `flags` in the used ring. */
export const USED_FLAGS_OFFSET = 0;
/** Byte offset of `idx` in the used ring. */
export const USED_IDX_OFFSET = 2;
/** Byte offset of `ring[0]` in the used ring. */
export const USED_RING_OFFSET = 4;
/** Bytes per used ring element: {id u32, len u32}. */
export const USED_ELEM_SIZE = 8;

/** True when `num` is a legal split queue size: a power of two in 1..32768. */
export function isValidQueueSize(num: number): boolean {
  return Number.isInteger(num) && num >= 1 && num <= MAX_QUEUE_SIZE && (num & (num - 1)) === 0;
}

/** Bytes of a descriptor table with `num` entries. */
export function descTableSize(num: number): number {
  return DESC_SIZE * num;
}

/** Bytes of an available ring for `num` entries, `used_event` included. */
export function availRingSize(num: number): number {
  return AVAIL_RING_OFFSET + AVAIL_ELEM_SIZE * num + 2;
}

/** Bytes of a used ring for `num` entries, `avail_event` included. */
export function usedRingSize(num: number): number {
  return USED_RING_OFFSET + USED_ELEM_SIZE * num + 2;
}

/** Byte offset of `used_event` in the available ring of a queue with `num` entries. */
export function usedEventOffset(num: number): number {
  return AVAIL_RING_OFFSET + AVAIL_ELEM_SIZE * num;
}

/** Byte offset of `avail_event` in the used ring of a queue with `num` entries. */
export function availEventOffset(num: number): number {
  return USED_RING_OFFSET + USED_ELEM_SIZE * num;
}

/**
 * The event-index test of virtio §2.7.10: true when moving an index from
 * `oldIdx` to `newIdx` crossed `eventIdx` (all u16, wrapping).
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
