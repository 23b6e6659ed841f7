import assert from "node:assert/strict";
import {
  closeQuietly,
  dupFd,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  eventfd,
  eventfdRead,
  pollFd,
  POLLIN,
  pread,
} from "../../ffi/mod.ts";
import { BlkRequestType, BlkStatus } from "../devices/blk/blk_spec.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";
import { setLogLevel } from "../log.ts";
import { bit, hasBit, ProtocolFeature, VirtioFeature } from "../protocol/mod.ts";
import { MAX_MEM_SLOTS, RequestError } from "./backend.ts";
import {
  type BlkBackend,
  blkRequest,
  type BlkRequestPlace,
  copiesOf,
  guestView,
  RingDriver,
  SharedGuestMemory,
  withBlkBackend,
} from "../../tests/support/backend_doubles.ts";
import { NO_FD } from "./worker_protocol.ts";

// Refused requests and broken rings are expected here: keep their warnings out of the output.
setLogLevel("error");

const MEM_SIZE = 1 << 20;
const RING_GPA = 0x1000;
const RING_SIZE = 16;
/** Long enough for a Worker to have served a kick if it was going to. */
const QUIET_MS = 250;

const PLACE: BlkRequestPlace = {
  headerGpa: 0x8000,
  dataGpa: 0x10000,
  dataLen: 1024,
  statusGpa: 0x8100,
};

/** VERSION_1 only: rings run as soon as they are kicked. */
const PLAIN_FEATURES = bit(VirtioFeature.VERSION_1);
/** VERSION_1 and PROTOCOL_FEATURES: rings also need SET_VRING_ENABLE 1. */
const PROTOCOL_FEATURES = PLAIN_FEATURES | bit(VirtioFeature.PROTOCOL_FEATURES);

function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (i * 13 + seed * 101 + (i >> 8)) & 0xff;
  return out;
}

/** Everything a ring needs; the test keeps its own kick/call fds and hands dups over. */
async function configureRing(
  b: BlkBackend,
  ring: RingDriver,
  opts: { index?: number; base?: number; kick?: boolean } = {},
): Promise<void> {
  const index = opts.index ?? 0;
  const be = b.backend;
  be.setVringNum({ index, num: ring.size });
  await be.setVringAddr(ring.address(index));
  be.setVringBase({ index, num: opts.base ?? 0 });
  await be.setVringCall(index, dupFd(ring.callFd));
  if (opts.kick ?? true) await be.setVringKick(index, dupFd(ring.kickFd));
}

/** A session with one region and one configured, kicked ring. */
async function startSession(
  b: BlkBackend,
  shm: SharedGuestMemory,
  features = PLAIN_FEATURES,
): Promise<{ view: GuestMemory; ring: RingDriver }> {
  const be = b.backend;
  be.setOwner();
  await be.setFeatures(features);
  await be.setMemTable([shm.desc()], [shm.dup()]);
  const view = guestView(shm);
  const ring = new RingDriver(view, RING_GPA, RING_SIZE);
  await configureRing(b, ring);
  return { view, ring };
}

/** Publishes a request and kicks; returns the head. */
function submit(
  view: GuestMemory,
  ring: RingDriver,
  type: typeof BlkRequestType.IN | typeof BlkRequestType.OUT,
  sector: number,
  place: BlkRequestPlace = PLACE,
): number {
  const head = ring.queue.addChain(blkRequest(view, type, sector, place));
  ring.kick();
  return head;
}

/** Waits for the call and returns the completion of `head` with its status byte. */
function complete(
  view: GuestMemory,
  ring: RingDriver,
  head: number,
  place: BlkRequestPlace = PLACE,
): { len: number; status: number } {
  assert.ok(ring.waitCall(), "the back-end did not signal the call eventfd");
  const used = ring.queue.takeUsed();
  assert.ok(used, "call signalled but nothing in the used ring");
  assert.equal(used.id, head);
  return { len: used.len, status: view.slice(place.statusGpa, 1)![0] };
}

/** One request, start to finish. */
function roundTrip(
  view: GuestMemory,
  ring: RingDriver,
  type: typeof BlkRequestType.IN | typeof BlkRequestType.OUT,
  sector: number,
  place: BlkRequestPlace = PLACE,
): { len: number; status: number } {
  return complete(view, ring, submit(view, ring, type, sector, place), place);
}

/** Writes `data` through the ring at `sector` and checks it reached the disk. */
function writeAndCheck(
  b: BlkBackend,
  view: GuestMemory,
  ring: RingDriver,
  sector: number,
  seed: number,
  place: BlkRequestPlace = PLACE,
): void {
  const data = pattern(place.dataLen, seed);
  view.slice(place.dataGpa, place.dataLen)!.set(data);
  assert.deepEqual(roundTrip(view, ring, BlkRequestType.OUT, sector, place), {
    len: 1,
    status: BlkStatus.OK,
  });
  const disk = new Uint8Array(place.dataLen);
  pread(b.device.backing.fd, disk, sector * 512);
  assert.deepEqual(disk, data);
}

/** Asserts that a published, kicked request is not served. */
function assertNotServed(ring: RingDriver, usedBefore: number): void {
  assert.equal(ring.waitCall(QUIET_MS), false, "a stopped ring was served");
  assert.equal(ring.queue.usedIndex(), usedBefore);
}

/** Waits for used.idx to reach `usedIndex` and checks that no call came with it. */
async function assertServedSilently(ring: RingDriver, usedIndex: number): Promise<void> {
  const deadline = performance.now() + 3000;
  while (ring.queue.usedIndex() !== usedIndex && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.equal(ring.queue.usedIndex(), usedIndex, "the request was not served");
  assert.equal(ring.waitCall(QUIET_MS), false, "a call came although used_event said not yet");
}

function withMemory(
  sizes: number[],
  body: (mem: SharedGuestMemory[]) => Promise<void>,
): () => Promise<void> {
  return async () => {
    let gpa = 0;
    const mem = sizes.map((size) => {
      const m = new SharedGuestMemory(size, gpa);
      gpa += size;
      return m;
    });
    try {
      await body(mem);
    } finally {
      mem.forEach((m) => m.close());
    }
  };
}

Deno.test("feature negotiation: unknown bits refused, protocol features a subset", async () => {
  await withBlkBackend(async (b) => {
    const be = b.backend;
    const offered = be.offeredFeatures();
    assert.ok(hasBit(offered, VirtioFeature.PROTOCOL_FEATURES));
    assert.equal(offered & b.device.features(), b.device.features());

    await assert.rejects(be.setFeatures(offered | bit(40)), RequestError);
    await assert.rejects(be.setFeatures(bit(63)), RequestError);
    assert.equal(be.ackedFeatures(), 0n);
    await be.setFeatures(offered);
    assert.equal(be.ackedFeatures(), offered);
    // The device sees its own bits only.
    assert.equal(b.device.ackedFeatures(), b.device.features());

    const protocol = be.offeredProtocolFeatures();
    assert.ok(hasBit(protocol, ProtocolFeature.REPLY_ACK));
    assert.ok(hasBit(protocol, ProtocolFeature.CONFIG));
    assert.ok(protocol < bit(20), "protocol bits 20+ must not be offered");
    let missing = 0;
    while (hasBit(protocol, missing)) missing++;
    assert.throws(() => be.setProtocolFeatures(protocol | bit(missing)), RequestError);
    assert.throws(() => be.setProtocolFeatures(bit(25)), RequestError);
    assert.equal(be.negotiatedProtocolFeatures(), 0n);
    const subset = bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG);
    be.setProtocolFeatures(subset);
    assert.equal(be.negotiatedProtocolFeatures(), subset);
    be.setProtocolFeatures(protocol);
    assert.equal(be.negotiatedProtocolFeatures(), protocol);
  });
});

Deno.test("SET_VRING_NUM: powers of two up to the device maximum, not while started", async () => {
  await withBlkBackend(async (b) => {
    const be = b.backend;
    for (const num of [0, 3, 100, 257, 512, 65536, 32768]) {
      assert.throws(() => be.setVringNum({ index: 0, num }), RequestError, `size ${num}`);
    }
    be.setVringNum({ index: 0, num: 1 });
    be.setVringNum({ index: 0, num: 256 });
    assert.throws(() => be.setVringNum({ index: 1, num: 16 }), RequestError);
    assert.throws(() => be.setVringBase({ index: 0, num: 0x10000 }), RequestError);

    const kick = eventfd();
    await be.setVringKick(0, dupFd(kick));
    assert.throws(() => be.setVringNum({ index: 0, num: 16 }), RequestError);
    assert.throws(() => be.setVringBase({ index: 0, num: 0 }), RequestError);
    // GET_VRING_BASE stops the ring: the size may change again.
    assert.deepEqual(await be.getVringBase(0), { index: 0, num: 0 });
    assert.deepEqual(copiesOf(kick), [], "the kick fd outlived GET_VRING_BASE");
    closeQuietly(kick);
    be.setVringNum({ index: 0, num: 16 });
  }, { queueSize: 256 });
});

Deno.test(
  "SET_VRING_ADDR: addresses outside guest memory and unknown flags are refused",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const be = b.backend;
      const view = guestView(shm);
      const ring = new RingDriver(view, RING_GPA, RING_SIZE);
      try {
        const good = ring.address(0);
        // No memory table yet: nothing is inside guest memory.
        await assert.rejects(be.setVringAddr(good), RequestError);
        await be.setMemTable([shm.desc()], [shm.dup()]);
        await be.setVringAddr(good);
        const end = BigInt(shm.userAddr + shm.size);
        for (
          const bad of [
            { ...good, descUserAddr: end },
            { ...good, availUserAddr: BigInt(shm.userAddr) - 2n },
            { ...good, usedUserAddr: end + 0x1000n },
            // A guest-physical address where a front-end virtual one belongs.
            { ...good, descUserAddr: BigInt(RING_GPA) },
          ]
        ) {
          await assert.rejects(be.setVringAddr(bad), RequestError);
        }
        await assert.rejects(be.setVringAddr({ ...good, flags: 2 }), RequestError);
        await assert.rejects(be.setVringAddr({ ...good, index: 1 }), RequestError);
        await be.setVringAddr({ ...good, flags: 1, logGuestAddr: 0x2000n });
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test(
  "a kicked ring is served by the Worker; GET_VRING_BASE stops it at the next avail index",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const { view, ring } = await startSession(b, shm);
      try {
        writeAndCheck(b, view, ring, 8, 1);
        const readPlace = { ...PLACE, dataGpa: 0x20000 };
        assert.deepEqual(roundTrip(view, ring, BlkRequestType.IN, 8, readPlace), {
          len: 1024 + 1,
          status: BlkStatus.OK,
        });
        assert.deepEqual(view.slice(0x20000, 1024), pattern(1024, 1));
        const c = b.device.shared.counters();
        assert.equal(c.reads, 1n);
        assert.equal(c.writes, 1n);

        assert.deepEqual(await b.backend.getVringBase(0), { index: 0, num: 2 });
        // Stopped: a new request waits.
        const head = submit(view, ring, BlkRequestType.OUT, 0);
        assertNotServed(ring, 2);
        // Restarted where it stopped, it serves the waiting request.
        b.backend.setVringBase({ index: 0, num: 2 });
        await b.backend.setVringKick(0, dupFd(ring.kickFd));
        assert.deepEqual(complete(view, ring, head), { len: 1, status: BlkStatus.OK });
        assert.deepEqual(await b.backend.getVringBase(0), { index: 0, num: 3 });
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test(
  "SET_VRING_BASE mid-stream: the used index continues from the ring and wraps at 2^16",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const be = b.backend;
      await be.setFeatures(PLAIN_FEATURES);
      await be.setMemTable([shm.desc()], [shm.dup()]);
      const view = guestView(shm);
      const ring = new RingDriver(view, RING_GPA, RING_SIZE);
      try {
        ring.queue.setIndices(0xfffe, 0xfffe);
        await configureRing(b, ring, { base: 0xfffe });
        for (let i = 0; i < 3; i++) writeAndCheck(b, view, ring, i * 2, 10 + i);
        assert.equal(ring.queue.usedIndex(), 1);
        assert.deepEqual(await be.getVringBase(0), { index: 0, num: 1 });
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test(
  "without PROTOCOL_FEATURES a ring runs when kicked; with it only after SET_VRING_ENABLE 1",
  withMemory([MEM_SIZE], async ([shm]) => {
    // Without: never enabled, still served.
    await withBlkBackend(async (b) => {
      const { view, ring } = await startSession(b, shm, PLAIN_FEATURES);
      try {
        writeAndCheck(b, view, ring, 0, 20);
      } finally {
        ring.close();
      }
    });
    // With: kicked but disabled rings wait.
    await withBlkBackend(async (b) => {
      const be = b.backend;
      const { view, ring } = await startSession(b, shm, PROTOCOL_FEATURES);
      try {
        const head = submit(view, ring, BlkRequestType.OUT, 4);
        assertNotServed(ring, 0);
        await assert.rejects(be.setVringEnable({ index: 0, num: 2 }), RequestError);
        await be.setVringEnable({ index: 0, num: 1 });
        assert.deepEqual(complete(view, ring, head), { len: 1, status: BlkStatus.OK });
        writeAndCheck(b, view, ring, 6, 21);
        // Disabled again: requests wait until it is re-enabled.
        await be.setVringEnable({ index: 0, num: 0 });
        const waiting = submit(view, ring, BlkRequestType.OUT, 8);
        assertNotServed(ring, 2);
        await be.setVringEnable({ index: 0, num: 1 });
        assert.deepEqual(complete(view, ring, waiting), { len: 1, status: BlkStatus.OK });
        assert.deepEqual(await be.getVringBase(0), { index: 0, num: 3 });
      } finally {
        ring.close();
      }
    });
    // Enabled before the kick: the kick starts it.
    await withBlkBackend(async (b) => {
      const be = b.backend;
      await be.setFeatures(PROTOCOL_FEATURES);
      await be.setMemTable([shm.desc()], [shm.dup()]);
      const view = guestView(shm);
      const ring = new RingDriver(view, RING_GPA, RING_SIZE);
      try {
        await configureRing(b, ring, { kick: false });
        await be.setVringEnable({ index: 0, num: 1 });
        const head = submit(view, ring, BlkRequestType.OUT, 2);
        assertNotServed(ring, 0);
        await be.setVringKick(0, dupFd(ring.kickFd));
        assert.deepEqual(complete(view, ring, head), { len: 1, status: BlkStatus.OK });
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test(
  "SET_MEM_TABLE replaced while a ring runs: old mapping gone, I/O continues in the new table",
  withMemory([MEM_SIZE, MEM_SIZE], async ([shm, extra]) => {
    await withBlkBackend(async (b) => {
      const { view, ring } = await startSession(b, shm);
      try {
        writeAndCheck(b, view, ring, 0, 30);
        assert.equal(shm.mappingCount(), 2, "guest view + back-end mapping");
        // The same table again: the back-end maps anew and drops its old mapping, but only
        // once the Worker has switched to the new one.
        const seen: string[] = [];
        const setMemory = b.pool.setMemory.bind(b.pool);
        b.pool.setMemory = async (regions) => {
          seen.push(`before switch: ${shm.mappingCount()}`);
          await setMemory(regions);
          seen.push(`after switch: ${shm.mappingCount()}`);
        };
        await b.backend.setMemTable([shm.desc()], [shm.dup()]);
        assert.deepEqual(seen, ["before switch: 3", "after switch: 3"]);
        assert.equal(shm.mappingCount(), 2);
        writeAndCheck(b, view, ring, 2, 31);
        // A bigger table: data in the new region is reachable by the Worker.
        await b.backend.setMemTable([shm.desc(), extra.desc()], [shm.dup(), extra.dup()]);
        assert.equal(shm.mappingCount(), 2);
        assert.equal(extra.mappingCount(), 2);
        const both = guestView(shm, extra);
        writeAndCheck(b, both, ring, 4, 32, { ...PLACE, dataGpa: extra.guestAddr + 0x3000 });
        // Back to one region: the extra one is unmapped.
        await b.backend.setMemTable([shm.desc()], [shm.dup()]);
        assert.equal(extra.mappingCount(), 1);
        writeAndCheck(b, view, ring, 6, 33);
        assert.deepEqual(await b.backend.getVringBase(0), { index: 0, num: 4 });
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test(
  "ADD_MEM_REG and REM_MEM_REG change what the Worker can reach",
  withMemory([MEM_SIZE, MEM_SIZE, MEM_SIZE], async ([shm, extra, clash]) => {
    await withBlkBackend(async (b) => {
      const be = b.backend;
      await be.setFeatures(PLAIN_FEATURES);
      await be.addMemRegion(shm.desc(), shm.dup());
      assert.deepEqual(shm.copies(), [], "ADD_MEM_REG keeps the mapping, not the fd");
      assert.equal(shm.mappingCount(), 2);
      const view = guestView(shm, extra);
      const ring = new RingDriver(view, RING_GPA, RING_SIZE);
      try {
        await configureRing(b, ring);
        writeAndCheck(b, view, ring, 0, 40);

        const inExtra = { ...PLACE, dataGpa: extra.guestAddr + 0x1000 };
        await be.addMemRegion(extra.desc(), extra.dup());
        writeAndCheck(b, view, ring, 2, 41, inExtra);

        // A region overlapping one already there is refused and not left mapped.
        const clashDesc = { ...clash.desc(), guestAddr: BigInt(extra.guestAddr) };
        await assert.rejects(be.addMemRegion(clashDesc, clash.dup()), RequestError);
        assert.equal(clash.mappingCount(), 1);
        assert.deepEqual(clash.copies(), []);

        await assert.rejects(
          be.removeMemRegion({ ...extra.desc(), size: BigInt(extra.size / 2) }),
          RequestError,
        );
        await be.removeMemRegion(extra.desc());
        assert.equal(extra.mappingCount(), 1);
        // Data in the removed region: the chain is malformed, nothing can be reported.
        const head = submit(view, ring, BlkRequestType.OUT, 4, inExtra);
        assert.deepEqual(complete(view, ring, head, inExtra), { len: 0, status: 0xff });
        // The ring itself still works.
        writeAndCheck(b, view, ring, 6, 42);
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test("ADD_MEM_REG refuses more than the advertised slots", async () => {
  const regions = Array.from(
    { length: MAX_MEM_SLOTS + 1 },
    (_, i) => new SharedGuestMemory(4096, i * 4096),
  );
  try {
    await withBlkBackend(async (b) => {
      for (let i = 0; i < MAX_MEM_SLOTS; i++) {
        await b.backend.addMemRegion(regions[i].desc(), regions[i].dup());
      }
      const last = regions[MAX_MEM_SLOTS];
      await assert.rejects(b.backend.addMemRegion(last.desc(), last.dup()), RequestError);
      assert.deepEqual(last.copies(), []);
      assert.equal(last.mappingCount(), 1);
    });
    // disconnect() in close() unmapped every slot.
    for (const r of regions) assert.equal(r.mappingCount(), 1);
  } finally {
    regions.forEach((r) => r.close());
  }
});

Deno.test(
  "SET_MEM_TABLE refusals close every fd and leave nothing mapped",
  withMemory([MEM_SIZE, MEM_SIZE], async ([shm, other]) => {
    await withBlkBackend(async (b) => {
      const be = b.backend;
      // Overlapping guest ranges.
      let fds = [shm.dup(), other.dup()];
      await assert.rejects(
        be.setMemTable([shm.desc(), { ...other.desc(), guestAddr: 0x1000n }], fds),
        RequestError,
      );
      assert.deepEqual([...shm.copies(), ...other.copies()], []);
      assert.equal(shm.mappingCount(), 1);
      assert.equal(other.mappingCount(), 1);
      // A zero-sized region.
      fds = [shm.dup()];
      await assert.rejects(be.setMemTable([{ ...shm.desc(), size: 0n }], fds), RequestError);
      assert.deepEqual(shm.copies(), []);
      // A region reaching past the end of its file: touching it would kill the process.
      const pastEnd = (e: unknown) => e instanceof RequestError && /past the end/.test(e.message);
      fds = [shm.dup()];
      await assert.rejects(
        be.setMemTable([{ ...shm.desc(), size: BigInt(2 * MEM_SIZE) }], fds),
        pastEnd,
      );
      assert.deepEqual(shm.copies(), []);
      fds = [shm.dup()];
      await assert.rejects(be.setMemTable([shm.desc(MEM_SIZE / 2)], fds), pastEnd);
      assert.deepEqual(shm.copies(), []);
      // The same check guards ADD_MEM_REG.
      fds = [shm.dup()];
      await assert.rejects(
        be.addMemRegion({ ...shm.desc(), size: BigInt(2 * MEM_SIZE) }, fds[0]),
        pastEnd,
      );
      assert.deepEqual(shm.copies(), []);
      assert.equal(shm.mappingCount(), 1);
      // Not a mappable fd at all.
      const notMemory = eventfd();
      await assert.rejects(be.setMemTable([shm.desc()], [dupFd(notMemory)]), RequestError);
      assert.deepEqual(copiesOf(notMemory), []);
      closeQuietly(notMemory);
    });
  }),
);

Deno.test(
  "disconnect() stops every ring, unmaps guest memory, closes ring fds and forgets features",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const be = b.backend;
      be.setProtocolFeatures(bit(ProtocolFeature.REPLY_ACK));
      await be.setFeatures(PLAIN_FEATURES);
      await be.setMemTable([shm.desc()], [shm.dup()]);
      const view = guestView(shm);
      const ring = new RingDriver(view, RING_GPA, RING_SIZE);
      try {
        be.setVringNum({ index: 0, num: RING_SIZE });
        await be.setVringAddr(ring.address(0));
        be.setVringBase({ index: 0, num: 0 });
        const kick = dupFd(ring.kickFd);
        const call = dupFd(ring.callFd);
        const errOriginal = eventfd();
        await be.setVringCall(0, call);
        await be.setVringErr(0, dupFd(errOriginal));
        await be.setVringKick(0, kick);
        writeAndCheck(b, view, ring, 0, 50);
        assert.equal(shm.mappingCount(), 2);

        await be.disconnect();
        assert.equal(shm.mappingCount(), 1, "the back-end's mapping survived disconnect");
        for (const fd of [ring.kickFd, ring.callFd, errOriginal]) {
          assert.deepEqual(copiesOf(fd), [], "a ring fd survived disconnect");
        }
        closeQuietly(errOriginal);
        assert.equal(be.ackedFeatures(), 0n);
        assert.equal(be.negotiatedProtocolFeatures(), 0n);
        assert.equal(b.device.ackedFeatures(), 0n);
        submit(view, ring, BlkRequestType.OUT, 2);
        assertNotServed(ring, 1);

        // The same back-end serves the next front-end from scratch.
        await be.setFeatures(PLAIN_FEATURES);
        await be.setMemTable([shm.desc()], [shm.dup()]);
        const fresh = new RingDriver(view, 0x4000, RING_SIZE);
        try {
          await configureRing(b, fresh);
          writeAndCheck(b, view, fresh, 4, 51);
        } finally {
          fresh.close();
        }
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test(
  "SET_VRING_CALL on a running ring: the new eventfd gets the calls, the old one is closed",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const { view, ring } = await startSession(b, shm);
      const secondCall = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      try {
        writeAndCheck(b, view, ring, 0, 60);
        await b.backend.setVringCall(0, dupFd(secondCall));
        const head = submit(view, ring, BlkRequestType.OUT, 2);
        assert.ok((pollFd(secondCall, POLLIN, 3000) & POLLIN) !== 0, "new call fd not signalled");
        assert.equal(eventfdRead(secondCall), 1);
        assert.equal(ring.waitCall(QUIET_MS), false, "the old call eventfd was signalled");
        assert.deepEqual(ring.queue.takeUsed(), { id: head, len: 1 });
        // Polling mode: no call fd at all, the ring still completes requests.
        await b.backend.setVringCall(0, NO_FD);
        const polled = submit(view, ring, BlkRequestType.OUT, 4);
        const deadline = Date.now() + 3000;
        while (ring.queue.usedIndex() !== 3 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 5));
        }
        assert.deepEqual(ring.queue.takeUsed(), { id: polled, len: 1 });
      } finally {
        closeQuietly(secondCall);
        ring.close();
      }
    });
  }),
);

Deno.test("ring fds sent for a ring that does not exist are closed", async () => {
  await withBlkBackend(async (b) => {
    for (
      const apply of [
        (fd: number) => b.backend.setVringKick(3, fd),
        (fd: number) => b.backend.setVringCall(3, fd),
        (fd: number) => b.backend.setVringErr(3, fd),
      ]
    ) {
      const fd = eventfd();
      await assert.rejects(apply(dupFd(fd)), RequestError);
      assert.deepEqual(copiesOf(fd), []);
      closeQuietly(fd);
    }
    await assert.rejects(b.backend.getVringBase(3), RequestError);
    await assert.rejects(b.backend.setVringEnable({ index: 3, num: 1 }), RequestError);
  });
});

Deno.test(
  "RESET_OWNER stops the rings and clears the features",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const { view, ring } = await startSession(b, shm);
      try {
        writeAndCheck(b, view, ring, 0, 70);
        await b.backend.reset();
        assert.equal(b.backend.ackedFeatures(), 0n);
        submit(view, ring, BlkRequestType.OUT, 2);
        assertNotServed(ring, 1);
        // The ring forgot its size: it must be configured again.
        assert.deepEqual(await b.backend.getVringBase(0), { index: 0, num: 0 });
      } finally {
        ring.close();
      }
    });
  }),
);

Deno.test("GET_CONFIG/SET_CONFIG go through the device", async () => {
  await withBlkBackend((b) => {
    const be = b.backend;
    const full = be.getConfig({ offset: 0, size: 96, flags: 0, data: new Uint8Array(96) });
    assert.deepEqual(full.data, b.device.readConfig());
    const window = be.getConfig({ offset: 32, size: 4, flags: 0, data: new Uint8Array(4) });
    assert.deepEqual(window, { offset: 32, size: 4, flags: 0, data: full.data.slice(32, 36) });
    assert.throws(
      () => be.getConfig({ offset: 90, size: 8, flags: 0, data: new Uint8Array(8) }),
      RequestError,
    );
    be.setConfig({ offset: 32, size: 1, flags: 0, data: Uint8Array.of(0) });
    assert.equal(b.device.shared.writeback, false);
    assert.throws(
      () => be.setConfig({ offset: 0, size: 1, flags: 0, data: Uint8Array.of(9) }),
      RequestError,
    );
  });
});

Deno.test(
  "two rings on one Worker are served independently; stopping one leaves the other",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const { view, ring } = await startSession(b, shm);
      const second = new RingDriver(view, 0x3000, RING_SIZE);
      const secondPlace = { headerGpa: 0x9000, dataGpa: 0x30000, dataLen: 512, statusGpa: 0x9100 };
      try {
        await configureRing(b, second, { index: 1 });
        writeAndCheck(b, view, ring, 0, 80);
        writeAndCheck(b, view, second, 8, 81, secondPlace);
        assert.deepEqual(await b.backend.getVringBase(0), { index: 0, num: 1 });
        const waiting = submit(view, ring, BlkRequestType.OUT, 2);
        writeAndCheck(b, view, second, 10, 82, secondPlace);
        assertNotServed(ring, 1);
        assert.deepEqual(await b.backend.getVringBase(1), { index: 1, num: 2 });
        b.backend.setVringBase({ index: 0, num: 1 });
        await b.backend.setVringKick(0, dupFd(ring.kickFd));
        assert.deepEqual(complete(view, ring, waiting), { len: 1, status: BlkStatus.OK });
      } finally {
        second.close();
        ring.close();
      }
    }, { numQueues: 2 });
  }),
);

Deno.test(
  "a corrupt avail index stops only that ring, signals the error fd, and a restart revives it",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const be = b.backend;
      await be.setFeatures(PLAIN_FEATURES);
      await be.setMemTable([shm.desc()], [shm.dup()]);
      const view = guestView(shm);
      const ring = new RingDriver(view, RING_GPA, RING_SIZE);
      const errFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      try {
        await be.setVringErr(0, dupFd(errFd));
        await configureRing(b, ring);
        // avail.idx 100 entries ahead of a 16-entry ring.
        ring.queue.setIndices(100, 0);
        ring.kick();
        assert.ok((pollFd(errFd, POLLIN, 3000) & POLLIN) !== 0, "error eventfd not signalled");
        assert.equal(eventfdRead(errFd), 1);
        assert.equal(ring.queue.usedIndex(), 0);
        // The back-end still answers; the ring stopped before taking anything.
        assert.deepEqual(await be.getVringBase(0), { index: 0, num: 0 });
        ring.queue.setIndices(0, 0);
        be.setVringBase({ index: 0, num: 0 });
        await be.setVringKick(0, dupFd(ring.kickFd));
        writeAndCheck(b, view, ring, 0, 90);
      } finally {
        closeQuietly(errFd);
        ring.close();
      }
    });
  }),
);

Deno.test(
  "SET_FEATURES adding EVENT_IDX to a running ring takes effect: calls follow used_event",
  withMemory([MEM_SIZE], async ([shm]) => {
    await withBlkBackend(async (b) => {
      const { view, ring } = await startSession(b, shm);
      try {
        writeAndCheck(b, view, ring, 0, 100);
        await b.backend.setFeatures(PLAIN_FEATURES | bit(VirtioFeature.RING_EVENT_IDX));
        // Interrupt me once used.idx passes 2: the next request completes silently.
        ring.queue.setUsedEvent(2);
        const quiet = submit(view, ring, BlkRequestType.OUT, 2);
        await assertServedSilently(ring, 2);
        assert.deepEqual(ring.queue.takeUsed(), { id: quiet, len: 1 });
        const loud = submit(view, ring, BlkRequestType.OUT, 4);
        assert.deepEqual(complete(view, ring, loud), { len: 1, status: BlkStatus.OK });
        assert.deepEqual(await b.backend.getVringBase(0), { index: 0, num: 3 });
      } finally {
        ring.close();
      }
    });
  }),
);
