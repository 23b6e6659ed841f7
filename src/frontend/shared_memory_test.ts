import assert from "node:assert/strict";
import { pread } from "../../ffi/mod.ts";
import { SharedGuestMemory } from "./shared_memory.ts";

Deno.test("SharedGuestMemory describes its regions with real mapping addresses", () => {
  const memory = SharedGuestMemory.create({ size: 1 << 20, regions: 2, guestBase: 0x4000_0000 });
  try {
    const descs = memory.regionDescs();
    assert.equal(descs.length, 2);
    assert.deepEqual(descs[0], {
      guestAddr: 0x4000_0000n,
      size: 512n * 1024n,
      userAddr: memory.mapAddress,
      mmapOffset: 0n,
    });
    assert.deepEqual(descs[1], {
      guestAddr: 0x4008_0000n,
      size: 512n * 1024n,
      userAddr: memory.mapAddress + 512n * 1024n,
      mmapOffset: 512n * 1024n,
    });
    assert.deepEqual(memory.regionFds(), [memory.fd, memory.fd]);
    assert.equal(memory.userAddr(0x4008_0010), memory.mapAddress + 0x80010n);
    assert.equal(memory.guestMemory.regions[1].hostAddr, Number(memory.mapAddress) + 0x80000);
  } finally {
    memory.close();
  }
});

Deno.test("SharedGuestMemory bytes are the memfd's bytes", () => {
  const memory = SharedGuestMemory.create({ size: 64 * 1024 });
  try {
    memory.bytes(0x1234, 3).set([1, 2, 3]);
    const fromFd = new Uint8Array(3);
    assert.equal(pread(memory.fd, fromFd, 0x1234), 3);
    assert.deepEqual(fromFd, Uint8Array.of(1, 2, 3));
    assert.deepEqual(memory.guestMemory.slice(0x1234, 3), Uint8Array.of(1, 2, 3));
    assert.throws(() => memory.bytes(64 * 1024 - 1, 2), RangeError);
    assert.throws(() => memory.bytes(-1, 1), RangeError);
  } finally {
    memory.close();
  }
});

Deno.test("SharedGuestMemory.alloc aligns and never straddles regions", () => {
  const memory = SharedGuestMemory.create({ size: 8192 * 2, regions: 2 });
  try {
    assert.equal(memory.alloc(10), 0);
    assert.equal(memory.alloc(8, 64), 64);
    assert.equal(memory.largestFree(), 8192);
    // 8152 bytes do not fit after 72 in region 0: they go to region 1.
    assert.equal(memory.alloc(8152), 8192);
    assert.equal(memory.alloc(32), 8192 + 8152);
    assert.throws(() => memory.alloc(16), RangeError);
    assert.throws(() => memory.alloc(8192), RangeError);
    assert.throws(() => memory.alloc(0), RangeError);
  } finally {
    memory.close();
  }
});

Deno.test("SharedGuestMemory refuses sizes that are not whole pages per region", () => {
  assert.throws(() => SharedGuestMemory.create({ size: 5000 }), RangeError);
  assert.throws(() => SharedGuestMemory.create({ size: 8192, regions: 4 }), RangeError);
  assert.throws(() => SharedGuestMemory.create({ size: 8192, guestBase: 100 }), RangeError);
  assert.throws(() => SharedGuestMemory.create({ size: 8192, regions: 9 }), RangeError);
});
