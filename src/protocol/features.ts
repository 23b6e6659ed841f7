/**
 * Feature bit numbers (not masks) and helpers over u64 feature masks.
 *
 * @module
 */

/**
 * vhost-user protocol feature bits (`VHOST_USER_PROTOCOL_F_*`), negotiated with
 * GET/SET_PROTOCOL_FEATURES. Bits 20 and up are not settled upstream and are
 * deliberately absent.
 */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/**
 * Virtio feature bits that the vhost-user back-end itself owns (device-specific
 * bits belong to each device).
 */
export const VirtioFeature = {
  /** VHOST_F_LOG_ALL: the back-end logs its writes to guest memory. */
  LOG_ALL: 26,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  /** VHOST_USER_F_PROTOCOL_FEATURES: GET/SET_PROTOCOL_FEATURES are available. */
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
} as const;

/** The mask with only bit `n` set. Throws RangeError unless 0 <= n < 64. */
export function bit(n: number): bigint {
  if (!Number.isInteger(n) || n < 0 || n > 63) {
    throw new RangeError(`feature bit ${n} is outside 0..63`);
  }
  return 1n << BigInt(n);
}

/** True when bit `n` is set in `mask`. */
export function hasBit(mask: bigint, n: number): boolean {
  return (mask & bit(n)) !== 0n;
}

/** The mask with every bit in `bits` set. */
export function maskOf(bits: readonly number[]): bigint {
  let mask = 0n;
  for (const n of bits) mask |= bit(n);
  return mask;
}

/**
 * Names of the bits set in `mask`, lowest bit first, looked up in `table`
 * (name → bit number); bits the table lacks appear as `"bit N"`.
 */
export function featureNames(mask: bigint, table: Record<string, number>): string[] {
  const nameOfBit = new Map<number, string>();
  for (const [name, n] of Object.entries(table)) {
    if (!nameOfBit.has(n)) nameOfBit.set(n, name);
  }
  const names: string[] = [];
  for (let n = 0; n < 64; n++) {
    if ((mask >> BigInt(n)) & 1n) names.push(nameOfBit.get(n) ?? `bit ${n}`);
  }
  return names;
}

/**
 * The ring features every vhostd device offers: version 1 split rings with
 * indirect descriptors and event idx. A device offers these plus its own bits.
 */
export const RING_FEATURES: bigint = maskOf([
  VirtioFeature.VERSION_1,
  VirtioFeature.RING_INDIRECT_DESC,
  VirtioFeature.RING_EVENT_IDX,
]);
