import assert from "node:assert/strict";
import { MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE } from "./constants.ts";
import { closeFd, pread, pwrite } from "./fd.ts";
import { ftruncate, mapArrayBuffer, memfdCreate, mmap, munmap, pointerValue } from "./memory.ts";
import type { MapReply, MapRequest } from "./testdata/memory_worker.ts";
import { nextMessage } from "./testdata/next_message.ts";

const SIZE = 64 * 1024;

Deno.test("a memfd mapping and the file agree both ways", () => {
  const fd = memfdCreate("map-test");
  let addr = 0n;
  try {
    ftruncate(fd, SIZE);
    addr = mmap(SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert.ok(addr > 0n && addr % 4096n === 0n);
    const bytes = new Uint8Array(mapArrayBuffer(addr, SIZE));
    assert.equal(bytes.length, SIZE);
    for (let i = 0; i < SIZE; i++) bytes[i] = (i * 7) & 255;

    const viaFile = new Uint8Array(4096);
    assert.equal(pread(fd, viaFile, 8192), 4096);
    assert.deepEqual(viaFile, bytes.subarray(8192, 8192 + 4096));

    const written = new Uint8Array(100).fill(0xab);
    assert.equal(pwrite(fd, written, SIZE - 100), 100);
    assert.deepEqual(bytes.subarray(SIZE - 100), written);

    // pointerValue of the mapped view is the mapping's address.
    assert.equal(pointerValue(bytes), Number(addr));
    assert.equal(pointerValue(bytes.subarray(4096)), Number(addr) + 4096);
  } finally {
    if (addr !== 0n) munmap(addr, SIZE);
    closeFd(fd);
  }
});

Deno.test("a mapping at a file offset shows that part of the file", () => {
  const fd = memfdCreate("offset-test");
  let addr = 0n;
  try {
    ftruncate(fd, 3 * 4096);
    pwrite(fd, new Uint8Array([1, 2, 3]), 8192);
    addr = mmap(4096, PROT_READ, MAP_SHARED, fd, 8192);
    assert.deepEqual(new Uint8Array(mapArrayBuffer(addr, 3)), new Uint8Array([1, 2, 3]));
  } finally {
    if (addr !== 0n) munmap(addr, 4096);
    closeFd(fd);
  }
});

Deno.test("a Worker maps the same memory from the address alone", async () => {
  const fd = memfdCreate("worker-map-test");
  ftruncate(fd, SIZE);
  const addr = mmap(SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const worker = new Worker(new URL("./testdata/memory_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    const bytes = new Uint8Array(mapArrayBuffer(addr, SIZE));
    let expectedSum = 0;
    for (let i = 0; i < SIZE; i++) {
      bytes[i] = (i * 13 + 5) & 255;
      expectedSum += bytes[i];
    }
    const reply = nextMessage<MapReply>(worker);
    worker.postMessage({ addr, length: SIZE } satisfies MapRequest);
    const { sum, first } = await reply;
    assert.equal(first, 5);
    assert.equal(sum, expectedSum);
    for (let i = 0; i < SIZE; i += 997) assert.equal(bytes[i], 255 - (i & 255));
    const viaFile = new Uint8Array(1);
    pread(fd, viaFile, 1000);
    assert.equal(viaFile[0], 255 - (1000 & 255));
  } finally {
    worker.terminate();
    munmap(addr, SIZE);
    closeFd(fd);
  }
});

Deno.test("anonymous private mappings work without an fd", () => {
  const addr = mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  try {
    const bytes = new Uint8Array(mapArrayBuffer(addr, 4096));
    assert.equal(bytes[4095], 0);
    bytes[4095] = 42;
    assert.equal(new Uint8Array(mapArrayBuffer(addr + 4095n, 1))[0], 42);
  } finally {
    munmap(addr, 4096);
  }
});

Deno.test("mmap and mapArrayBuffer failures throw SyscallError", () => {
  assert.throws(() => mmap(4096, PROT_READ, MAP_SHARED, -1, 0), { code: "EBADF", syscall: "mmap" });
  assert.throws(() => mmap(0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), { code: "EINVAL" });
  assert.throws(() => mapArrayBuffer(0n, 10), { code: "EINVAL" });
  assert.throws(() => mapArrayBuffer(4096n, 0), { code: "EINVAL" });
  assert.throws(() => munmap(4097n, 4096), { code: "EINVAL" });
  assert.throws(() => memfdCreate("bad\0name"), { code: "EINVAL" });
});

Deno.test("pointerValue includes the byteOffset and is 0 for storage-less arrays", () => {
  const whole = new Uint8Array(new ArrayBuffer(256));
  const base = pointerValue(whole);
  assert.ok(base > 0);
  assert.equal(pointerValue(whole.subarray(17)), base + 17);
  assert.equal(pointerValue(new Uint8Array(0)), 0);
});
