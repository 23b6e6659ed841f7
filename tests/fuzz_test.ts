/**
 * vhostd's own fuzzer: seeded and bounded, it sends random and mutated
 * control messages (with random fds of every kind), random descriptor rings
 * and random FUSE requests at real `vhostd blk` and `vhostd fs` processes.
 * After every batch a fresh front-end must connect and do verified I/O, the
 * daemon's fd count must be back at its baseline, and the daemon must still
 * be running.
 *
 * A failure names its seed and batch; replay one seed with
 * `VHOSTD_FUZZ_SEED=N deno test --allow-all tests/fuzz_test.ts`.
 * `VHOSTD_FUZZ_BATCHES=N` runs more batches per seed.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo } from "./support/fd_checks.ts";
import {
  closeQuietly,
  eventfd,
  ftruncate,
  memfdCreate,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  O_RDWR,
  openFile,
  pipe2,
  pollFd,
  POLLIN,
} from "../ffi/mod.ts";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { BackendDisconnected, type VhostUserClient } from "../src/frontend/mod.ts";
import {
  encodeConfig,
  encodeInflightDesc,
  encodeLogArea,
  encodeMemoryTable,
  encodeMessage,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringFdIndex,
  encodeVringState,
  FLAG_NEED_REPLY,
  FrontendRequest as R,
  VHOST_USER_VERSION,
} from "../src/protocol/mod.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../src/virtqueue/layout.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { FsFixture, withVhostdFs } from "./support/fs_fixture.ts";
import { Random } from "./support/fuzz_random.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const ONE_SEED = Deno.env.get("VHOSTD_FUZZ_SEED");
const SEEDS = ONE_SEED !== undefined ? [Number(ONE_SEED)] : [1, 2, 3];
const BATCHES = Number(Deno.env.get("VHOSTD_FUZZ_BATCHES") ?? 12);
const MESSAGES_PER_BATCH = 24;
/** Wall-clock bound of one device's run; batches left then are skipped (and said so). */
const TIME_BUDGET_MS = 40_000;
const V1 = VHOST_USER_VERSION;
/** How long the daemon may take to close a finished session's fds on a busy machine. */
const FD_SETTLE_MS = 15_000;

/** Every request the protocol defines, and a few it does not. */
const REQUESTS = [
  ...Array.from({ length: 43 }, (_, i) => i + 1),
  0,
  44,
  45,
  99,
  0xffff,
  0xffff_ffff,
];

/** Requests that carry fds, for which an fd is attached more often. */
const FD_REQUESTS = new Set<number>([
  R.SET_MEM_TABLE,
  R.SET_LOG_BASE,
  R.SET_LOG_FD,
  R.SET_VRING_KICK,
  R.SET_VRING_CALL,
  R.SET_VRING_ERR,
  R.SET_BACKEND_REQ_FD,
  R.SET_INFLIGHT_FD,
  R.ADD_MEM_REG,
  R.SET_DEVICE_STATE_FD,
]);

/**
 * Pipe ends whose peer went to the back-end, kept open until the batch's
 * health check is over (a hung VMM or migration helper holding a pipe).
 */
const heldPeers: number[] = [];

/** Requests that change a ring's or the memory's state. */
const STATEFUL = [
  ...FD_REQUESTS,
  R.SET_VRING_NUM,
  R.SET_VRING_ADDR,
  R.SET_VRING_BASE,
  R.GET_VRING_BASE,
  R.SET_VRING_ENABLE,
  R.SET_FEATURES,
  R.RESET_DEVICE,
  R.REM_MEM_REG,
  R.CHECK_DEVICE_STATE,
];

/** One fd of a random kind (the caller closes it after sending). */
function randomFd(rnd: Random, owned: number[]): number {
  const kind = rnd.below(6);
  let fd: number;
  switch (kind) {
    case 0:
      fd = eventfd(rnd.below(3));
      break;
    case 1:
    case 2: {
      const ends = pipe2();
      (rnd.chance(0.5) ? heldPeers : owned).push(ends[kind === 1 ? 1 : 0]);
      fd = ends[kind === 1 ? 0 : 1];
      break;
    }
    case 3:
      fd = openFile("/dev/null", O_RDWR | O_CLOEXEC);
      break;
    case 4: {
      fd = memfdCreate("vhostd-fuzz");
      ftruncate(fd, rnd.pick([0, 4096, 1 << 20, 3]));
      break;
    }
    default:
      fd = openFile("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  owned.push(fd);
  return fd;
}

/** A payload shaped like `request`'s (often), with random fields and sometimes mutated. */
function payloadFor(rnd: Random, request: number, s: BlkFixture | FsFixture): Uint8Array {
  const index = rnd.chance(0.6) ? 0 : rnd.chance(0.8) ? rnd.below(3) : rnd.u32() & 0xff;
  const big = () => BigInt(rnd.u32()) * BigInt(rnd.below(4) === 0 ? 0x1_0000 : 1);
  let valid: Uint8Array;
  switch (request) {
    case R.SET_FEATURES:
    case R.SET_PROTOCOL_FEATURES:
    case R.SET_STATUS:
      valid = encodeU64(rnd.chance(0.5) ? s.client.getFeatures() : big());
      break;
    case R.SET_VRING_NUM:
    case R.SET_VRING_BASE:
    case R.GET_VRING_BASE:
    case R.SET_VRING_ENABLE:
      valid = encodeVringState({ index, num: rnd.pick([0, 1, 16, 64, 255, 0x1_0000, rnd.u32()]) });
      break;
    case R.SET_VRING_ADDR: {
      const ring = s.driver.ring(0);
      const addr = ring.vringAddress();
      valid = encodeVringAddress(
        rnd.chance(0.5) ? { ...addr, index } : {
          ...addr,
          index,
          descUserAddr: big(),
          flags: rnd.below(4),
        },
      );
      break;
    }
    case R.SET_VRING_KICK:
    case R.SET_VRING_CALL:
    case R.SET_VRING_ERR:
      valid = encodeVringFdIndex({ index, noFd: rnd.chance(0.3) });
      break;
    case R.SET_MEM_TABLE: {
      const regions = s.memory.regionDescs();
      valid = encodeMemoryTable(
        rnd.chance(0.5) ? regions : regions.map((r) => ({ ...r, size: big(), guestAddr: big() })),
      );
      break;
    }
    case R.ADD_MEM_REG:
    case R.REM_MEM_REG: {
      const [region] = s.memory.regionDescs();
      valid = encodeSingleRegion(rnd.chance(0.5) ? region : { ...region, guestAddr: big() });
      break;
    }
    case R.SET_LOG_BASE:
      valid = encodeLogArea({ mmapSize: BigInt(rnd.pick([0, 4096, 1 << 20])), mmapOffset: 0n });
      break;
    case R.GET_CONFIG:
    case R.SET_CONFIG: {
      const size = rnd.pick([0, 1, 8, 60, 256]);
      valid = encodeConfig({
        offset: rnd.pick([0, 20, 59, 4096]),
        size,
        flags: rnd.below(2),
        data: rnd.bytes(size),
      });
      break;
    }
    case R.GET_INFLIGHT_FD:
    case R.SET_INFLIGHT_FD:
      valid = encodeInflightDesc({
        mmapSize: BigInt(rnd.pick([0, 4096, 2112, 1 << 20])),
        mmapOffset: BigInt(rnd.pick([0, 4096])),
        numQueues: rnd.pick([0, 1, 2, 65535]),
        queueSize: rnd.pick([0, 64, 128, 256, 32768]),
      });
      break;
    case R.SET_DEVICE_STATE_FD: {
      valid = new Uint8Array(8);
      new DataView(valid.buffer).setUint32(0, rnd.below(3), true);
      new DataView(valid.buffer).setUint32(4, rnd.below(2), true);
      break;
    }
    default:
      valid = rnd.bytes(rnd.pick([0, 0, 4, 8, 16, 40]));
  }
  if (rnd.chance(0.15)) return rnd.bytes(rnd.below(80));
  return rnd.chance(0.3) ? rnd.mutate(valid) : valid;
}

/** Reads and discards whatever the back-end answered so far; false once it hung up. */
function drainReplies(client: VhostUserClient): boolean {
  while ((pollFd(client.fd, POLLIN, 0) & POLLIN) !== 0) {
    try {
      client.receiveReply().fds.forEach(closeQuietly);
    } catch (e) {
      if (e instanceof BackendDisconnected) return false;
      // A reply the client cannot make sense of: the stream is unusable.
      return false;
    }
  }
  return true;
}

/** One batch of random control messages on a negotiated session. */
function controlBatch(rnd: Random, s: BlkFixture | FsFixture): void {
  for (let m = 0; m < MESSAGES_PER_BATCH; m++) {
    // Requests that change ring or memory state are where bugs live: pick them more often.
    const request = rnd.chance(0.4) ? rnd.pick(STATEFUL) : rnd.pick(REQUESTS);
    const payload = payloadFor(rnd, request, s);
    const flags = rnd.chance(0.9) ? V1 | (rnd.chance(0.7) ? FLAG_NEED_REPLY : 0) : rnd.u32();
    let bytes = encodeMessage(request, V1, payload);
    new DataView(bytes.buffer).setUint32(4, flags, true);
    if (rnd.chance(0.05)) {
      // A size field that disagrees with the payload.
      new DataView(bytes.buffer).setUint32(8, rnd.pick([0, 1, payload.length + 8, 0x1000]), true);
    }
    if (rnd.chance(0.03)) bytes = bytes.subarray(0, rnd.below(bytes.length));
    const owned: number[] = [];
    const fds: number[] = [];
    const fdCount = FD_REQUESTS.has(request)
      ? (rnd.chance(0.8) ? 1 : rnd.below(4))
      : (rnd.chance(0.05) ? 1 + rnd.below(2) : 0);
    for (let i = 0; i < fdCount; i++) fds.push(randomFd(rnd, owned));
    try {
      s.client.sendRaw(bytes, fds);
    } catch {
      return; // the back-end hung up: that ends the batch
    } finally {
      owned.forEach(closeQuietly);
    }
    // GET_VRING_BASE and the like may take a moment; a short wait keeps replies flowing.
    pollFd(s.client.fd, POLLIN, 5);
    if (!drainReplies(s.client)) return;
    // Requests through whatever state the messages left (call fds, rings, memory).
    if (rnd.chance(0.3)) tryRequest(s);
  }
}

/** Sends one request on queue 0 (a read, or a FUSE lookup) and waits briefly; failures are fine. */
function tryRequest(s: BlkFixture | FsFixture): void {
  try {
    if (s instanceof BlkFixture) {
      s.driver.submit(0, { op: "read", sector: 0, length: 512 });
      s.driver.waitCompletions(0, 1, 100);
    } else {
      s.driver.timeoutMs = 100;
      s.driver.lookup(1n, "present");
    }
  } catch {
    // Refused, timed out or disconnected: the state was hostile; the health check decides.
  }
}

/** One batch of random descriptor chains on a running blk ring. */
function ringBatch(rnd: Random, s: BlkFixture): void {
  const ring = s.driver.ring(0);
  const q = ring.queue;
  const size = q.size;
  const area = s.memory.alloc(64 * 1024, 4096);
  for (let i = 0; i < MESSAGES_PER_BATCH; i++) {
    const index = rnd.below(size);
    const addr = rnd.chance(0.8) ? area + rnd.below(60 * 1024) : rnd.u32() * rnd.below(3);
    const len = rnd.pick([0, 1, 15, 16, 17, 512, 4096, 65536, rnd.u32()]);
    const flags = rnd.chance(0.7)
      ? rnd.pick([0, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE])
      : rnd.below(8) | (rnd.chance(0.3) ? VIRTQ_DESC_F_INDIRECT : 0);
    q.writeRawDescriptor(index, addr, len, flags, rnd.chance(0.8) ? rnd.below(size) : rnd.u32());
    if (rnd.chance(0.3)) s.memory.bytes(area, 16).set(rnd.bytes(16));
    if (rnd.chance(0.5)) q.publishRaw(rnd.chance(0.9) ? rnd.below(size) : rnd.u32() & 0xffff);
  }
  s.driver.notify(0);
  // Give the back-end a moment to chew; the ring may break, which is fine.
  pollFd(s.client.fd, POLLIN, 20);
  drainReplies(s.client);
}

/** One batch of random and mutated FUSE requests. */
function fuseBatch(rnd: Random, s: FsFixture): void {
  for (let i = 0; i < MESSAGES_PER_BATCH / 2; i++) {
    const length = 40 + rnd.below(200);
    const bytes = rnd.bytes(length);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, rnd.chance(0.8) ? length : rnd.u32(), true);
    view.setUint32(4, rnd.chance(0.9) ? 1 + rnd.below(52) : rnd.u32(), true);
    view.setBigUint64(16, BigInt(rnd.pick([0, 1, 1, 2, rnd.u32()])), true);
    try {
      s.driver.send(rnd.chance(0.2) ? rnd.mutate(bytes) : bytes, rnd.pick([0, 8, 16, 512, 4096]), {
        requestSegments: 1 + rnd.below(3),
        replySegments: 1 + rnd.below(3),
      });
    } catch {
      return; // a request the back-end does not return (a broken ring) ends the batch
    }
  }
}

/** Checks the daemon after a batch: alive, serving, no fd leaked. */
async function assertHealthy(
  vhostd: VhostdProcess,
  baseline: number,
  where: string,
  verify: () => void,
): Promise<void> {
  assert.equal(vhostd.exitStatus, undefined, `${where}: vhostd exited`);
  try {
    verify();
  } catch (e) {
    throw new Error(`${where}: a fresh session failed: ${e instanceof Error ? e.message : e}`);
  }
  // Sessions end asynchronously in the daemon: wait for the count to come back (a leak never
  // does), then make sure it stays there.
  const fds = await vhostd.fdCountDownTo(baseline, FD_SETTLE_MS);
  assertFdsBackTo(
    fds,
    baseline,
    `${where}: fds ${baseline} before, ${fds} after:\n${vhostd.fdTargets()}`,
  );
}

/** Runs `batch` for every seed and batch number within the time budget. */
async function fuzz(
  vhostd: VhostdProcess,
  open: () => BlkFixture | FsFixture,
  batch: (rnd: Random, s: BlkFixture | FsFixture, n: number) => void,
  verify: () => void,
): Promise<void> {
  verify();
  const baseline = await vhostd.settledFdCount();
  const started = performance.now();
  let ran = 0;
  for (const seed of SEEDS) {
    const rnd = new Random(seed);
    for (let n = 0; n < BATCHES; n++) {
      if (performance.now() - started > TIME_BUDGET_MS) {
        console.log(`fuzz: time budget reached after ${ran} batches (seed ${seed}, batch ${n})`);
        return;
      }
      const where = `seed ${seed} batch ${n} (replay: VHOSTD_FUZZ_SEED=${seed})`;
      try {
        using s = open();
        batch(rnd, s, n);
      } catch (e) {
        // Set-up itself may fail only if the daemon is unwell: the health check says.
        if (!(e instanceof BackendDisconnected)) {
          await assertHealthy(vhostd, baseline, where, verify);
        }
      }
      try {
        await assertHealthy(vhostd, baseline, where, verify);
      } finally {
        heldPeers.splice(0).forEach(closeQuietly);
      }
      ran++;
    }
  }
  console.log(`fuzz: ${ran} batches in ${Math.round(performance.now() - started)} ms`);
}

async function fuzzBlk(args: string[]): Promise<void> {
  await withVhostd({ args }, async (vhostd) => {
    const data = pattern(4096, 5);
    const verify = () => {
      using s = BlkFixture.open(vhostd.socketPath, { queueSize: 64 });
      assert.equal(s.driver.write(0, 16, data).status, BlkStatus.OK);
      const r = s.driver.read(0, 16, 4096);
      assert.equal(r.status, BlkStatus.OK);
      assert.deepEqual(r.data, data);
    };
    await fuzz(
      vhostd,
      () => BlkFixture.open(vhostd.socketPath, { queueSize: 64 }),
      (rnd, s, n) => n % 3 === 2 ? ringBatch(rnd, s as BlkFixture) : controlBatch(rnd, s),
      verify,
    );
  });
}

Deno.test("fuzz: vhostd blk survives random control messages and rings", async () => {
  await fuzzBlk(["--ram", "1M"]);
});

Deno.test("fuzz: vhostd blk on io_uring (requests complete later) survives the same", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-fuzz-" });
  try {
    const image = `${dir}/disk.img`;
    await Deno.writeFile(image, new Uint8Array(1 << 20));
    await fuzzBlk(["--file", image, "--aio", "io_uring"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function fuzzFs(args: string[]): Promise<void> {
  await withVhostdFs(args, async (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/present`, "fuzz");
    const verify = () => {
      using s = FsFixture.open(vhostd.socketPath);
      const entry = s.driver.lookup(1n, "present");
      assert.ok(entry.nodeid > 1n);
    };
    await fuzz(
      vhostd,
      () => FsFixture.open(vhostd.socketPath),
      (rnd, s, n) => n % 2 === 1 ? fuseBatch(rnd, s as FsFixture) : controlBatch(rnd, s),
      verify,
    );
  });
}

Deno.test("fuzz: vhostd fs survives random control messages and FUSE requests", async () => {
  await fuzzFs([]);
});

Deno.test("fuzz: vhostd fs with READ/WRITE/FSYNC on io_uring survives the same", async () => {
  await fuzzFs(["--aio", "io_uring"]);
});
