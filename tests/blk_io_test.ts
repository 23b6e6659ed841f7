/**
 * virtio-blk I/O through a real vhostd process: the TypeScript front-end on
 * one side of a Unix socket, `vhostd blk` on the other, memfd guest memory.
 */

import assert from "node:assert/strict";
import { BlkFeature, BlkStatus, SECTOR_SIZE } from "../src/devices/blk/blk_spec.ts";
import { BackendRefused, BlkDriver, SharedGuestMemory, STATUS_UNSET } from "../src/frontend/mod.ts";
import { hasBit, ProtocolFeature } from "../src/protocol/mod.ts";
import { BlkFixture, makeImage, pattern } from "./support/blk_fixture.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const DISK_SIZE = 4 * 2 ** 20;
const DISK_SECTORS = DISK_SIZE / SECTOR_SIZE;

/** Writes then reads back several sizes at several sectors, in one to eight segments. */
function roundTrips(driver: BlkDriver, seedBase: number): void {
  const cases = [
    { sector: 0, length: 512, segments: 1 },
    { sector: 1, length: 4096, segments: 1 },
    { sector: 9, length: 4096, segments: 3 },
    { sector: 100, length: 65536, segments: 8 },
    { sector: 1000, length: 3 * 512, segments: 2 },
    { sector: DISK_SECTORS - 256, length: 128 * 1024, segments: 5 },
  ];
  cases.forEach((c, i) => {
    const data = pattern(c.length, seedBase + i);
    const w = driver.write(0, c.sector, data, { segments: c.segments });
    assert.equal(w.status, BlkStatus.OK, `write ${JSON.stringify(c)}`);
    assert.equal(w.written, 1, "a write returns only the status byte");
  });
  cases.forEach((c, i) => {
    // Read back in a different segmentation than it was written with.
    const r = driver.read(0, c.sector, c.length, { segments: 9 - c.segments });
    assert.equal(r.status, BlkStatus.OK, `read ${JSON.stringify(c)}`);
    assert.equal(r.written, c.length + 1);
    assert.deepEqual(r.data, pattern(c.length, seedBase + i), `data of ${JSON.stringify(c)}`);
  });
  // Sector 50 lies between the cases: still zero.
  assert.deepEqual(driver.read(0, 50, 512).data, new Uint8Array(512));
}

Deno.test("RAM disk: written data reads back (sizes, sectors, segments)", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath);
    assert.equal(s.driver.config.capacity, DISK_SECTORS);
    roundTrips(s.driver, 1);
  });
});

Deno.test("RAM disk: indirect descriptors, event idx, two memory regions", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, {
      indirect: true,
      eventIdx: true,
      regions: 2,
      guestBase: 0x1_0000_0000,
      // Keeps the request buffers in the first region, clear of the boundary used below.
      bufferPoolBytes: 2 * 2 ** 20,
    });
    assert.ok(s.driver.features & (1n << 28n), "RING_INDIRECT_DESC negotiated");
    assert.ok(s.driver.features & (1n << 29n), "RING_EVENT_IDX negotiated");
    roundTrips(s.driver, 50);
    // A caller-owned buffer that straddles the two regions (guest-contiguous).
    const boundary = s.memory.guestBase + s.memory.size / 2;
    const gpa = boundary - 1536;
    const data = pattern(4096, 77);
    s.memory.bytes(gpa, 4096).set(data);
    const token = s.driver.submit(0, { op: "write", sector: 300, buffer: gpa, length: 4096 });
    assert.equal(s.driver.waitFor(0, token).status, BlkStatus.OK);
    s.memory.bytes(gpa, 4096).fill(0);
    const readToken = s.driver.submit(0, { op: "read", sector: 300, length: 4096, buffer: gpa });
    assert.equal(s.driver.waitFor(0, readToken).status, BlkStatus.OK);
    assert.deepEqual(s.memory.bytes(gpa, 4096), data);
  });
});

Deno.test("file disk: written data reads back and lands in the image", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-img-" });
  try {
    const image = `${dir}/disk.img`;
    await makeImage(image, DISK_SIZE);
    await withVhostd({ args: ["--file", image] }, ({ socketPath }) => {
      using s = BlkFixture.open(socketPath);
      assert.equal(s.driver.config.capacity, DISK_SECTORS);
      roundTrips(s.driver, 100);
    });
    const file = await Deno.readFile(image);
    assert.deepEqual(file.subarray(9 * 512, 9 * 512 + 4096), pattern(4096, 102));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FLUSH: data written and flushed is in the image as another process reads it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-img-" });
  try {
    const image = `${dir}/disk.img`;
    await makeImage(image, DISK_SIZE, 5);
    await withVhostd({ args: ["--file", image] }, async ({ socketPath }) => {
      using s = BlkFixture.open(socketPath);
      assert.ok(hasBit(s.driver.features, BlkFeature.FLUSH), "FLUSH negotiated");
      const data = pattern(8192, 6);
      assert.equal(s.driver.write(0, 2048, data).status, BlkStatus.OK);
      assert.equal(s.driver.flush(0).status, BlkStatus.OK);
      // The back-end is still running: read the image with dd in a separate process.
      const dd = await new Deno.Command("dd", {
        args: [`if=${image}`, "bs=512", "skip=2048", "count=16", "status=none"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(dd.code, 0, new TextDecoder().decode(dd.stderr));
      assert.deepEqual(dd.stdout, data);
      // Bytes around the write are untouched.
      const before = await new Deno.Command("dd", {
        args: [`if=${image}`, "bs=512", "skip=2047", "count=1", "status=none"],
        stdout: "piped",
      }).output();
      assert.deepEqual(before.stdout, pattern(DISK_SIZE, 5).subarray(2047 * 512, 2048 * 512));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--read-only: RO offered; writes, discards, write-zeroes fail; reads work", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-img-" });
  try {
    const image = `${dir}/disk.img`;
    await makeImage(image, DISK_SIZE, 9);
    const original = await Deno.readFile(image);
    await withVhostd({ args: ["--file", image, "--read-only"] }, ({ socketPath }) => {
      using s = BlkFixture.open(socketPath);
      const d = s.driver;
      assert.ok(hasBit(d.offeredFeatures, BlkFeature.RO), "RO offered");
      assert.ok(hasBit(d.features, BlkFeature.RO), "RO negotiated");
      assert.ok(!hasBit(d.offeredFeatures, BlkFeature.DISCARD), "DISCARD not offered");
      assert.ok(!hasBit(d.offeredFeatures, BlkFeature.WRITE_ZEROES), "WRITE_ZEROES not offered");
      const r = d.read(0, 10, 4096);
      assert.equal(r.status, BlkStatus.OK);
      assert.deepEqual(r.data, original.subarray(10 * 512, 10 * 512 + 4096));
      assert.equal(d.write(0, 10, pattern(4096, 1)).status, BlkStatus.IOERR);
      assert.equal(d.discard(0, 10, 8).status, BlkStatus.IOERR);
      assert.equal(d.writeZeroes(0, 10, 8, false).status, BlkStatus.IOERR);
      assert.equal(d.writeZeroes(0, 10, 8, true).status, BlkStatus.IOERR);
      assert.equal(d.flush(0).status, BlkStatus.OK);
      // Still serving after the refusals.
      assert.deepEqual(d.read(0, 10, 4096).data, original.subarray(10 * 512, 10 * 512 + 4096));
    });
    assert.deepEqual(await Deno.readFile(image), original, "image unchanged");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("DISCARD, WRITE_ZEROES and GET_ID on a writable disk", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`, "--serial", "it-serial-42"] }, (v) => {
    using s = BlkFixture.open(v.socketPath);
    const d = s.driver;
    const id = d.getId(0);
    assert.equal(id.status, BlkStatus.OK);
    const serial = new Uint8Array(20);
    serial.set(new TextEncoder().encode("it-serial-42"));
    assert.deepEqual(id.data, serial);
    assert.equal(d.write(0, 64, pattern(16 * 512, 3)).status, BlkStatus.OK);
    assert.equal(d.writeZeroes(0, 66, 2, false).status, BlkStatus.OK);
    assert.equal(d.discard(0, 70, 4).status, BlkStatus.OK);
    const after = d.read(0, 64, 16 * 512).data!;
    const expected = pattern(16 * 512, 3);
    expected.fill(0, 2 * 512, 4 * 512);
    assert.deepEqual(after.subarray(0, 6 * 512), expected.subarray(0, 6 * 512));
    // A RAM disk punches holes on discard: those sectors read as zeros.
    assert.deepEqual(after.subarray(6 * 512, 10 * 512), new Uint8Array(4 * 512));
    assert.deepEqual(after.subarray(10 * 512), expected.subarray(10 * 512));
    assert.equal(d.writeZeroes(0, DISK_SECTORS - 1, 2, true).status, BlkStatus.IOERR);
  });
});

Deno.test("two queues used at once, requests interleaved", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`, "--num-queues", "2"] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, { numQueues: 2, queueSize: 128 });
    const d = s.driver;
    assert.equal(d.config.numQueues, 2);
    const perQueue = 24;
    const tokens: number[][] = [[], []];
    for (let i = 0; i < perQueue; i++) {
      for (const q of [0, 1]) {
        const sector = (q * perQueue + i) * 16;
        tokens[q].push(d.submit(q, { op: "write", sector, data: pattern(8192, 1000 + sector) }));
      }
    }
    for (const q of [0, 1]) {
      const done = d.waitCompletions(q, perQueue);
      assert.equal(done.length, perQueue);
      assert.deepEqual(done.map((c) => c.token).sort((a, b) => a - b), tokens[q]);
      assert.ok(done.every((c) => c.status === BlkStatus.OK));
    }
    // Read each queue's writes back through the other queue, again interleaved.
    const reads = new Map<number, number>();
    for (let i = 0; i < perQueue; i++) {
      for (const q of [0, 1]) {
        const sector = (q * perQueue + i) * 16;
        reads.set(d.submit(1 - q, { op: "read", sector, length: 8192 }), sector);
      }
    }
    const completions = [...d.waitCompletions(0, perQueue), ...d.waitCompletions(1, perQueue)];
    assert.equal(completions.length, 2 * perQueue);
    for (const c of completions) {
      const sector = reads.get(c.token);
      assert.ok(sector !== undefined, `unknown token ${c.token}`);
      assert.equal(c.status, BlkStatus.OK);
      assert.deepEqual(c.data, pattern(8192, 1000 + sector));
    }
    assert.equal(d.inFlight(0) + d.inFlight(1), 0);
  });
});

Deno.test("GET_CONFIG honours offset and size; SET_CONFIG writeback is visible", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`, "--num-queues", "3"] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath);
    const c = s.client;
    assert.ok(hasBit(c.protocolFeatures, ProtocolFeature.REPLY_ACK));
    const capacity = c.getConfig(0, 8);
    assert.equal(capacity.length, 8);
    assert.equal(new DataView(capacity.buffer).getBigUint64(0, true), BigInt(DISK_SECTORS));
    const numQueues = c.getConfig(34, 2);
    assert.equal(numQueues.length, 2);
    assert.equal(new DataView(numQueues.buffer).getUint16(0, true), 3);
    assert.equal(new DataView(c.getConfig(20, 4).buffer).getUint32(0, true), 512);
    // A window past the end of the configuration space is refused, and the session survives.
    assert.throws(() => c.getConfig(90, 16), BackendRefused);
    assert.throws(() => c.getConfig(0, 256), BackendRefused);
    assert.deepEqual(c.getConfig(0, 8), capacity);

    assert.equal(c.getConfig(32, 1)[0], 1, "writeback by default");
    s.driver.setWriteback(false);
    assert.equal(c.getConfig(32, 1)[0], 0);
    assert.equal(s.driver.readConfig().writeback, false);
    // Write-through mode still serves I/O.
    assert.equal(s.driver.write(0, 5, pattern(512, 8)).status, BlkStatus.OK);
    s.driver.setWriteback(true);
    assert.equal(c.getConfig(32, 1)[0], 1);
    // Read-only fields cannot be changed (acknowledged with an error).
    assert.throws(() => c.setConfig(0, new Uint8Array(8)), BackendRefused);
    assert.deepEqual(c.getConfig(0, 8), capacity);
  });
});

Deno.test("GET_VRING_BASE returns the next avail index; a stopped ring restarts", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, { queueSize: 16 });
    const d = s.driver;
    for (let i = 0; i < 5; i++) assert.equal(d.write(0, i, pattern(512, i)).status, BlkStatus.OK);
    assert.equal(d.stopQueue(0), 5);

    // While stopped, nothing is served even after a kick.
    const pending = [0, 1, 2].map((i) =>
      d.submit(0, { op: "write", sector: 20 + i, data: pattern(512, 20 + i) })
    );
    d.notify(0);
    const usedBefore = d.ring(0).queue.usedIndex();
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 150);
    assert.equal(d.ring(0).queue.usedIndex(), usedBefore, "a stopped ring is not served");
    assert.equal(d.inFlight(0), 3);

    d.restartQueue(0, 5);
    const done = d.waitCompletions(0, 3);
    assert.deepEqual(done.map((c) => c.token).sort((a, b) => a - b), pending);
    assert.ok(done.every((c) => c.status === BlkStatus.OK));
    for (let i = 0; i < 3; i++) assert.deepEqual(d.read(0, 20 + i, 512).data, pattern(512, 20 + i));
    assert.equal(d.stopQueue(0), 5 + 3 + 3);
    // Stopping twice reports the same position.
    assert.equal(d.stopQueue(0), 11);
    d.restartQueue(0);
    // Enough requests to wrap the 16-entry ring several times.
    for (let i = 0; i < 40; i++) assert.equal(d.read(0, i % 8, 512).status, BlkStatus.OK);
    assert.equal(d.stopQueue(0), 51);
  });
});

Deno.test("ADD_MEM_REG/REM_MEM_REG: I/O through an added region, refused once removed", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath);
    assert.equal(s.client.getMaxMemSlots(), 509);
    const extra = SharedGuestMemory.create({ size: 256 * 1024, guestBase: 0x8000_0000 });
    try {
      const [region] = extra.regionDescs();
      s.client.addMemReg(region, extra.fd);
      const buffer = extra.alloc(8192, 512);
      extra.bytes(buffer, 8192).set(pattern(8192, 31));
      const w = s.driver.submit(0, { op: "write", sector: 40, buffer, length: 8192 });
      assert.equal(s.driver.waitFor(0, w).status, BlkStatus.OK);
      extra.bytes(buffer, 8192).fill(0);
      const r = s.driver.submit(0, { op: "read", sector: 40, buffer, length: 8192 });
      assert.equal(s.driver.waitFor(0, r).status, BlkStatus.OK);
      assert.deepEqual(extra.bytes(buffer, 8192), pattern(8192, 31));

      s.client.remMemReg(region);
      assert.throws(() => s.client.remMemReg(region), BackendRefused, "already removed");
      const gone = s.driver.submit(0, { op: "read", sector: 40, buffer, length: 8192 });
      const c = s.driver.waitFor(0, gone);
      assert.equal(c.written, 0, "the buffer is no longer guest memory");
      assert.equal(c.status, STATUS_UNSET);
      assert.deepEqual(s.driver.read(0, 40, 8192).data, pattern(8192, 31));
    } finally {
      extra.close();
    }
  });
});

Deno.test("RESET_DEVICE, then a new set-up on the same connection", async () => {
  await withVhostd({ args: ["--ram", `${DISK_SIZE}`] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath, { memorySize: 16 * 2 ** 20 });
    assert.equal(s.driver.write(0, 7, pattern(1024, 4)).status, BlkStatus.OK);
    s.driver.setWriteback(false);
    s.client.resetDevice();
    assert.equal(s.client.getConfig(32, 1)[0], 1, "reset restores writeback");
    const again = BlkDriver.setup(s.client, s.memory, { numQueues: 1, queueSize: 32 });
    try {
      assert.deepEqual(again.read(0, 7, 1024).data, pattern(1024, 4));
      assert.equal(again.stopQueue(0), 1, "the new ring starts from index 0");
    } finally {
      again.close();
    }
  });
});
