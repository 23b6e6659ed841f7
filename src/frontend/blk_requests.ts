/**
 * virtio-blk requests as the front-end describes them, and their wire form:
 * what goes in the 16-byte header, which bytes the device reads after it,
 * and how many bytes it may write before the status byte. Pure: no memory,
 * no I/O.
 *
 * @module
 */

import {
  BlkRequestType,
  DEVICE_ID_LENGTH,
  DISCARD_SEGMENT_SIZE,
  REQUEST_HEADER_SIZE,
  WRITE_ZEROES_FLAG_UNMAP,
} from "../devices/blk/blk_spec.ts";

/** Where a request's data lives when the caller provides it (zero-copy). */
export interface CallerBuffer {
  /** Guest-physical address of a buffer the caller owns (e.g. from `SharedGuestMemory.alloc`). */
  buffer: number;
}

/** Options shared by requests that carry data. */
export interface DataLayout {
  /** Split the data into this many descriptors (default 1). */
  segments?: number;
}

/** A virtio-blk request. Sectors are 512-byte units. */
export type BlkRequest =
  | ({ op: "read"; sector: number; length: number } & DataLayout & Partial<CallerBuffer>)
  | ({ op: "write"; sector: number; data: Uint8Array } & DataLayout)
  | ({ op: "write"; sector: number; length: number } & DataLayout & CallerBuffer)
  | { op: "flush" }
  | { op: "get-id" }
  | { op: "discard"; sector: number; sectors: number }
  | { op: "write-zeroes"; sector: number; sectors: number; unmap: boolean }
  | {
    /** Any request type number (unsupported ones included), with optional data either way. */
    op: "raw";
    type: number;
    sector?: number;
    out?: Uint8Array;
    inLength?: number;
  };

/** The wire shape of one request. */
export interface BlkRequestPlan {
  /** `type` field of the header. */
  type: number;
  /** `sector` field of the header. */
  sector: number;
  /** Device-readable bytes after the header, when the driver supplies them. */
  out: Uint8Array | undefined;
  /** Device-readable data length after the header. */
  outLength: number;
  /** Device-writable data length before the status byte. */
  inLength: number;
  /** A caller-owned data buffer, or undefined when the driver allocates one. */
  callerBuffer: number | undefined;
  /** Number of descriptors the data is split into. */
  dataSegments: number;
}

function checkSector(sector: number): number {
  if (!Number.isSafeInteger(sector) || sector < 0) {
    throw new RangeError(`sector must be a non-negative integer, got ${sector}`);
  }
  return sector;
}

function checkLength(name: string, length: number): number {
  if (!Number.isSafeInteger(length) || length < 0 || length > 0xffff_ffff) {
    throw new RangeError(`${name} must be a byte count below 2^32, got ${length}`);
  }
  return length;
}

/** Encodes one discard/write-zeroes segment {sector u64, num_sectors u32, flags u32}. */
export function encodeDiscardSegment(sector: number, sectors: number, flags: number): Uint8Array {
  const bytes = new Uint8Array(DISCARD_SEGMENT_SIZE);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(checkSector(sector)), true);
  view.setUint32(8, checkLength("sectors", sectors), true);
  view.setUint32(12, flags, true);
  return bytes;
}

/** Writes the 16-byte request header {type u32, reserved u32, sector u64} into `into`. */
export function writeBlkHeader(into: Uint8Array, type: number, sector: number): void {
  if (into.byteLength < REQUEST_HEADER_SIZE) throw new RangeError("header buffer too small");
  const view = new DataView(into.buffer, into.byteOffset, REQUEST_HEADER_SIZE);
  view.setUint32(0, type, true);
  view.setUint32(4, 0, true);
  view.setBigUint64(8, BigInt(checkSector(sector)), true);
}

/** Works out the wire shape of `request`; RangeError for values that do not fit. */
export function planBlkRequest(request: BlkRequest): BlkRequestPlan {
  const base = { out: undefined, outLength: 0, inLength: 0, callerBuffer: undefined };
  switch (request.op) {
    case "read":
      return {
        ...base,
        type: BlkRequestType.IN,
        sector: checkSector(request.sector),
        inLength: checkLength("length", request.length),
        callerBuffer: request.buffer,
        dataSegments: request.segments ?? 1,
      };
    case "write":
      if ("data" in request) {
        return {
          ...base,
          type: BlkRequestType.OUT,
          sector: checkSector(request.sector),
          out: request.data,
          outLength: checkLength("data length", request.data.byteLength),
          dataSegments: request.segments ?? 1,
        };
      }
      return {
        ...base,
        type: BlkRequestType.OUT,
        sector: checkSector(request.sector),
        outLength: checkLength("length", request.length),
        callerBuffer: request.buffer,
        dataSegments: request.segments ?? 1,
      };
    case "flush":
      return { ...base, type: BlkRequestType.FLUSH, sector: 0, dataSegments: 0 };
    case "get-id":
      return {
        ...base,
        type: BlkRequestType.GET_ID,
        sector: 0,
        inLength: DEVICE_ID_LENGTH,
        dataSegments: 1,
      };
    case "discard":
    case "write-zeroes": {
      const flags = request.op === "write-zeroes" && request.unmap ? WRITE_ZEROES_FLAG_UNMAP : 0;
      const out = encodeDiscardSegment(request.sector, request.sectors, flags);
      return {
        ...base,
        type: request.op === "discard" ? BlkRequestType.DISCARD : BlkRequestType.WRITE_ZEROES,
        sector: 0,
        out,
        outLength: out.byteLength,
        dataSegments: 1,
      };
    }
    case "raw": {
      const out = request.out;
      return {
        ...base,
        type: request.type >>> 0,
        sector: checkSector(request.sector ?? 0),
        out,
        outLength: out?.byteLength ?? 0,
        inLength: checkLength("inLength", request.inLength ?? 0),
        dataSegments: 1,
      };
    }
  }
}

/** Splits `[gpa, gpa+len)` into `count` nearly equal pieces (fewer when `len` is smaller). */
export function splitRange(
  gpa: number,
  len: number,
  count: number,
): { addr: number; len: number }[] {
  if (len === 0) return [];
  const pieces = Math.max(1, Math.min(count, len));
  const step = Math.floor(len / pieces);
  const out: { addr: number; len: number }[] = [];
  for (let i = 0; i < pieces; i++) {
    const start = i * step;
    out.push({ addr: gpa + start, len: i + 1 === pieces ? len - start : step });
  }
  return out;
}
