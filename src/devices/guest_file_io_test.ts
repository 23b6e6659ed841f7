import assert from "node:assert/strict";
import { closeQuietly, ftruncate, memfdCreate, pwrite } from "../../ffi/mod.ts";
import { arrayBufferRegion, GuestMemory } from "../memory/guest_memory.ts";
import type { Segment } from "../virtqueue/descriptor_chain.ts";
import { GuestFileIo } from "./guest_file_io.ts";

function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (i * 7 + seed) & 0xff;
  return out;
}

function withFile(size: number, body: (fd: number, memory: GuestMemory) => void): () => void {
  return () => {
    const fd = memfdCreate("guest-file-io-test");
    try {
      ftruncate(fd, size);
      body(fd, new GuestMemory([arrayBufferRegion(0, 1 << 20)]));
    } finally {
      closeQuietly(fd);
    }
  };
}

Deno.test(
  "a read marks guest bytes only after they landed, and only the bytes that moved",
  withFile(1000, (fd, memory) => {
    const data = pattern(1000, 3);
    assert.equal(pwrite(fd, data, 0), 1000);
    // 1000 bytes of file for 1500 bytes of buffers (end of file after 1000), 2 iovecs per call.
    const segments: Segment[] = [
      { addr: 0x1000, len: 16, writable: false },
      { addr: 0x2001, len: 600, writable: true },
      { addr: 0x3003, len: 300, writable: true },
      { addr: 0x4000, len: 600, writable: true },
    ];
    const marks: [number, number][] = [];
    memory.writeObserver = {
      markWritten(gpa, len) {
        marks.push([gpa, len]);
        // The bytes are already in guest memory when they are marked.
        const at = gpa === 0x2001 ? 0 : gpa === 0x3003 ? 600 : 900;
        assert.deepEqual(memory.slice(gpa, len), data.subarray(at, at + len));
      },
    };
    const io = new GuestFileIo(2);
    assert.equal(io.transfer(fd, segments, memory, 16, 1500, 0, false), 1000);
    assert.deepEqual(marks, [[0x2001, 600], [0x3003, 300], [0x4000, 100]]);
  }),
);

Deno.test(
  "a write marks nothing",
  withFile(4096, (fd, memory) => {
    const marks: [number, number][] = [];
    memory.writeObserver = { markWritten: (gpa, len) => void marks.push([gpa, len]) };
    memory.slice(0x2000, 512)!.set(pattern(512, 4));
    const io = new GuestFileIo(4);
    const n = io.transfer(
      fd,
      [{ addr: 0x2000, len: 512, writable: false }],
      memory,
      0,
      512,
      0,
      true,
    );
    assert.equal(n, 512);
    assert.deepEqual(marks, []);
  }),
);
