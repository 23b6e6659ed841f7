/**
 * Requests in flight through a real vhostd process: the image lives on a
 * FUSE file system of the test's own (scripts/latency_fs in hold mode) that
 * answers no read or write until the test releases them, so the test knows
 * exactly how many requests are in flight when it sends a control message.
 *
 * - GET_VRING_BASE with 32 requests in flight is answered only after they
 *   completed, with the exact index, every read's data right, no request
 *   completed twice.
 * - A new memory table and a dirty-log switch wait for the requests in
 *   flight before they are acknowledged.
 * - Dirty pages are marked when the data has landed: a log reader that
 *   clears the bits while the reads are in flight still finds every page.
 */

import assert from "node:assert/strict";
import { pollFd, POLLIN } from "../ffi/mod.ts";
import { BlkStatus, SECTOR_SIZE } from "../src/devices/blk/blk_spec.ts";
import {
  BlkDriver,
  type BlkRequest,
  DEFAULT_PROTOCOL_FEATURES,
  SharedGuestMemory,
  VhostUserClient,
} from "../src/frontend/mod.ts";
import {
  bit,
  encodeMemoryTable,
  encodeMessage,
  encodeU64,
  encodeVringState,
  FLAG_NEED_REPLY,
  FrontendRequest,
  ProtocolFeature,
  VirtioFeature,
} from "../src/protocol/mod.ts";
import { pattern } from "./support/blk_fixture.ts";
import { HeldBacking } from "./support/held_backing.ts";
import { SharedLog } from "./support/shared_log.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const BLOCK = 4096;
const IMAGE_SIZE = 4 << 20;
const PAGE = 4096;
const VERSION_1 = 0x1;

interface Session {
  client: VhostUserClient;
  memory: SharedGuestMemory;
  driver: BlkDriver;
  close(): void;
}

function openSession(socketPath: string, protocolFeatures = DEFAULT_PROTOCOL_FEATURES): Session {
  const client = VhostUserClient.connect(socketPath);
  const memory = SharedGuestMemory.create({ size: 8 << 20 });
  try {
    const driver = BlkDriver.setup(client, memory, {
      numQueues: 1,
      queueSize: 128,
      eventIdx: true,
      protocolFeatures,
      bufferPoolBytes: 4 << 20,
    });
    return {
      client,
      memory,
      driver,
      close() {
        driver.close();
        client.close();
        memory.close();
      },
    };
  } catch (e) {
    client.close();
    memory.close();
    throw e;
  }
}

/** Sends a request without waiting for its answer. */
function send(client: VhostUserClient, request: number, payload: Uint8Array, fds: number[] = []) {
  client.sendRaw(encodeMessage(request, VERSION_1 | FLAG_NEED_REPLY, payload), fds);
}

/** True when nothing arrives on the socket within `ms` (the back-end holds its answer back). */
function silentFor(client: VhostUserClient, ms: number): boolean {
  return (pollFd(client.fd, POLLIN, ms) & POLLIN) === 0;
}

type ReadRequest = Extract<BlkRequest, { op: "read" }>;

/** `count` reads of distinct 4 KiB blocks: block i at byte (3 i + 1) * 4096. */
function reads(count: number): ReadRequest[] {
  return Array.from({ length: count }, (_, i) => ({
    op: "read" as const,
    sector: ((3 * i + 1) * BLOCK) / SECTOR_SIZE,
    length: BLOCK,
  }));
}

function expectedBlock(disk: Uint8Array, request: ReadRequest): Uint8Array {
  const offset = request.sector * SECTOR_SIZE;
  return disk.subarray(offset, offset + BLOCK);
}

Deno.test("GET_VRING_BASE with 32 requests in flight answers after they complete, at the exact index", async () => {
  const disk = pattern(IMAGE_SIZE, 71);
  await using backing = await HeldBacking.start(disk);
  await withVhostd({ args: ["--file", backing.image, "--aio", "io_uring"] }, async (vhostd) => {
    const s = openSession(vhostd.socketPath);
    try {
      const requests = reads(32);
      const tokens = requests.map((r) => s.driver.submit(0, r));
      s.driver.notify(0);
      await backing.waitHeld(32);

      send(s.client, FrontendRequest.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
      assert.ok(silentFor(s.client, 300), "GET_VRING_BASE was answered with 32 reads in flight");
      backing.release();
      const reply = s.client.receiveReply(FrontendRequest.GET_VRING_BASE);
      const view = new DataView(reply.payload.buffer, reply.payload.byteOffset);
      assert.equal(view.getUint32(0, true), 0);
      assert.equal(view.getUint32(4, true), 32, "next avail index is exactly the 32 popped");

      // All 32 are in the used ring already: the back-end finished them before answering.
      const done = s.driver.waitCompletions(0, 32, 1000);
      assert.equal(done.length, 32);
      assert.deepEqual(
        done.map((c) => c.token).sort((a, b) => a - b),
        [...tokens].sort((a, b) => a - b),
      );
      for (const c of done) {
        const i = tokens.indexOf(c.token);
        assert.equal(c.status, BlkStatus.OK);
        assert.equal(c.written, BLOCK + 1);
        assert.deepEqual(c.data, expectedBlock(disk, requests[i]));
      }
      assert.equal(s.driver.inFlight(0), 0, "no request completed twice or lost");

      // The ring restarts from there and keeps serving.
      s.driver.restartQueue(0, 32);
      backing.stopHolding();
      const again = s.driver.read(0, 8, BLOCK);
      assert.equal(again.status, BlkStatus.OK);
      assert.deepEqual(again.data, disk.subarray(8 * SECTOR_SIZE, 8 * SECTOR_SIZE + BLOCK));
    } finally {
      s.close();
    }
  });
});

Deno.test("a new memory table waits for the requests in flight before it is acknowledged", async () => {
  const disk = pattern(IMAGE_SIZE, 72);
  await using backing = await HeldBacking.start(disk);
  await withVhostd({ args: ["--file", backing.image, "--aio", "io_uring"] }, async (vhostd) => {
    const s = openSession(vhostd.socketPath);
    try {
      const requests = reads(16);
      const tokens = requests.map((r) => s.driver.submit(0, r));
      s.driver.notify(0);
      await backing.waitHeld(16);

      // The same memory again through fresh fds, as a front-end does after a hotplug.
      send(
        s.client,
        FrontendRequest.SET_MEM_TABLE,
        encodeMemoryTable(s.memory.regionDescs()),
        s.memory.regionFds(),
      );
      assert.ok(silentFor(s.client, 300), "SET_MEM_TABLE was acknowledged with reads in flight");
      backing.release();
      const ack = s.client.receiveReply(FrontendRequest.SET_MEM_TABLE);
      assert.equal(new DataView(ack.payload.buffer).getBigUint64(0, true), 0n);

      const done = s.driver.waitCompletions(0, 16, 5000);
      for (const c of done) {
        assert.equal(c.status, BlkStatus.OK);
        assert.deepEqual(c.data, expectedBlock(disk, requests[tokens.indexOf(c.token)]));
      }
      backing.stopHolding();
      assert.equal(s.driver.read(0, 0, BLOCK).status, BlkStatus.OK, "serves on the new table");
    } finally {
      s.close();
    }
  });
});

Deno.test("dirty pages are marked when the data lands: a log cleared while reads are in flight still shows them", async () => {
  const disk = pattern(IMAGE_SIZE, 73);
  await using backing = await HeldBacking.start(disk);
  const features = DEFAULT_PROTOCOL_FEATURES | bit(ProtocolFeature.LOG_SHMFD);
  await withVhostd({ args: ["--file", backing.image, "--aio", "io_uring"] }, async (vhostd) => {
    const s = openSession(vhostd.socketPath, features);
    const log = new SharedLog(PAGE, 0);
    try {
      log.share(s.client);
      const logAll = s.driver.features | bit(VirtioFeature.LOG_ALL);
      s.client.setFeatures(logAll);

      const requests = reads(8);
      const tokens = requests.map((r) => s.driver.submit(0, r));
      const buffers = tokens.map((t) => s.driver.dataBufferGpa(0, t)!);
      s.driver.notify(0);
      await backing.waitHeld(8);
      // What a front-end does when it syncs the log mid-flight: read and clear.
      log.bits.fill(0);
      backing.release();
      const done = s.driver.waitCompletions(0, 8, 5000);
      assert.equal(done.length, 8);

      const marked = new Set(log.markedPages());
      for (const c of done) {
        const i = tokens.indexOf(c.token);
        assert.deepEqual(c.data, expectedBlock(disk, requests[i]));
        const buffer = buffers[i];
        assert.ok(
          marked.has(Math.floor(buffer / PAGE)),
          `page of request ${i}'s data (0x${buffer.toString(16)}) is marked after it landed`,
        );
      }
    } finally {
      s.close();
      log.close();
    }
  });
});

Deno.test("switching the dirty log on waits for the requests in flight", async () => {
  const disk = pattern(IMAGE_SIZE, 74);
  await using backing = await HeldBacking.start(disk);
  const features = DEFAULT_PROTOCOL_FEATURES | bit(ProtocolFeature.LOG_SHMFD);
  await withVhostd({ args: ["--file", backing.image, "--aio", "io_uring"] }, async (vhostd) => {
    const s = openSession(vhostd.socketPath, features);
    const log = new SharedLog(PAGE, 0);
    try {
      log.share(s.client);
      const requests = reads(8);
      const tokens = requests.map((r) => s.driver.submit(0, r));
      s.driver.notify(0);
      await backing.waitHeld(8);
      send(
        s.client,
        FrontendRequest.SET_FEATURES,
        encodeU64(s.driver.features | bit(VirtioFeature.LOG_ALL)),
      );
      assert.ok(
        silentFor(s.client, 300),
        "SET_FEATURES(LOG_ALL) acknowledged with reads in flight",
      );
      backing.release();
      const ack = s.client.receiveReply(FrontendRequest.SET_FEATURES);
      assert.equal(new DataView(ack.payload.buffer).getBigUint64(0, true), 0n);
      const done = s.driver.waitCompletions(0, 8, 5000);
      for (const c of done) {
        assert.deepEqual(c.data, expectedBlock(disk, requests[tokens.indexOf(c.token)]));
      }
      // Logging is on now: a new read marks its page.
      backing.stopHolding();
      log.bits.fill(0);
      const token = s.driver.submit(0, { op: "read", sector: 0, length: BLOCK });
      const buffer = s.driver.dataBufferGpa(0, token)!;
      const [c] = s.driver.waitCompletions(0, 1, 5000);
      assert.equal(c.token, token);
      assert.ok(log.markedPages().includes(Math.floor(buffer / PAGE)));
    } finally {
      s.close();
      log.close();
    }
  });
});
