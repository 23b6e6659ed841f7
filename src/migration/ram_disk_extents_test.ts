import assert from "node:assert/strict";
import { StateFormatError } from "./errors.ts";
import { ExtentParser } from "./ram_disk_extents.ts";

function record(offset: number, length: number): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(offset), true);
  view.setBigUint64(8, BigInt(length), true);
  return bytes;
}

function payload(extents: [number, Uint8Array][]): Uint8Array {
  const parts = extents.flatMap(([offset, data]) => [record(offset, data.length), data]);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

Deno.test("ExtentParser places data at its offsets whatever the piece boundaries", () => {
  const bytes = payload([[10, new Uint8Array([1, 2, 3])], [13, new Uint8Array([4])], [
    100,
    new Uint8Array(40).fill(7),
  ]]);
  for (const pieceSize of [1, 5, 16, 17, bytes.length]) {
    const disk = new Uint8Array(200);
    const parser = new ExtentParser(200, (offset, data) => disk.set(data, offset));
    for (let at = 0; at < bytes.length; at += pieceSize) {
      parser.push(bytes.subarray(at, at + pieceSize));
    }
    assert.deepEqual(parser.finish(), { extents: 3, dataBytes: 44 });
    assert.deepEqual(disk.subarray(9, 15), new Uint8Array([0, 1, 2, 3, 4, 0]));
    assert.equal(disk.subarray(100, 140).every((b) => b === 7), true);
    assert.equal(disk[140], 0);
  }
});

Deno.test("ExtentParser refuses bad extents with StateFormatError", () => {
  const refuse = (bytes: Uint8Array, size: number, message: RegExp) => {
    const parser = new ExtentParser(size);
    assert.throws(() => {
      parser.push(bytes);
      parser.finish();
    }, (e) => e instanceof StateFormatError && message.test(e.message));
  };
  const one = new Uint8Array(1);
  refuse(payload([[5, one], [4, one]]), 10, /offset 4 overlaps or precedes/);
  refuse(payload([[5, one], [5, one]]), 10, /offset 5 overlaps or precedes/);
  refuse(record(0, 0), 10, /is empty/);
  refuse(payload([[9, new Uint8Array(2)]]), 10, /extent 9\+2 goes beyond the disk size 10/);
  refuse(record(2 ** 60, 1), 10, /extent 1152921504606846976\+1 goes beyond/);
  refuse(record(0, 5), 10, /ends inside an extent/);
  refuse(record(0, 5).subarray(0, 9), 10, /ends inside an extent/);
});
