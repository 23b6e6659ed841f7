import assert from "node:assert/strict";
import {
  decodeVsockHeader,
  encodeVsockConfig,
  encodeVsockHeader,
  VSOCK_HEADER_SIZE,
  type VsockHeader,
  VsockOp,
  VsockType,
} from "./vsock_spec.ts";

const sample: VsockHeader = {
  srcCid: 3,
  dstCid: 2,
  srcPort: 0x1234_5678,
  dstPort: 1024,
  len: 4096,
  type: VsockType.STREAM,
  op: VsockOp.RW,
  flags: 3,
  bufAlloc: 262144,
  fwdCnt: 0xffff_ffff,
};

Deno.test("vsock header: 44 bytes little-endian at the offsets of struct virtio_vsock_hdr", () => {
  const bytes = encodeVsockHeader(sample);
  assert.equal(bytes.length, VSOCK_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getBigUint64(0, true), 3n);
  assert.equal(view.getBigUint64(8, true), 2n);
  assert.equal(view.getUint32(16, true), 0x1234_5678);
  assert.equal(view.getUint32(20, true), 1024);
  assert.equal(view.getUint32(24, true), 4096);
  assert.equal(view.getUint16(28, true), 1);
  assert.equal(view.getUint16(30, true), 5);
  assert.equal(view.getUint32(32, true), 3);
  assert.equal(view.getUint32(36, true), 262144);
  assert.equal(view.getUint32(40, true), 0xffff_ffff);
  assert.deepEqual(decodeVsockHeader(bytes), sample);
});

Deno.test("vsock header: short input and 64-bit CIDs", () => {
  assert.equal(decodeVsockHeader(new Uint8Array(43)), undefined);
  const bytes = encodeVsockHeader(sample);
  new DataView(bytes.buffer).setUint32(4, 1, true); // src_cid high word
  assert.equal(decodeVsockHeader(bytes)?.srcCid, -1);
  // A view at an offset decodes from its own start.
  const padded = new Uint8Array(50);
  padded.set(encodeVsockHeader(sample), 6);
  assert.deepEqual(decodeVsockHeader(padded.subarray(6)), sample);
});

Deno.test("vsock config: le64 guest_cid", () => {
  assert.deepEqual([...encodeVsockConfig(0x0102_0304)], [4, 3, 2, 1, 0, 0, 0, 0]);
});
