import assert from "node:assert/strict";
import { ProtocolError } from "./errors.ts";
import {
  CONFIG_HEADER_SIZE,
  type ConfigPayload,
  decodeConfig,
  decodeDeviceStateParams,
  decodeInflightDesc,
  decodeLogArea,
  decodeMemoryTable,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddress,
  decodeVringFdIndex,
  decodeVringState,
  DeviceStateDirection,
  DeviceStatePhase,
  encodeConfig,
  encodeDeviceStateParams,
  encodeInflightDesc,
  encodeLogArea,
  encodeMemoryTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringFdIndex,
  encodeVringState,
  INFLIGHT_DESC_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  type MemoryRegionDesc,
  VRING_ADDR_F_LOG,
  type VringAddress,
} from "./payloads.ts";

/** A little-endian u64 written into `bytes` at `offset`. */
function putU64(bytes: Uint8Array, offset: number, value: bigint): void {
  new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(offset, value, true);
}

function putU32(bytes: Uint8Array, offset: number, value: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(offset, value, true);
}

/** Asserts that `decode` refuses a payload one byte shorter and one byte longer. */
function assertRefusesWrongLengths(decode: (p: Uint8Array) => unknown, valid: Uint8Array): void {
  assert.throws(() => decode(valid.subarray(0, valid.byteLength - 1)), ProtocolError);
  const longer = new Uint8Array(valid.byteLength + 1);
  longer.set(valid);
  assert.throws(() => decode(longer), ProtocolError);
  assert.throws(() => decode(new Uint8Array(0)), ProtocolError);
}

function region(i: number): MemoryRegionDesc {
  const base = BigInt(i) * 0x1000_0000n;
  return {
    guestAddr: base,
    size: 0x1000_0000n,
    userAddr: 0x7f00_0000_0000n + base,
    mmapOffset: BigInt(i) * 0x1000n,
  };
}

Deno.test("u64 round trip, little-endian, full range", () => {
  for (const v of [0n, 1n, 0x0102_0304_0506_0708n, 0xffff_ffff_ffff_ffffn]) {
    assert.equal(decodeU64(encodeU64(v)), v);
  }
  assert.deepEqual([...encodeU64(0x0102n)], [2, 1, 0, 0, 0, 0, 0, 0]);
  assert.equal(decodeU64(encodeU64(12345)), 12345n);
  assertRefusesWrongLengths(decodeU64, encodeU64(5n));
});

Deno.test("encodeU64 refuses values that do not fit", () => {
  assert.throws(() => encodeU64(-1), RangeError);
  assert.throws(() => encodeU64(1.5), RangeError);
  assert.throws(() => encodeU64(1n << 64n), RangeError);
  assert.throws(() => encodeU64(-1n), RangeError);
});

Deno.test("vring state round trip and layout", () => {
  const state = { index: 3, num: 0xffff_fffe };
  const bytes = encodeVringState(state);
  assert.deepEqual([...bytes], [3, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
  assert.deepEqual(decodeVringState(bytes), state);
  assertRefusesWrongLengths(decodeVringState, bytes);
  assert.throws(() => encodeVringState({ index: -1, num: 0 }), RangeError);
  assert.throws(() => encodeVringState({ index: 0, num: 2 ** 32 }), RangeError);
});

Deno.test("vring address round trip, layout and flag check", () => {
  const address: VringAddress = {
    index: 1,
    flags: VRING_ADDR_F_LOG,
    descUserAddr: 0x7f00_0000_1000n,
    usedUserAddr: 0x7f00_0000_3000n,
    availUserAddr: 0x7f00_0000_2000n,
    logGuestAddr: 0x4000n,
  };
  const bytes = encodeVringAddress(address);
  assert.equal(bytes.byteLength, 40);
  // descriptor at 8, used at 16, available at 24, log at 32
  const view = new DataView(bytes.buffer);
  assert.equal(view.getBigUint64(16, true), address.usedUserAddr);
  assert.equal(view.getBigUint64(24, true), address.availUserAddr);
  assert.deepEqual(decodeVringAddress(bytes), address);
  assertRefusesWrongLengths(decodeVringAddress, bytes);
  putU32(bytes, 4, 0x2);
  assert.throws(() => decodeVringAddress(bytes), /unknown flags 0x2/);
});

Deno.test("memory table round trips with 0, 1 and 8 regions in QEMU's compact form", () => {
  for (const count of [0, 1, MAX_MEM_TABLE_REGIONS]) {
    const regions = Array.from({ length: count }, (_, i) => region(i));
    const bytes = encodeMemoryTable(regions);
    assert.equal(bytes.byteLength, 8 + count * 32);
    assert.equal(new DataView(bytes.buffer).getUint32(0, true), count);
    assert.deepEqual(decodeMemoryTable(bytes), regions);
  }
});

Deno.test("memory table decodes the full 8-slot array with unused slots", () => {
  const bytes = new Uint8Array(8 + 8 * 32);
  bytes.set(encodeMemoryTable([region(0), region(1)]));
  assert.deepEqual(decodeMemoryTable(bytes), [region(0), region(1)]);
});

Deno.test("memory table refuses 9 regions, short and long payloads", () => {
  assert.throws(
    () => encodeMemoryTable(Array.from({ length: 9 }, (_, i) => region(i))),
    RangeError,
  );
  const nine = new Uint8Array(8 + 9 * 32);
  putU32(nine, 0, 9);
  assert.throws(() => decodeMemoryTable(nine), ProtocolError);
  const full = new Uint8Array(264);
  putU32(full, 0, 9);
  assert.throws(() => decodeMemoryTable(full), /9 regions, at most 8/);

  const two = encodeMemoryTable([region(0), region(1)]);
  assert.throws(() => decodeMemoryTable(two.subarray(0, two.byteLength - 1)), /2 regions need 72/);
  assert.throws(() => decodeMemoryTable(new Uint8Array(7)), ProtocolError);
  assert.throws(() => decodeMemoryTable(new Uint8Array(265)), ProtocolError);
});

Deno.test("memory table refuses empty, wrapping and overlapping regions", () => {
  const withRegion = (r: MemoryRegionDesc, second?: MemoryRegionDesc) =>
    encodeMemoryTable(second ? [r, second] : [r]);
  assert.throws(() => decodeMemoryTable(withRegion({ ...region(0), size: 0n })), /size 0/);
  assert.throws(
    () => decodeMemoryTable(withRegion({ ...region(0), guestAddr: 0xffff_ffff_ffff_f000n })),
    /guest range .* wraps past 2\^64/,
  );
  assert.throws(
    () => decodeMemoryTable(withRegion({ ...region(0), userAddr: 0xffff_ffff_ffff_ffffn })),
    /user range/,
  );
  assert.throws(
    () => decodeMemoryTable(withRegion({ ...region(0), mmapOffset: 0xffff_ffff_ffff_ffffn })),
    /mmap offset range/,
  );
  // A region ending exactly at 2^64 is fine.
  const top = { ...region(0), guestAddr: 0xffff_ffff_f000_0000n, size: 0x1000_0000n };
  assert.deepEqual(decodeMemoryTable(withRegion(top)), [top]);

  const a = region(0);
  assert.throws(
    () => decodeMemoryTable(withRegion(a, { ...region(1), guestAddr: a.size - 1n })),
    /overlap in guest memory/,
  );
  assert.throws(
    () => decodeMemoryTable(withRegion(a, { ...region(1), userAddr: a.userAddr + 0x10n })),
    /overlap in user addresses/,
  );
});

Deno.test("single region round trip with u64 padding first", () => {
  const r = region(3);
  const bytes = encodeSingleRegion(r);
  assert.equal(bytes.byteLength, 40);
  assert.equal(new DataView(bytes.buffer).getBigUint64(0, true), 0n);
  assert.equal(new DataView(bytes.buffer).getBigUint64(8, true), r.guestAddr);
  assert.deepEqual(decodeSingleRegion(bytes), r);
  assertRefusesWrongLengths(decodeSingleRegion, bytes);
  assert.throws(() => decodeSingleRegion(encodeSingleRegion({ ...r, size: 0n })), /size 0/);
});

Deno.test("log area round trip and refusals", () => {
  const log = { mmapSize: 0x2000n, mmapOffset: 0x1000n };
  const bytes = encodeLogArea(log);
  assert.deepEqual(decodeLogArea(bytes), log);
  assertRefusesWrongLengths(decodeLogArea, bytes);
  assert.throws(() => decodeLogArea(encodeLogArea({ mmapSize: 0n, mmapOffset: 0n })), /size is 0/);
  assert.throws(
    () => decodeLogArea(encodeLogArea({ mmapSize: 2n, mmapOffset: 0xffff_ffff_ffff_ffffn })),
    /wraps/,
  );
});

Deno.test("inflight description: 24 bytes with the padding after the two u16", () => {
  const desc = { mmapSize: 4n * 2112n, mmapOffset: 0x1000n, numQueues: 4, queueSize: 128 };
  const bytes = encodeInflightDesc(desc);
  assert.equal(INFLIGHT_DESC_SIZE, 24);
  assert.equal(bytes.byteLength, 24);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getBigUint64(0, true), 8448n);
  assert.equal(view.getBigUint64(8, true), 0x1000n);
  assert.equal(view.getUint16(16, true), 4);
  assert.equal(view.getUint16(18, true), 128);
  assert.deepEqual([...bytes.subarray(20)], [0, 0, 0, 0]);
  assert.deepEqual(decodeInflightDesc(bytes), desc);
  // QEMU's GET_INFLIGHT_FD request: only the queue fields are set.
  const request = { mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 256 };
  assert.deepEqual(decodeInflightDesc(encodeInflightDesc(request)), request);
  // Padding bytes are not judged.
  const padded = bytes.slice();
  padded.fill(0xee, 20);
  assert.deepEqual(decodeInflightDesc(padded), desc);
  assertRefusesWrongLengths(decodeInflightDesc, bytes);
  assert.throws(
    () => decodeInflightDesc(encodeInflightDesc({ ...desc, mmapOffset: 0xffff_ffff_ffff_f000n })),
    /wraps/,
  );
  assert.throws(() => encodeInflightDesc({ ...desc, numQueues: 0x10000 }), RangeError);
  assert.throws(() => encodeInflightDesc({ ...desc, queueSize: -1 }), RangeError);
  assert.throws(() => encodeInflightDesc({ ...desc, mmapSize: -1n }), RangeError);
});

Deno.test("config round trip, including empty and maximum sizes", () => {
  for (const size of [0, 4, MAX_CONFIG_SIZE]) {
    const data = Uint8Array.from({ length: size }, (_, i) => (i * 7) & 0xff);
    const config: ConfigPayload = { offset: 0x10, size, flags: 1, data };
    const bytes = encodeConfig(config);
    assert.equal(bytes.byteLength, CONFIG_HEADER_SIZE + size);
    const decoded = decodeConfig(bytes);
    assert.deepEqual(decoded, config);
    // The decoded data is a copy, not a view of the receive buffer.
    bytes.fill(0xee);
    assert.deepEqual(decoded.data, data);
  }
});

Deno.test("config refuses a length that disagrees with size, and sizes over 256", () => {
  const bytes = encodeConfig({ offset: 0, size: 8, flags: 0, data: new Uint8Array(8) });
  assertRefusesWrongLengths(decodeConfig, bytes);
  assert.throws(() => decodeConfig(new Uint8Array(11)), /at least 12/);
  const big = new Uint8Array(CONFIG_HEADER_SIZE + 257);
  putU32(big, 4, 257);
  assert.throws(() => decodeConfig(big), /exceeds 256/);
  assert.throws(
    () => encodeConfig({ offset: 0, size: 4, flags: 0, data: new Uint8Array(3) }),
    RangeError,
  );
  assert.throws(
    () => encodeConfig({ offset: 0, size: 257, flags: 0, data: new Uint8Array(257) }),
    RangeError,
  );
});

Deno.test("device state params round trip and refuse unknown values", () => {
  for (const direction of [DeviceStateDirection.SAVE, DeviceStateDirection.LOAD]) {
    const params = { direction, phase: DeviceStatePhase.STOPPED };
    const bytes = encodeDeviceStateParams(params);
    assert.deepEqual(decodeDeviceStateParams(bytes), params);
    assertRefusesWrongLengths(decodeDeviceStateParams, bytes);
  }
  assert.deepEqual([...encodeDeviceStateParams({ direction: 1, phase: 0 })], [
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
  assert.throws(
    () => decodeDeviceStateParams(encodeDeviceStateParams({ direction: 2, phase: 0 })),
    /unknown transfer direction 2/,
  );
  assert.throws(
    () => decodeDeviceStateParams(encodeDeviceStateParams({ direction: 0, phase: 1 })),
    /unknown migration phase 1/,
  );
});

Deno.test("vring fd index round trip with and without the no-fd bit", () => {
  for (const index of [0, 1, 255]) {
    for (const noFd of [false, true]) {
      const bytes = encodeVringFdIndex({ index, noFd });
      assert.equal(decodeU64(bytes), BigInt(index | (noFd ? 0x100 : 0)));
      assert.deepEqual(decodeVringFdIndex(bytes), { index, noFd });
    }
  }
  assertRefusesWrongLengths(decodeVringFdIndex, encodeVringFdIndex({ index: 0, noFd: false }));
  assert.throws(() => encodeVringFdIndex({ index: 256, noFd: false }), RangeError);
});

Deno.test("vring fd index refuses stray high bits", () => {
  for (const stray of [0x200n, 0x1_0000_0000n, 1n << 63n]) {
    const bytes = new Uint8Array(8);
    putU64(bytes, 0, stray | 0x101n);
    assert.throws(() => decodeVringFdIndex(bytes), /unknown bits/);
  }
});
