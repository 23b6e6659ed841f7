/**
 * virtio-vsock facts from the virtio 1.2 specification (§5.10) and Linux's
 * include/uapi/linux/virtio_vsock.h: queues, the packet header
 * (`struct virtio_vsock_hdr`, 44 bytes little-endian), operations, shutdown
 * flags and the configuration space; plus the header codec.
 *
 * @module
 */

/** Queue indexes the back-end serves. The event queue (2) stays in QEMU. */
export const VsockQueue = { RX: 0, TX: 1 } as const;

/** Number of virtqueues a vhost-user vsock back-end serves (QEMU keeps the event queue). */
export const VSOCK_BACKEND_QUEUES = 2;

/** The host's context id (VMADDR_CID_HOST). */
export const HOST_CID = 2;

/** Smallest guest CID a guest may have (0-2 are reserved). */
export const MIN_GUEST_CID = 3;
/** Largest guest CID: CIDs are 32-bit in practice and 0xffffffff is VMADDR_CID_ANY. */
export const MAX_GUEST_CID = 0xffff_fffe;

/** virtio-vsock feature bit numbers. */
export const VsockFeature = { STREAM: 0, SEQPACKET: 1 } as const;

/** `type` field: socket types. */
export const VsockType = { STREAM: 1, SEQPACKET: 2 } as const;

/** `op` field: packet operations. */
export const VsockOp = {
  INVALID: 0,
  REQUEST: 1,
  RESPONSE: 2,
  RST: 3,
  SHUTDOWN: 4,
  RW: 5,
  CREDIT_UPDATE: 6,
  CREDIT_REQUEST: 7,
} as const;

/** Names of the operations, for logs. */
export const VSOCK_OP_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(VsockOp).map(([name, value]) => [value, name]),
);

/** `flags` of a SHUTDOWN packet: the sender will receive (RCV) or send (SEND) no more. */
export const VsockShutdown = { RCV: 1, SEND: 2, BOTH: 3 } as const;

/** Size of `struct virtio_vsock_hdr`. */
export const VSOCK_HEADER_SIZE = 44;

/** Size of `struct virtio_vsock_config` (one le64 guest_cid). */
export const VSOCK_CONFIG_SIZE = 8;

/** Largest payload of one packet Linux sends or expects (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const VSOCK_MAX_PACKET_PAYLOAD = 64 * 1024;

/** Byte offsets of the header fields. */
const Offset = {
  srcCid: 0,
  dstCid: 8,
  srcPort: 16,
  dstPort: 20,
  len: 24,
  type: 28,
  op: 30,
  flags: 32,
  bufAlloc: 36,
  fwdCnt: 40,
} as const;

/**
 * A decoded packet header. CIDs are numbers: a CID whose high 32 bits are
 * set decodes as -1, which matches no real CID.
 */
export interface VsockHeader {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  /** Payload bytes that follow the header. */
  len: number;
  type: number;
  op: number;
  flags: number;
  /** The sender's receive buffer size for this connection. */
  bufAlloc: number;
  /** Bytes the sender has consumed from its receive buffer (free-running u32). */
  fwdCnt: number;
}

function readCid(view: DataView, at: number): number {
  return view.getUint32(at + 4, true) === 0 ? view.getUint32(at, true) : -1;
}

/** Decodes the 44-byte header at the start of `bytes`; undefined when it is shorter. */
export function decodeVsockHeader(bytes: Uint8Array): VsockHeader | undefined {
  if (bytes.length < VSOCK_HEADER_SIZE) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, VSOCK_HEADER_SIZE);
  return {
    srcCid: readCid(view, Offset.srcCid),
    dstCid: readCid(view, Offset.dstCid),
    srcPort: view.getUint32(Offset.srcPort, true),
    dstPort: view.getUint32(Offset.dstPort, true),
    len: view.getUint32(Offset.len, true),
    type: view.getUint16(Offset.type, true),
    op: view.getUint16(Offset.op, true),
    flags: view.getUint32(Offset.flags, true),
    bufAlloc: view.getUint32(Offset.bufAlloc, true),
    fwdCnt: view.getUint32(Offset.fwdCnt, true),
  };
}

/**
 * Encodes `header` into the first 44 bytes of `out` (a new buffer when
 * absent) and returns them. CIDs must be 32-bit (the high word is written 0).
 */
export function encodeVsockHeader(
  header: VsockHeader,
  out: Uint8Array = new Uint8Array(VSOCK_HEADER_SIZE),
): Uint8Array {
  const view = new DataView(out.buffer, out.byteOffset, VSOCK_HEADER_SIZE);
  view.setUint32(Offset.srcCid, header.srcCid >>> 0, true);
  view.setUint32(Offset.srcCid + 4, 0, true);
  view.setUint32(Offset.dstCid, header.dstCid >>> 0, true);
  view.setUint32(Offset.dstCid + 4, 0, true);
  view.setUint32(Offset.srcPort, header.srcPort >>> 0, true);
  view.setUint32(Offset.dstPort, header.dstPort >>> 0, true);
  view.setUint32(Offset.len, header.len >>> 0, true);
  view.setUint16(Offset.type, header.type, true);
  view.setUint16(Offset.op, header.op, true);
  view.setUint32(Offset.flags, header.flags >>> 0, true);
  view.setUint32(Offset.bufAlloc, header.bufAlloc >>> 0, true);
  view.setUint32(Offset.fwdCnt, header.fwdCnt >>> 0, true);
  return out.subarray(0, VSOCK_HEADER_SIZE);
}

/** The configuration space: le64 guest_cid. */
export function encodeVsockConfig(guestCid: number): Uint8Array {
  const out = new Uint8Array(VSOCK_CONFIG_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(0, guestCid >>> 0, true);
  view.setUint32(4, 0, true);
  return out;
}
