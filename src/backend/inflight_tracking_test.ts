import assert from "node:assert/strict";
import {
  closeQuietly,
  dupFd,
  fstat,
  ftruncate,
  MAP_SHARED,
  mapArrayBuffer,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "../../ffi/mod.ts";
import { openBacking } from "../devices/blk/backing.ts";
import { BlkDevice } from "../devices/blk/blk_device.ts";
import { bit, hasBit, type InflightDesc, ProtocolFeature, VirtioFeature } from "../protocol/mod.ts";
import {
  DESC_STATE_SPLIT_SIZE,
  inflightQueueRegionSize,
  inflightRegionSize,
  QUEUE_REGION_HEADER_SIZE,
} from "../virtqueue/inflight_region.ts";
import type { SplitQueueState } from "../virtqueue/split_queue.ts";
import { RequestError, VhostUserBackend } from "./backend.ts";
import {
  copiesOf,
  guestView,
  RingDriver,
  SharedGuestMemory,
} from "../../tests/support/backend_doubles.ts";
import { InflightTracking } from "./inflight_tracking.ts";
import type { WorkerPool } from "./worker_pool.ts";
import type { InflightMapping } from "./worker_protocol.ts";

/** Mappings of vhostd's inflight memfds in this process. */
function inflightMappings(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n")
    .filter((line) => line.includes("/memfd:vhostd-inflight ")).length;
}

/** A mapping of an fd, as the front-end keeps the area. */
class FrontendView {
  readonly bytes: Uint8Array;
  readonly #base: bigint;
  readonly #size: number;
  constructor(fd: number, size: number) {
    this.#size = size;
    this.#base = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    this.bytes = new Uint8Array(mapArrayBuffer(this.#base, size));
  }
  close(): void {
    munmap(this.#base, this.#size);
  }
}

function request(numQueues: number, queueSize: number): InflightDesc {
  return { mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize };
}

function setEntry(queue: Uint8Array, head: number, inflight: number, counter: bigint): void {
  const at = QUEUE_REGION_HEADER_SIZE + head * DESC_STATE_SPLIT_SIZE;
  queue[at] = inflight;
  new DataView(queue.buffer, queue.byteOffset).setBigUint64(at + 8, counter, true);
}

Deno.test("GET_INFLIGHT_FD makes a zeroed memfd of num_queues * ALIGN_UP(16 * size + 2, 64)", () => {
  const t = new InflightTracking(4);
  const { desc, fd } = t.create(request(4, 128));
  try {
    assert.deepEqual(desc, { mmapSize: 8448n, mmapOffset: 0n, numQueues: 4, queueSize: 128 });
    assert.equal(fstat(fd).size, 8448);
    const view = new FrontendView(fd, 8448);
    assert.ok(view.bytes.every((b) => b === 0));
    view.close();
  } finally {
    closeQuietly(fd);
  }
  assert.throws(() => t.create(request(5, 128)), /device has 4/);
  assert.throws(() => t.create(request(0, 128)), RequestError);
  assert.throws(() => t.create(request(1, 0)), /queue size 0/);
  assert.equal(t.active, false);
});

Deno.test("SET_INFLIGHT_FD maps the area, slices it per queue and closes the fd", () => {
  const t = new InflightTracking(2);
  const { desc, fd } = t.create(request(2, 64));
  const keep = dupFd(fd);
  try {
    const before = inflightMappings();
    t.install(desc, fd);
    assert.deepEqual(copiesOf(keep), [], "the fd was closed after mapping");
    assert.equal(t.active, true);
    assert.equal(inflightMappings(), before + 1);
    const size = inflightQueueRegionSize(64);
    const s0 = t.slice(0)!;
    const s1 = t.slice(1)!;
    assert.equal(s0.size, size);
    assert.equal(s1.hostAddr - s0.hostAddr, BigInt(size));
    assert.equal(t.slice(2), undefined);
    // The front-end's view and ours are the same memory; desc_num was filled in.
    const view = new FrontendView(keep, Number(desc.mmapSize));
    assert.equal(new DataView(view.bytes.buffer).getUint16(size + 10, true), 64);
    s1.bytes[QUEUE_REGION_HEADER_SIZE] = 1;
    assert.equal(view.bytes[size + QUEUE_REGION_HEADER_SIZE], 1);
    view.close();
    t.close();
    assert.equal(inflightMappings(), before);
    assert.equal(t.slice(0), undefined);
  } finally {
    t.close();
    closeQuietly(keep);
  }
});

Deno.test("SET_INFLIGHT_FD refuses a bad area, keeps the current one and closes the fd", () => {
  const t = new InflightTracking(2);
  const good = t.create(request(1, 64));
  t.install(good.desc, good.fd);
  const current = t.slice(0)!.hostAddr;
  const attempt = (desc: InflightDesc, prepare?: (bytes: Uint8Array) => void): string => {
    const fd = memfdCreate("test-inflight");
    ftruncate(fd, 1 << 16);
    if (prepare) {
      const view = new FrontendView(fd, 1 << 16);
      prepare(view.bytes);
      view.close();
    }
    const keep = dupFd(fd);
    try {
      let message = "accepted";
      try {
        t.install(desc, fd);
      } catch (e) {
        assert.ok(e instanceof RequestError, String(e));
        message = e.message;
      }
      assert.deepEqual(copiesOf(keep), [], "the fd was closed");
      return message;
    } finally {
      closeQuietly(keep);
    }
  };
  const full = (numQueues: number, queueSize: number) => ({
    mmapSize: BigInt(inflightRegionSize(numQueues, queueSize)),
    mmapOffset: 0n,
    numQueues,
    queueSize,
  });
  assert.match(attempt({ ...full(2, 64), mmapSize: 2000n }), /too small for 2 queues of 64/);
  assert.match(attempt(full(3, 64)), /device has 2/);
  assert.match(attempt({ ...full(1, 64), queueSize: 0 }), /queue size 0/);
  assert.match(attempt({ ...full(1, 64), mmapOffset: 1n << 40n }), /offset/);
  assert.match(attempt({ ...full(1, 64), mmapOffset: 0xfc00n }), /past the end/);
  assert.match(
    attempt(full(2, 64), (b) => new DataView(b.buffer).setUint16(8, 7, true)),
    /queue 0: .*unknown version 7/,
  );
  assert.match(
    attempt(full(2, 64), (b) => {
      const view = new DataView(b.buffer);
      const second = inflightQueueRegionSize(64);
      view.setUint16(second + 8, 1, true);
      view.setUint16(second + 10, 32, true);
    }),
    /queue 1: .*desc_num is 32/,
  );
  assert.equal(t.slice(0)!.hostAddr, current, "the current area is still in place");
  t.close();
});

/** A WorkerPool stand-in that records ring starts and stops. */
class FakePool {
  starts: { queue: number; state: SplitQueueState; inflight?: InflightMapping }[] = [];
  onRingError: (queue: number, reason: string) => void = () => {};
  #states = new Map<number, SplitQueueState>();
  setMemory(): Promise<void> {
    return Promise.resolve();
  }
  setLog(): Promise<void> {
    return Promise.resolve();
  }
  setCall(): Promise<void> {
    return Promise.resolve();
  }
  startQueue(
    queue: number,
    state: SplitQueueState,
    _kick: number,
    _call: number,
    _err: number,
    inflight?: InflightMapping,
  ): Promise<string | undefined> {
    this.starts.push({ queue, state, inflight });
    this.#states.set(queue, state);
    return Promise.resolve(undefined);
  }
  stopQueue(queue: number): Promise<SplitQueueState> {
    return Promise.resolve(this.#states.get(queue)!);
  }
}

async function withBackend(
  body: (
    be: VhostUserBackend,
    pool: FakePool,
    memory: SharedGuestMemory,
    ring: RingDriver,
  ) => Promise<void>,
): Promise<void> {
  const backing = openBacking({ kind: "ram", size: 1 << 20, readOnly: false });
  const device = new BlkDevice(backing, { numQueues: 1, queueSize: 64, serial: "inflight" });
  const pool = new FakePool();
  const be = new VhostUserBackend(device, pool as unknown as WorkerPool);
  const memory = new SharedGuestMemory(1 << 20);
  const ring = new RingDriver(guestView(memory), 0x1000, 16);
  try {
    be.setProtocolFeatures(be.offeredProtocolFeatures());
    await be.setFeatures(bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.PROTOCOL_FEATURES));
    await be.setMemTable([memory.desc()], [memory.dup()]);
    be.setVringNum({ index: 0, num: 16 });
    await be.setVringAddr(ring.address(0));
    await be.setVringEnable({ index: 0, num: 1 });
    await body(be, pool, memory, ring);
  } finally {
    await be.disconnect();
    ring.close();
    memory.close();
    device.close();
  }
}

/** Sets the used ring's idx in guest memory, as the driver sees it. */
function setUsedIdx(memory: SharedGuestMemory, ring: RingDriver, idx: number): void {
  memory.region.view.setUint16(ring.layout.usedGpa + 2, idx, true);
}

Deno.test("INFLIGHT_SHMFD is offered for every device", async () => {
  await withBackend((be) => {
    assert.ok(hasBit(be.offeredProtocolFeatures(), ProtocolFeature.INFLIGHT_SHMFD));
    return Promise.resolve();
  });
});

Deno.test("a ring with an inflight area starts at used.idx + in flight, with its slice", async () => {
  await withBackend(async (be, pool, memory, ring) => {
    const { desc, fd } = be.getInflightFd(request(1, 64));
    const frontend = new FrontendView(fd, Number(desc.mmapSize));
    try {
      // As if a previous vhostd had crashed: used_idx 3, heads 6 and 2 in flight.
      const view = new DataView(frontend.bytes.buffer);
      view.setUint16(8, 1, true);
      view.setUint16(10, 64, true);
      view.setUint16(14, 3, true);
      setEntry(frontend.bytes, 6, 1, 10n);
      setEntry(frontend.bytes, 2, 1, 11n);
      be.setInflightFd(desc, fd);
      setUsedIdx(memory, ring, 3);
      be.setVringBase({ index: 0, num: 3 }); // QEMU restarts from used.idx after a crash
      await be.setVringKick(0, dupFd(ring.kickFd));
      assert.equal(pool.starts.length, 1);
      const start = pool.starts[0];
      assert.equal(start.state.nextAvail, 5);
      assert.equal(start.state.nextUsed, 3);
      assert.ok(start.inflight);
      assert.equal(start.inflight.size, inflightQueueRegionSize(64));
      // A new area while the ring runs is refused (and its fd closed).
      const other = be.getInflightFd(request(1, 64));
      const keep = dupFd(other.fd);
      assert.throws(() => be.setInflightFd(other.desc, other.fd), /while ring 0 runs/);
      assert.deepEqual(copiesOf(keep), []);
      closeQuietly(keep);
      // Stopped, the ring reports the position it ran from.
      const base = await be.getVringBase(0);
      assert.equal(base.num, 5);
    } finally {
      frontend.close();
    }
  });
});

Deno.test("a fresh area is initialised at the ring's used.idx (a migration destination)", async () => {
  await withBackend(async (be, pool, memory, ring) => {
    const { desc, fd } = be.getInflightFd(request(1, 64));
    const frontend = new FrontendView(fd, Number(desc.mmapSize));
    try {
      be.setInflightFd(desc, fd);
      setUsedIdx(memory, ring, 40000);
      be.setVringBase({ index: 0, num: 40000 });
      await be.setVringKick(0, dupFd(ring.kickFd));
      assert.equal(pool.starts[0].state.nextAvail, 40000);
      assert.ok(pool.starts[0].inflight);
      const view = new DataView(frontend.bytes.buffer);
      assert.equal(view.getUint16(8, true), 1, "version");
      assert.equal(view.getUint16(14, true), 40000, "used_idx");
    } finally {
      frontend.close();
    }
  });
});

Deno.test("an untrustworthy inflight region is not used: the ring starts at its base", async () => {
  await withBackend(async (be, pool, memory, ring) => {
    const { desc, fd } = be.getInflightFd(request(1, 64));
    const frontend = new FrontendView(fd, Number(desc.mmapSize));
    try {
      const view = new DataView(frontend.bytes.buffer);
      view.setUint16(8, 1, true);
      view.setUint16(10, 64, true);
      be.setInflightFd(desc, fd);
      setEntry(frontend.bytes, 1, 9, 0n); // changed by the front-end after SET_INFLIGHT_FD
      setUsedIdx(memory, ring, 2);
      be.setVringBase({ index: 0, num: 2 });
      await be.setVringKick(0, dupFd(ring.kickFd));
      assert.equal(pool.starts[0].inflight, undefined);
      assert.equal(pool.starts[0].state.nextAvail, 2);
    } finally {
      frontend.close();
    }
  });
});

Deno.test("the inflight area is unmapped on disconnect", async () => {
  const before = inflightMappings();
  await withBackend((be) => {
    const { desc, fd } = be.getInflightFd(request(1, 64));
    be.setInflightFd(desc, fd);
    assert.equal(inflightMappings(), before + 1);
    return Promise.resolve();
  });
  assert.equal(inflightMappings(), before);
});
