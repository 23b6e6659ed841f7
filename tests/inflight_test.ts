/**
 * Inflight I/O tracking (INFLIGHT_SHMFD) against a real vhostd process:
 * GET_INFLIGHT_FD hands out a memfd of the documented size, SET_INFLIGHT_FD
 * takes it back, malformed requests are refused and the daemon keeps serving.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo } from "./support/fd_checks.ts";
import {
  closeQuietly,
  fstat,
  MAP_SHARED,
  mapArrayBuffer,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "../ffi/mod.ts";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import {
  BackendRefused,
  BlkDriver,
  DEFAULT_PROTOCOL_FEATURES,
  SharedGuestMemory,
  VhostUserClient,
} from "../src/frontend/mod.ts";
import {
  bit,
  decodeInflightDesc,
  decodeU64,
  encodeInflightDesc,
  encodeMessage,
  FLAG_NEED_REPLY,
  FrontendRequest,
  hasBit,
  type InflightDesc,
  ProtocolFeature,
  VHOST_USER_VERSION,
  VirtioFeature,
} from "../src/protocol/mod.ts";
import { inflightRegionSize } from "../src/virtqueue/inflight_region.ts";
import { pattern } from "./support/blk_fixture.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const INFLIGHT = bit(ProtocolFeature.INFLIGHT_SHMFD);
const PROTOCOL = DEFAULT_PROTOCOL_FEATURES | INFLIGHT;

/** Connects and negotiates protocol features (with REPLY_ACK, so refusals are visible). */
function connect(socketPath: string, protocol = PROTOCOL): VhostUserClient {
  const client = VhostUserClient.connect(socketPath);
  try {
    assert.ok(hasBit(client.getFeatures(), VirtioFeature.PROTOCOL_FEATURES));
    client.setOwner();
    const offered = client.getProtocolFeatures();
    assert.ok(hasBit(offered, ProtocolFeature.INFLIGHT_SHMFD), "INFLIGHT_SHMFD is offered");
    client.setProtocolFeatures(offered & protocol);
    return client;
  } catch (e) {
    client.close();
    throw e;
  }
}

/** Reads a whole inflight area through a mapping of its fd. */
function readArea(fd: number, size: number): Uint8Array {
  const base = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  try {
    return new Uint8Array(mapArrayBuffer(base, size)).slice();
  } finally {
    munmap(base, size);
  }
}

/** Sends a raw request with NEED_REPLY and returns the u64 acknowledgement. */
function rawAck(client: VhostUserClient, request: number, payload: Uint8Array, fds: number[]) {
  client.sendRaw(encodeMessage(request, VHOST_USER_VERSION | FLAG_NEED_REPLY, payload), fds);
  const reply = client.receiveReply(request);
  reply.fds.forEach(closeQuietly);
  return decodeU64(reply.payload);
}

/** Sets a blk device up on `client` and checks that I/O works. */
function serveIo(client: VhostUserClient, seed: number): void {
  const memory = SharedGuestMemory.create({ size: 4 << 20 });
  try {
    const driver = BlkDriver.setup(client, memory, {
      numQueues: 1,
      queueSize: 64,
      protocolFeatures: PROTOCOL,
    });
    try {
      const data = pattern(65536, seed);
      assert.equal(driver.write(0, 8 * seed, data).status, BlkStatus.OK);
      const r = driver.read(0, 8 * seed, 65536);
      assert.equal(r.status, BlkStatus.OK);
      assert.deepEqual(r.data, data);
    } finally {
      driver.close();
    }
  } finally {
    memory.close();
  }
}

Deno.test("GET_INFLIGHT_FD returns a zeroed memfd of the documented size; SET takes it back", async () => {
  await withVhostd({ args: ["--ram", "4M", "--num-queues", "2"] }, async (vhostd) => {
    const baseline = await vhostd.settledFdCount();
    const client = connect(vhostd.socketPath);
    let fd = -1;
    try {
      const area = client.getInflightFd(2, 128);
      fd = area.fd;
      assert.deepEqual(area.desc, {
        mmapSize: BigInt(inflightRegionSize(2, 128)),
        mmapOffset: 0n,
        numQueues: 2,
        queueSize: 128,
      });
      assert.equal(area.desc.mmapSize, 2n * 2112n);
      assert.equal(fstat(fd).size, 4224);
      assert.ok(readArea(fd, 4224).every((b) => b === 0));
      client.setInflightFd(area.desc, fd);
      // desc_num is filled in for each queue; the rest waits for the rings.
      const bytes = readArea(fd, 4224);
      const view = new DataView(bytes.buffer);
      assert.equal(view.getUint16(10, true), 128);
      assert.equal(view.getUint16(2112 + 10, true), 128);
      assert.equal(view.getUint16(8, true), 0);
      // Rings run with the area (ring size 64 within queue_size 128) and serve I/O.
      serveIo(client, 1);
      const after = new DataView(readArea(fd, 4224).buffer);
      assert.equal(after.getUint16(8, true), 1, "queue 0's region was initialised at its start");
    } finally {
      client.close();
      closeQuietly(fd);
    }
    assertFdsBackTo(await vhostd.fdCountDownTo(baseline), baseline, "no fd of the area stays open");
  });
});

Deno.test("malformed inflight requests are refused and the daemon keeps serving", async () => {
  // One queue, so that two are "more queues than the device has".
  await withVhostd({ args: ["--ram", "4M", "--num-queues", "1"] }, ({ socketPath }) => {
    const client = connect(socketPath);
    const fds: number[] = [];
    try {
      const area = client.getInflightFd(1, 64);
      fds.push(area.fd);
      const R = FrontendRequest;
      const good = encodeInflightDesc(area.desc);
      // Wrong payload sizes.
      assert.equal(rawAck(client, R.SET_INFLIGHT_FD, good.subarray(0, 16), [area.fd]), 1n);
      assert.equal(rawAck(client, R.SET_INFLIGHT_FD, new Uint8Array(32), [area.fd]), 1n);
      // No fd.
      assert.equal(rawAck(client, R.SET_INFLIGHT_FD, good, []), 1n);
      // An area too small for its queues, or for more queues than the device has.
      const small: InflightDesc = { ...area.desc, mmapSize: 100n };
      assert.throws(() => client.setInflightFd(small, area.fd), BackendRefused);
      assert.throws(
        () => client.setInflightFd({ ...area.desc, numQueues: 2 }, area.fd),
        BackendRefused,
      );
      // An area the fd does not hold.
      assert.throws(
        () => client.setInflightFd({ ...area.desc, mmapOffset: 1n << 20n }, area.fd),
        BackendRefused,
      );
      // GET for impossible queues answers "no area" (mmap_size 0, no fd), as QEMU expects.
      assert.throws(() => client.getInflightFd(2, 64), BackendRefused);
      assert.throws(() => client.getInflightFd(1, 0), BackendRefused);
      client.sendRaw(
        encodeMessage(R.GET_INFLIGHT_FD, VHOST_USER_VERSION, new Uint8Array(8)),
      );
      const short = client.receiveReply(R.GET_INFLIGHT_FD);
      assert.equal(short.fds.length, 0);
      assert.equal(decodeInflightDesc(short.payload).mmapSize, 0n);
      // The good area is still accepted, and the device serves I/O.
      client.setInflightFd(area.desc, area.fd);
      serveIo(client, 2);
      // A new area while a ring runs is refused.
      assert.throws(() => client.setInflightFd(area.desc, area.fd), BackendRefused);
    } finally {
      client.close();
      fds.forEach(closeQuietly);
    }
  });
});

Deno.test("without INFLIGHT_SHMFD negotiated, GET_INFLIGHT_FD answers no area", async () => {
  await withVhostd({ args: ["--ram", "4M"] }, ({ socketPath }) => {
    const client = connect(socketPath, DEFAULT_PROTOCOL_FEATURES);
    try {
      assert.throws(() => client.getInflightFd(1, 64), BackendRefused);
      serveIo(client, 3);
    } finally {
      client.close();
    }
  });
});

Deno.test("a reconnecting front-end hands the same area back to a new session", async () => {
  await withVhostd({ args: ["--ram", "4M"] }, ({ socketPath }) => {
    let fd = -1;
    let desc: InflightDesc;
    try {
      {
        const first = connect(socketPath);
        try {
          ({ desc, fd } = first.getInflightFd(1, 64));
          first.setInflightFd(desc, fd);
          serveIo(first, 4);
        } finally {
          first.close();
        }
      }
      const second = connect(socketPath);
      try {
        second.setInflightFd(desc, fd);
        serveIo(second, 5);
      } finally {
        second.close();
      }
      const view = new DataView(readArea(fd, Number(desc.mmapSize)).buffer);
      assert.equal(view.getUint16(8, true), 1);
      assert.equal(view.getUint16(10, true), 64);
    } finally {
      closeQuietly(fd);
    }
  });
});
