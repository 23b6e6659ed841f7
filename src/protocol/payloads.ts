/**
 * Codecs for the fixed-layout request and reply payloads.
 *
 * Every `decode*` takes exactly the payload bytes (no header) and throws
 * ProtocolError naming the payload and the fault when the length or a value
 * is wrong; decoded byte arrays are copies, independent of the input buffer.
 * Every `encode*` throws RangeError when a caller-supplied value does not fit
 * its field: that is a bug in the caller, not bad peer input.
 *
 * @module
 */

import { checkU16, checkU32, checkU64, expectLength, hex, U64_MAX, viewOf } from "./bytes.ts";
import { ProtocolError } from "./errors.ts";

/** Vring state: SET_VRING_NUM/BASE/ENABLE/ENDIAN, GET_VRING_BASE and its reply, VRING_KICK. */
export interface VringState {
  /** Vring index. */
  index: number;
  /** Size, base index, enable flag or endianness, depending on the request. */
  num: number;
}

/** Payload of SET_VRING_ADDR. Ring addresses are front-end virtual addresses. */
export interface VringAddress {
  /** Vring index. */
  index: number;
  /** Only VRING_ADDR_F_LOG is defined. */
  flags: number;
  /** Address of the descriptor table. */
  descUserAddr: bigint;
  /** Address of the used ring. */
  usedUserAddr: bigint;
  /** Address of the available ring. */
  availUserAddr: bigint;
  /** Guest-physical address at which used-ring writes are logged. */
  logGuestAddr: bigint;
}

/** SET_VRING_ADDR flags bit 0: log writes to the used ring at `logGuestAddr`. */
export const VRING_ADDR_F_LOG = 0x1;

/** One memory region of SET_MEM_TABLE or ADD/REM_MEM_REG. */
export interface MemoryRegionDesc {
  /** Guest-physical address of the first byte. */
  guestAddr: bigint;
  /** Length in bytes (never 0). */
  size: bigint;
  /** Front-end virtual address of the first byte. */
  userAddr: bigint;
  /** Offset of the first byte within the region's fd. */
  mmapOffset: bigint;
}

/** Most regions one SET_MEM_TABLE message can carry. */
export const MAX_MEM_TABLE_REGIONS = 8;

/** Payload of SET_LOG_BASE: where the dirty-page bitmap sits in its fd. */
export interface LogArea {
  /** Length of the bitmap in bytes. */
  mmapSize: bigint;
  /** Offset of the bitmap within the fd. */
  mmapOffset: bigint;
}

/**
 * Payload of GET_INFLIGHT_FD (request and reply) and SET_INFLIGHT_FD: where
 * the inflight-tracking area sits in its fd and what it covers. In the
 * GET_INFLIGHT_FD request only `numQueues` and `queueSize` mean anything; a
 * reply with `mmapSize` 0 tells the front-end there is no area (and no fd).
 */
export interface InflightDesc {
  /** Length of the area in bytes. */
  mmapSize: bigint;
  /** Offset of the area within the fd (QEMU passes it to mmap: page-aligned). */
  mmapOffset: bigint;
  /** Number of virtqueues the area covers. */
  numQueues: number;
  /** Entries per virtqueue region (the queue size). */
  queueSize: number;
}

/** Payload of GET_CONFIG (request and reply) and SET_CONFIG. */
export interface ConfigPayload {
  /** Offset into the device configuration space. */
  offset: number;
  /** Number of configuration bytes; equals `data.byteLength`. */
  size: number;
  /** CONFIG_FLAG_WRITABLE or CONFIG_FLAG_MIGRATION. */
  flags: number;
  /** The configuration bytes (zeros in a GET_CONFIG request). */
  data: Uint8Array;
}

/** Size of the config payload before its data bytes. */
export const CONFIG_HEADER_SIZE = 12;
/** Largest device configuration space vhost-user carries. */
export const MAX_CONFIG_SIZE = 256;
/** Config flags value 0: a front-end write to writable fields. */
export const CONFIG_FLAG_WRITABLE = 0;
/** Config flags value 1: a write made by live migration (may touch read-only fields). */
export const CONFIG_FLAG_MIGRATION = 1;

/** Payload of SET_DEVICE_STATE_FD. */
export interface DeviceStateParams {
  /** DeviceStateDirection.SAVE or LOAD. */
  direction: number;
  /** DeviceStatePhase.STOPPED is the only phase defined. */
  phase: number;
}

/** Transfer direction: SAVE means the back-end writes its state, LOAD means it reads. */
export const DeviceStateDirection = { SAVE: 0, LOAD: 1 } as const;
/** Migration phase in which the transfer happens. */
export const DeviceStatePhase = { STOPPED: 0 } as const;

/** Bits 0-7 of a SET_VRING_KICK/CALL/ERR payload: the vring index. */
export const VRING_INDEX_MASK = 0xff;
/** Bit 8 of a SET_VRING_KICK/CALL/ERR payload: no fd is attached. */
export const VRING_NOFD_MASK = 0x100;

/** Decoded SET_VRING_KICK/CALL/ERR payload. */
export interface VringFdIndex {
  /** Vring index (0-255). */
  index: number;
  /** True when no fd travels with the message (poll instead of waiting for events). */
  noFd: boolean;
}

/** Size of a vring state payload. */
export const VRING_STATE_SIZE = 8;
/** Size of a vring address payload. */
export const VRING_ADDRESS_SIZE = 40;
/** Size of one memory region description. */
export const MEMORY_REGION_SIZE = 32;
/** Size of the SET_MEM_TABLE payload before its regions (nregions + padding). */
export const MEMORY_TABLE_HEADER_SIZE = 8;
/** Size of the largest SET_MEM_TABLE payload: 8 + 8 * 32. */
export const MAX_MEMORY_TABLE_SIZE = MEMORY_TABLE_HEADER_SIZE +
  MAX_MEM_TABLE_REGIONS * MEMORY_REGION_SIZE;
/** Size of an ADD/REM_MEM_REG payload: u64 padding + one region. */
export const SINGLE_REGION_SIZE = 8 + MEMORY_REGION_SIZE;
/** Size of a SET_LOG_BASE payload. */
export const LOG_AREA_SIZE = 16;
/**
 * Size of an inflight description: u64 mmap_size, u64 mmap_offset, u16
 * num_queues, u16 queue_size, and 4 bytes of padding (QEMU's
 * VhostUserInflight is not packed, so sizeof is 24).
 */
export const INFLIGHT_DESC_SIZE = 24;
/** Size of a SET_DEVICE_STATE_FD payload. */
export const DEVICE_STATE_PARAMS_SIZE = 8;
/** Size of a u64 payload. */
export const U64_SIZE = 8;

const TWO_TO_64 = U64_MAX + 1n;

/** Encodes a u64 payload (features, status, replies). */
export function encodeU64(v: bigint | number): Uint8Array {
  const out = new Uint8Array(U64_SIZE);
  viewOf(out).setBigUint64(0, checkU64("u64", v), true);
  return out;
}

/** Decodes a u64 payload. */
export function decodeU64(p: Uint8Array): bigint {
  expectLength("u64", p, U64_SIZE);
  return viewOf(p).getBigUint64(0, true);
}

/** Encodes a vring state. */
export function encodeVringState(s: VringState): Uint8Array {
  const out = new Uint8Array(VRING_STATE_SIZE);
  const view = viewOf(out);
  view.setUint32(0, checkU32("vring index", s.index), true);
  view.setUint32(4, checkU32("vring num", s.num), true);
  return out;
}

/** Decodes a vring state. */
export function decodeVringState(p: Uint8Array): VringState {
  expectLength("vring state", p, VRING_STATE_SIZE);
  const view = viewOf(p);
  return { index: view.getUint32(0, true), num: view.getUint32(4, true) };
}

/** Encodes a SET_VRING_ADDR payload. */
export function encodeVringAddress(a: VringAddress): Uint8Array {
  const out = new Uint8Array(VRING_ADDRESS_SIZE);
  const view = viewOf(out);
  view.setUint32(0, checkU32("vring index", a.index), true);
  view.setUint32(4, checkU32("vring flags", a.flags), true);
  view.setBigUint64(8, checkU64("descriptor address", a.descUserAddr), true);
  view.setBigUint64(16, checkU64("used address", a.usedUserAddr), true);
  view.setBigUint64(24, checkU64("available address", a.availUserAddr), true);
  view.setBigUint64(32, checkU64("log address", a.logGuestAddr), true);
  return out;
}

/** Decodes a SET_VRING_ADDR payload; refuses flag bits other than VRING_ADDR_F_LOG. */
export function decodeVringAddress(p: Uint8Array): VringAddress {
  expectLength("vring address", p, VRING_ADDRESS_SIZE);
  const view = viewOf(p);
  const flags = view.getUint32(4, true);
  if ((flags & ~VRING_ADDR_F_LOG) !== 0) {
    throw new ProtocolError(`vring address: unknown flags ${hex(flags)}`);
  }
  return {
    index: view.getUint32(0, true),
    flags,
    descUserAddr: view.getBigUint64(8, true),
    usedUserAddr: view.getBigUint64(16, true),
    availUserAddr: view.getBigUint64(24, true),
    logGuestAddr: view.getBigUint64(32, true),
  };
}

function writeRegion(view: DataView, offset: number, r: MemoryRegionDesc): void {
  view.setBigUint64(offset, checkU64("region guest address", r.guestAddr), true);
  view.setBigUint64(offset + 8, checkU64("region size", r.size), true);
  view.setBigUint64(offset + 16, checkU64("region user address", r.userAddr), true);
  view.setBigUint64(offset + 24, checkU64("region mmap offset", r.mmapOffset), true);
}

/** Reads one region and refuses an empty one or one whose ranges pass 2^64. */
function readRegion(what: string, view: DataView, offset: number): MemoryRegionDesc {
  const region = {
    guestAddr: view.getBigUint64(offset, true),
    size: view.getBigUint64(offset + 8, true),
    userAddr: view.getBigUint64(offset + 16, true),
    mmapOffset: view.getBigUint64(offset + 24, true),
  };
  if (region.size === 0n) throw new ProtocolError(`${what}: region has size 0`);
  const ranges = [
    ["guest", region.guestAddr],
    ["user", region.userAddr],
    ["mmap offset", region.mmapOffset],
  ] as const;
  for (const [name, start] of ranges) {
    if (start + region.size > TWO_TO_64) {
      throw new ProtocolError(
        `${what}: ${name} range ${hex(start)} + ${hex(region.size)} wraps past 2^64`,
      );
    }
  }
  return region;
}

function rangesOverlap(aStart: bigint, aSize: bigint, bStart: bigint, bSize: bigint): boolean {
  return aStart < bStart + bSize && bStart < aStart + aSize;
}

/**
 * Encodes a SET_MEM_TABLE payload: nregions u32, padding u32, then one
 * 32-byte description per region. Like QEMU it sends only the used slots
 * (8 + n * 32 bytes); the fds go alongside, one per region, in order.
 */
export function encodeMemoryTable(regions: readonly MemoryRegionDesc[]): Uint8Array {
  if (regions.length > MAX_MEM_TABLE_REGIONS) {
    throw new RangeError(
      `memory table: ${regions.length} regions, at most ${MAX_MEM_TABLE_REGIONS} fit`,
    );
  }
  const out = new Uint8Array(MEMORY_TABLE_HEADER_SIZE + regions.length * MEMORY_REGION_SIZE);
  const view = viewOf(out);
  view.setUint32(0, regions.length, true);
  regions.forEach((r, i) =>
    writeRegion(view, MEMORY_TABLE_HEADER_SIZE + i * MEMORY_REGION_SIZE, r)
  );
  return out;
}

/**
 * Decodes a SET_MEM_TABLE payload. Accepts both the compact form QEMU sends
 * (8 + n * 32 bytes) and the full 8-slot array (264 bytes); refuses more than
 * 8 regions, a payload too short for its nregions or longer than 264 bytes,
 * empty regions, ranges that wrap past 2^64, and regions whose guest or user
 * ranges overlap (the spec forbids both).
 */
export function decodeMemoryTable(p: Uint8Array): MemoryRegionDesc[] {
  if (p.byteLength < MEMORY_TABLE_HEADER_SIZE || p.byteLength > MAX_MEMORY_TABLE_SIZE) {
    throw new ProtocolError(
      `memory table: payload is ${p.byteLength} bytes, expected ${MEMORY_TABLE_HEADER_SIZE}..${MAX_MEMORY_TABLE_SIZE}`,
    );
  }
  const view = viewOf(p);
  const count = view.getUint32(0, true);
  if (count > MAX_MEM_TABLE_REGIONS) {
    throw new ProtocolError(
      `memory table: ${count} regions, at most ${MAX_MEM_TABLE_REGIONS} allowed`,
    );
  }
  const needed = MEMORY_TABLE_HEADER_SIZE + count * MEMORY_REGION_SIZE;
  if (p.byteLength < needed) {
    throw new ProtocolError(
      `memory table: payload is ${p.byteLength} bytes, ${count} regions need ${needed}`,
    );
  }
  const regions: MemoryRegionDesc[] = [];
  for (let i = 0; i < count; i++) {
    const r = readRegion(
      `memory table region ${i}`,
      view,
      MEMORY_TABLE_HEADER_SIZE + i * MEMORY_REGION_SIZE,
    );
    for (const [j, other] of regions.entries()) {
      if (rangesOverlap(r.guestAddr, r.size, other.guestAddr, other.size)) {
        throw new ProtocolError(`memory table: regions ${j} and ${i} overlap in guest memory`);
      }
      if (rangesOverlap(r.userAddr, r.size, other.userAddr, other.size)) {
        throw new ProtocolError(`memory table: regions ${j} and ${i} overlap in user addresses`);
      }
    }
    regions.push(r);
  }
  return regions;
}

/** Encodes an ADD_MEM_REG/REM_MEM_REG payload: u64 padding, then the region. */
export function encodeSingleRegion(r: MemoryRegionDesc): Uint8Array {
  const out = new Uint8Array(SINGLE_REGION_SIZE);
  writeRegion(viewOf(out), 8, r);
  return out;
}

/** Decodes an ADD_MEM_REG/REM_MEM_REG payload; refuses empty or wrapping regions. */
export function decodeSingleRegion(p: Uint8Array): MemoryRegionDesc {
  expectLength("single memory region", p, SINGLE_REGION_SIZE);
  return readRegion("single memory region", viewOf(p), 8);
}

/** Encodes a SET_LOG_BASE payload. */
export function encodeLogArea(l: LogArea): Uint8Array {
  const out = new Uint8Array(LOG_AREA_SIZE);
  const view = viewOf(out);
  view.setBigUint64(0, checkU64("log size", l.mmapSize), true);
  view.setBigUint64(8, checkU64("log offset", l.mmapOffset), true);
  return out;
}

/** Decodes a SET_LOG_BASE payload; refuses an empty log or one that wraps past 2^64. */
export function decodeLogArea(p: Uint8Array): LogArea {
  expectLength("log area", p, LOG_AREA_SIZE);
  const view = viewOf(p);
  const area = { mmapSize: view.getBigUint64(0, true), mmapOffset: view.getBigUint64(8, true) };
  if (area.mmapSize === 0n) throw new ProtocolError("log area: size is 0");
  if (area.mmapOffset + area.mmapSize > TWO_TO_64) {
    throw new ProtocolError(
      `log area: ${hex(area.mmapOffset)} + ${hex(area.mmapSize)} wraps past 2^64`,
    );
  }
  return area;
}

/** Encodes a GET/SET_INFLIGHT_FD payload (the padding is zero). */
export function encodeInflightDesc(d: InflightDesc): Uint8Array {
  const out = new Uint8Array(INFLIGHT_DESC_SIZE);
  const view = viewOf(out);
  view.setBigUint64(0, checkU64("inflight size", d.mmapSize), true);
  view.setBigUint64(8, checkU64("inflight offset", d.mmapOffset), true);
  view.setUint16(16, checkU16("inflight queue count", d.numQueues), true);
  view.setUint16(18, checkU16("inflight queue size", d.queueSize), true);
  return out;
}

/**
 * Decodes a GET/SET_INFLIGHT_FD payload (exactly 24 bytes; the padding is
 * ignored); refuses an area that wraps past 2^64. Whether the sizes suit the
 * device is the back-end's business.
 */
export function decodeInflightDesc(p: Uint8Array): InflightDesc {
  expectLength("inflight description", p, INFLIGHT_DESC_SIZE);
  const view = viewOf(p);
  const desc = {
    mmapSize: view.getBigUint64(0, true),
    mmapOffset: view.getBigUint64(8, true),
    numQueues: view.getUint16(16, true),
    queueSize: view.getUint16(18, true),
  };
  if (desc.mmapOffset + desc.mmapSize > TWO_TO_64) {
    throw new ProtocolError(
      `inflight description: ${hex(desc.mmapOffset)} + ${hex(desc.mmapSize)} wraps past 2^64`,
    );
  }
  return desc;
}

/**
 * Encodes a GET_CONFIG/SET_CONFIG payload. `size` must equal
 * `data.byteLength` and be at most MAX_CONFIG_SIZE. (A GET_CONFIG error reply
 * is an empty payload, not an encoded config.)
 */
export function encodeConfig(c: ConfigPayload): Uint8Array {
  if (c.size !== c.data.byteLength) {
    throw new RangeError(`config: size ${c.size} but ${c.data.byteLength} data bytes`);
  }
  if (c.size > MAX_CONFIG_SIZE) {
    throw new RangeError(`config: size ${c.size} exceeds ${MAX_CONFIG_SIZE}`);
  }
  const out = new Uint8Array(CONFIG_HEADER_SIZE + c.size);
  const view = viewOf(out);
  view.setUint32(0, checkU32("config offset", c.offset), true);
  view.setUint32(4, c.size, true);
  view.setUint32(8, checkU32("config flags", c.flags), true);
  out.set(c.data, CONFIG_HEADER_SIZE);
  return out;
}

/** Decodes a GET_CONFIG/SET_CONFIG payload; checks length == 12 + size and size <= 256. */
export function decodeConfig(p: Uint8Array): ConfigPayload {
  if (p.byteLength < CONFIG_HEADER_SIZE) {
    throw new ProtocolError(
      `config: payload is ${p.byteLength} bytes, expected at least ${CONFIG_HEADER_SIZE}`,
    );
  }
  const view = viewOf(p);
  const size = view.getUint32(4, true);
  if (size > MAX_CONFIG_SIZE) {
    throw new ProtocolError(`config: size ${size} exceeds ${MAX_CONFIG_SIZE}`);
  }
  expectLength("config", p, CONFIG_HEADER_SIZE + size);
  return {
    offset: view.getUint32(0, true),
    size,
    flags: view.getUint32(8, true),
    data: p.slice(CONFIG_HEADER_SIZE),
  };
}

/** Encodes a SET_DEVICE_STATE_FD payload. */
export function encodeDeviceStateParams(p: DeviceStateParams): Uint8Array {
  const out = new Uint8Array(DEVICE_STATE_PARAMS_SIZE);
  const view = viewOf(out);
  view.setUint32(0, checkU32("transfer direction", p.direction), true);
  view.setUint32(4, checkU32("migration phase", p.phase), true);
  return out;
}

/** Decodes a SET_DEVICE_STATE_FD payload; refuses unknown directions and phases. */
export function decodeDeviceStateParams(p: Uint8Array): DeviceStateParams {
  expectLength("device state parameters", p, DEVICE_STATE_PARAMS_SIZE);
  const view = viewOf(p);
  const direction = view.getUint32(0, true);
  const phase = view.getUint32(4, true);
  if (direction !== DeviceStateDirection.SAVE && direction !== DeviceStateDirection.LOAD) {
    throw new ProtocolError(`device state parameters: unknown transfer direction ${direction}`);
  }
  if (phase !== DeviceStatePhase.STOPPED) {
    throw new ProtocolError(`device state parameters: unknown migration phase ${phase}`);
  }
  return { direction, phase };
}

/** Encodes a SET_VRING_KICK/CALL/ERR payload. */
export function encodeVringFdIndex(i: VringFdIndex): Uint8Array {
  if (!Number.isInteger(i.index) || i.index < 0 || i.index > VRING_INDEX_MASK) {
    throw new RangeError(`vring fd index: ${i.index} is outside 0..${VRING_INDEX_MASK}`);
  }
  return encodeU64(i.index | (i.noFd ? VRING_NOFD_MASK : 0));
}

/** Decodes a SET_VRING_KICK/CALL/ERR payload; refuses bits above bit 8. */
export function decodeVringFdIndex(p: Uint8Array): VringFdIndex {
  expectLength("vring fd index", p, U64_SIZE);
  const value = viewOf(p).getBigUint64(0, true);
  const known = BigInt(VRING_INDEX_MASK | VRING_NOFD_MASK);
  if ((value & ~known) !== 0n) {
    throw new ProtocolError(`vring fd index: unknown bits set in ${hex(value)}`);
  }
  const low = Number(value);
  return { index: low & VRING_INDEX_MASK, noFd: (low & VRING_NOFD_MASK) !== 0 };
}
