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
  type BlkCompletion,
  type BlkRequest,
  DEFAULT_PROTOCOL_FEATURES,
  type VhostUserClient,
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
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { HeldBacking } from "./support/held_backing.ts";
import { SharedLog } from "./support/shared_log.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const BLOCK = 4096;
const IMAGE_SIZE = 4 << 20;
const PAGE = 4096;
const VERSION_1 = 0x1;
const LOG_FEATURES = DEFAULT_PROTOCOL_FEATURES | bit(ProtocolFeature.LOG_SHMFD);

type ReadRequest = Extract<BlkRequest, { op: "read" }>;

/** A vhostd serving a held image, and a driver with `count` reads in flight inside it. */
interface Scenario {
  backing: HeldBacking;
  s: BlkFixture;
  disk: Uint8Array;
  requests: ReadRequest[];
  tokens: number[];
  /** Where each read's data lands. */
  buffers: number[];
}

/**
 * Starts vhostd on a held image of `disk`, opens a session (`before` runs
 * once it is set up), submits `count` reads of distinct blocks and resolves
 * once all of them are held by the backing, so inside vhostd.
 */
async function withReadsInFlight(
  seed: number,
  count: number,
  protocolFeatures: bigint,
  body: (scenario: Scenario) => void | Promise<void>,
  before: (s: BlkFixture) => void = () => {},
): Promise<void> {
  const disk = pattern(IMAGE_SIZE, seed);
  await using backing = await HeldBacking.start(disk);
  await withVhostd({ args: ["--file", backing.image, "--aio", "io_uring"] }, async (vhostd) => {
    using s = BlkFixture.open(vhostd.socketPath, {
      queueSize: 128,
      eventIdx: true,
      protocolFeatures,
      bufferPoolBytes: 4 << 20,
    });
    before(s);
    // Block i at byte (3 i + 1) * 4096: distinct blocks, none at 0.
    const requests = Array.from({ length: count }, (_, i) => ({
      op: "read" as const,
      sector: ((3 * i + 1) * BLOCK) / SECTOR_SIZE,
      length: BLOCK,
    }));
    const tokens = requests.map((r) => s.driver.submit(0, r));
    const buffers = tokens.map((t) => s.driver.dataBufferGpa(0, t)!);
    s.driver.notify(0);
    await backing.waitHeld(count);
    await body({ backing, s, disk, requests, tokens, buffers });
  });
}

/**
 * Sends `request` with NEED_REPLY, checks that no answer comes while the
 * reads are held, releases them and checks the acknowledgement (0).
 */
function ackedOnlyAfterRelease(
  { s, backing }: Scenario,
  request: number,
  payload: Uint8Array,
  fds: number[] = [],
): void {
  s.client.sendRaw(encodeMessage(request, VERSION_1 | FLAG_NEED_REPLY, payload), fds);
  assert.ok(silentFor(s.client, 300), `request ${request} was answered with reads in flight`);
  backing.release();
  const ack = s.client.receiveReply(request);
  assert.equal(new DataView(ack.payload.buffer).getBigUint64(0, true), 0n);
}

/** True when nothing arrives on the socket within `ms` (the back-end holds its answer back). */
function silentFor(client: VhostUserClient, ms: number): boolean {
  return (pollFd(client.fd, POLLIN, ms) & POLLIN) === 0;
}

/** Waits for every read of the scenario and checks its status, length and data. */
function expectAllRead({ s, disk, requests, tokens }: Scenario): BlkCompletion[] {
  const done = s.driver.waitCompletions(0, requests.length, 5000);
  assert.equal(done.length, requests.length);
  assert.deepEqual(
    done.map((c) => c.token).sort((a, b) => a - b),
    [...tokens].sort((a, b) => a - b),
  );
  for (const c of done) {
    const request = requests[tokens.indexOf(c.token)];
    const offset = request.sector * SECTOR_SIZE;
    assert.equal(c.status, BlkStatus.OK);
    assert.equal(c.written, BLOCK + 1);
    assert.deepEqual(c.data, disk.subarray(offset, offset + BLOCK));
  }
  assert.equal(s.driver.inFlight(0), 0, "no request completed twice or lost");
  return done;
}

Deno.test("GET_VRING_BASE with 32 requests in flight answers after they complete, at the exact index", async () => {
  await withReadsInFlight(71, 32, DEFAULT_PROTOCOL_FEATURES, (scenario) => {
    const { s, backing, disk } = scenario;
    s.client.sendRaw(
      encodeMessage(
        FrontendRequest.GET_VRING_BASE,
        VERSION_1 | FLAG_NEED_REPLY,
        encodeVringState({ index: 0, num: 0 }),
      ),
    );
    assert.ok(silentFor(s.client, 300), "GET_VRING_BASE was answered with 32 reads in flight");
    backing.release();
    const reply = s.client.receiveReply(FrontendRequest.GET_VRING_BASE);
    const view = new DataView(reply.payload.buffer, reply.payload.byteOffset);
    assert.equal(view.getUint32(0, true), 0);
    assert.equal(view.getUint32(4, true), 32, "next avail index is exactly the 32 popped");
    // All 32 are in the used ring already: the back-end finished them before answering.
    expectAllRead(scenario);

    // The ring restarts from there and keeps serving.
    s.driver.restartQueue(0, 32);
    backing.stopHolding();
    const again = s.driver.read(0, 8, BLOCK);
    assert.equal(again.status, BlkStatus.OK);
    assert.deepEqual(again.data, disk.subarray(8 * SECTOR_SIZE, 8 * SECTOR_SIZE + BLOCK));
  });
});

Deno.test("a new memory table waits for the requests in flight before it is acknowledged", async () => {
  await withReadsInFlight(72, 16, DEFAULT_PROTOCOL_FEATURES, (scenario) => {
    const { s, backing } = scenario;
    // The same memory again through fresh fds, as a front-end does after a hotplug.
    ackedOnlyAfterRelease(
      scenario,
      FrontendRequest.SET_MEM_TABLE,
      encodeMemoryTable(s.memory.regionDescs()),
      s.memory.regionFds(),
    );
    expectAllRead(scenario);
    backing.stopHolding();
    assert.equal(s.driver.read(0, 0, BLOCK).status, BlkStatus.OK, "serves on the new table");
  });
});

Deno.test("dirty pages are marked when the data lands: a log cleared while reads are in flight still shows them", async () => {
  using log = new SharedLog(PAGE, 0);
  await withReadsInFlight(73, 8, LOG_FEATURES, (scenario) => {
    // What a front-end does when it syncs the log mid-flight: read and clear.
    log.bits.fill(0);
    scenario.backing.release();
    const done = expectAllRead(scenario);
    const marked = new Set(log.markedPages());
    for (const c of done) {
      const i = scenario.tokens.indexOf(c.token);
      const buffer = scenario.buffers[i];
      assert.ok(
        marked.has(Math.floor(buffer / PAGE)),
        `page of request ${i}'s data (0x${buffer.toString(16)}) is marked after it landed`,
      );
    }
  }, (s) => {
    log.share(s.client);
    s.client.setFeatures(s.driver.features | bit(VirtioFeature.LOG_ALL));
  });
});

Deno.test("switching the dirty log on waits for the requests in flight", async () => {
  using log = new SharedLog(PAGE, 0);
  await withReadsInFlight(74, 8, LOG_FEATURES, (scenario) => {
    const { s, backing } = scenario;
    ackedOnlyAfterRelease(
      scenario,
      FrontendRequest.SET_FEATURES,
      encodeU64(s.driver.features | bit(VirtioFeature.LOG_ALL)),
    );
    expectAllRead(scenario);
    // Logging is on now: a new read marks its page.
    backing.stopHolding();
    log.bits.fill(0);
    const token = s.driver.submit(0, { op: "read", sector: 0, length: BLOCK });
    const buffer = s.driver.dataBufferGpa(0, token)!;
    const [c] = s.driver.waitCompletions(0, 1, 5000);
    assert.equal(c.token, token);
    assert.ok(log.markedPages().includes(Math.floor(buffer / PAGE)));
  }, (s) => log.share(s.client));
});
