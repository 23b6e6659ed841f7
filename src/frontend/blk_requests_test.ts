import assert from "node:assert/strict";
import { BlkRequestType, encodeBlkConfig } from "../devices/blk/blk_spec.ts";
import { BLK_CONFIG_READ_SIZE, decodeBlkConfig } from "./blk_config.ts";
import {
  encodeDiscardSegment,
  planBlkRequest,
  splitRange,
  writeBlkHeader,
} from "./blk_requests.ts";

Deno.test("planBlkRequest gives each request its wire shape", () => {
  const read = planBlkRequest({ op: "read", sector: 8, length: 4096, segments: 3 });
  assert.deepEqual(read, {
    type: BlkRequestType.IN,
    sector: 8,
    out: undefined,
    outLength: 0,
    inLength: 4096,
    callerBuffer: undefined,
    dataSegments: 3,
  });
  const data = new Uint8Array(1024);
  const write = planBlkRequest({ op: "write", sector: 2, data });
  assert.equal(write.type, BlkRequestType.OUT);
  assert.equal(write.out, data);
  assert.equal(write.outLength, 1024);
  const zeroCopy = planBlkRequest({ op: "write", sector: 2, buffer: 0x9000, length: 512 });
  assert.equal(zeroCopy.callerBuffer, 0x9000);
  assert.equal(zeroCopy.out, undefined);
  assert.equal(planBlkRequest({ op: "flush" }).type, BlkRequestType.FLUSH);
  assert.equal(planBlkRequest({ op: "get-id" }).inLength, 20);
  const zeroes = planBlkRequest({ op: "write-zeroes", sector: 5, sectors: 7, unmap: true });
  assert.equal(zeroes.type, BlkRequestType.WRITE_ZEROES);
  assert.deepEqual(zeroes.out, encodeDiscardSegment(5, 7, 1));
  const discard = planBlkRequest({ op: "discard", sector: 5, sectors: 7 });
  assert.deepEqual(discard.out, encodeDiscardSegment(5, 7, 0));
  assert.equal(planBlkRequest({ op: "raw", type: 99 }).type, 99);
  assert.throws(() => planBlkRequest({ op: "read", sector: -1, length: 512 }), RangeError);
  assert.throws(() => planBlkRequest({ op: "read", sector: 0, length: 2 ** 32 }), RangeError);
});

Deno.test("writeBlkHeader and encodeDiscardSegment are little-endian", () => {
  const header = new Uint8Array(16).fill(0xee);
  writeBlkHeader(header, 1, 0x1_0000_0002);
  assert.deepEqual([...header], [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(
    [...encodeDiscardSegment(3, 0x100, 1)],
    [3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0],
  );
});

Deno.test("splitRange covers the range exactly", () => {
  assert.deepEqual(splitRange(100, 10, 3), [
    { addr: 100, len: 3 },
    { addr: 103, len: 3 },
    { addr: 106, len: 4 },
  ]);
  assert.deepEqual(splitRange(0, 2, 5), [{ addr: 0, len: 1 }, { addr: 1, len: 1 }]);
  assert.deepEqual(splitRange(0, 0, 2), []);
  assert.deepEqual(splitRange(7, 9, 0), [{ addr: 7, len: 9 }]);
});

Deno.test("decodeBlkConfig reads what the device encodes", () => {
  const bytes = encodeBlkConfig({
    capacitySectors: 2 ** 40,
    segMax: 126,
    blkSize: 4096,
    writeback: 0,
    numQueues: 3,
    maxDiscardSectors: 1000,
    maxDiscardSeg: 4,
  });
  const config = decodeBlkConfig(bytes);
  assert.equal(config.capacity, 2 ** 40);
  assert.equal(config.segMax, 126);
  assert.equal(config.blkSize, 4096);
  assert.equal(config.writeback, false);
  assert.equal(config.numQueues, 3);
  assert.equal(config.maxDiscardSectors, 1000);
  assert.equal(config.maxWriteZeroesSeg, 4);
  assert.equal(config.writeZeroesMayUnmap, true);
  assert.throws(() => decodeBlkConfig(bytes.subarray(0, BLK_CONFIG_READ_SIZE - 1)), RangeError);
});
