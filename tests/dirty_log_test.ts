/**
 * Dirty-page logging through a real vhostd process: the front-end shares a
 * memfd log (SET_LOG_BASE with LOG_SHMFD), turns VHOST_F_LOG_ALL on and the
 * used-ring log flag of a ring, and checks bit by bit which guest pages the
 * back-end marked; SET_LOG_FD's eventfd; the RAM-disk migration warning.
 */

import assert from "node:assert/strict";
import {
  closeQuietly,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  eventfd,
  eventfdRead,
  pipe2,
  pollFd,
  POLLIN,
} from "../ffi/mod.ts";
import { BlkRequestType, BlkStatus, SECTOR_SIZE } from "../src/devices/blk/blk_spec.ts";
import {
  BackendRefused,
  BlkDriver,
  DEFAULT_PROTOCOL_FEATURES,
  SharedGuestMemory,
  VhostUserClient,
  writeBlkHeader,
} from "../src/frontend/mod.ts";
import {
  bit,
  hasBit,
  ProtocolFeature,
  VirtioFeature,
  VRING_ADDR_F_LOG,
} from "../src/protocol/mod.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../src/virtqueue/layout.ts";
import { makeImage, pattern } from "./support/blk_fixture.ts";
import { countLogLines, nextLogLine } from "./support/state_tools.ts";
import { SharedLog } from "./support/shared_log.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const PAGE = 4096;
const LOG_ALL = bit(VirtioFeature.LOG_ALL);
const LOG_PROTOCOL_FEATURES = DEFAULT_PROTOCOL_FEATURES | bit(ProtocolFeature.LOG_SHMFD);
const STARTED = "dirty-page logging started";
const RAM_WARNING = "does not move back-end state";

/** A negotiated driver with LOG_SHMFD (and `extra` protocol features). */
function openDriver(
  vhostd: VhostdProcess,
  extra: bigint = 0n,
): { client: VhostUserClient; memory: SharedGuestMemory; driver: BlkDriver; close(): void } {
  const client = VhostUserClient.connect(vhostd.socketPath);
  const memory = SharedGuestMemory.create({ size: 8 * 2 ** 20 });
  try {
    const driver = BlkDriver.setup(client, memory, {
      numQueues: 1,
      queueSize: 64,
      protocolFeatures: LOG_PROTOCOL_FEATURES | extra,
      bufferPoolBytes: 2 ** 20,
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

function page(gpa: number): number {
  return Math.floor(gpa / PAGE);
}

/** True when the eventfd becomes readable within `ms`; drains it. */
function signalled(fd: number, ms: number): boolean {
  if ((pollFd(fd, POLLIN, ms) & POLLIN) === 0) return false;
  return eventfdRead(fd) > 0;
}

Deno.test("dirty log: exactly the pages of data buffers, status bytes and the used ring (at its log address) are marked; nothing once LOG_ALL is off; SET_LOG_FD is signalled", async () => {
  await withVhostd({ args: ["--ram", "4M"] }, (vhostd) => {
    const s = openDriver(vhostd);
    const log = new SharedLog(PAGE, 2 * PAGE); // 32768 pages: far more than the 8 MiB of memory
    const logEvent = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      const { client, memory, driver } = s;
      assert.ok(hasBit(driver.session.protocolFeatures, ProtocolFeature.LOG_SHMFD));
      assert.ok((driver.offeredFeatures & LOG_ALL) !== 0n, "VHOST_F_LOG_ALL is offered");
      const disk = pattern(64 * 1024, 11);
      assert.equal(driver.write(0, 0, disk).status, BlkStatus.OK);

      // Known pages: headers, a 2-page buffer, a buffer straddling two pages in two
      // descriptors, the status bytes, the ring's log address; the rest stays untouched.
      const area = memory.alloc(16 * PAGE, PAGE);
      const headers = area;
      const bufferA = area + 2 * PAGE;
      const bufferB = area + 6 * PAGE - 512;
      const status = area + 8 * PAGE;
      const usedLog = area + 10 * PAGE;
      const ring = driver.ring(0);
      assert.notEqual(page(ring.layout.usedGpa), page(usedLog));

      // A log reaching past the end of its file is refused with SET_LOG_BASE's own reply.
      const short = new SharedLog(PAGE, 0);
      try {
        assert.throws(
          () => client.setLogBase({ mmapSize: BigInt(2 * PAGE), mmapOffset: 0n }, short.fd),
          (e) => e instanceof BackendRefused && e.request === "SET_LOG_BASE" && e.ack === 1n,
        );
      } finally {
        short.close();
      }

      // As QEMU starts a migration: log base, used-ring log flag, then LOG_ALL.
      log.share(client);
      // SET_LOG_FD takes an eventfd only: a pipe is refused and the log fd stays unset.
      const [pipeRead, pipeWrite] = pipe2();
      try {
        assert.throws(
          () => client.setLogFd(pipeRead),
          (e) => e instanceof BackendRefused && e.request === "SET_LOG_FD",
        );
      } finally {
        closeQuietly(pipeRead);
        closeQuietly(pipeWrite);
      }
      client.setLogFd(logEvent);
      client.setVringAddr({
        ...ring.vringAddress(),
        flags: VRING_ADDR_F_LOG,
        logGuestAddr: BigInt(usedLog),
      });
      client.setFeatures(driver.features | LOG_ALL);

      writeBlkHeader(memory.bytes(headers, 16), BlkRequestType.IN, 8);
      writeBlkHeader(memory.bytes(headers + 64, 16), BlkRequestType.IN, 40);
      memory.bytes(status, 1)[0] = 0xff;
      memory.bytes(status + 100, 1)[0] = 0xff;
      const q = ring.queue;
      q.writeRawDescriptor(10, headers, 16, VIRTQ_DESC_F_NEXT, 11);
      q.writeRawDescriptor(11, bufferA, 2 * PAGE, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 12);
      q.writeRawDescriptor(12, status, 1, VIRTQ_DESC_F_WRITE, 0);
      q.writeRawDescriptor(20, headers + 64, 16, VIRTQ_DESC_F_NEXT, 21);
      q.writeRawDescriptor(21, bufferB, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 22);
      q.writeRawDescriptor(22, bufferB + 512, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 23);
      q.writeRawDescriptor(23, status + 100, 1, VIRTQ_DESC_F_WRITE, 0);
      const first = driver.submitRaw(0, 10);
      const second = driver.submitRaw(0, 20);
      assert.equal(driver.waitFor(0, first).written, 2 * PAGE + 1);
      assert.equal(driver.waitFor(0, second).written, 1024 + 1);
      assert.equal(memory.bytes(status, 1)[0], BlkStatus.OK);
      assert.equal(memory.bytes(status + 100, 1)[0], BlkStatus.OK);
      assert.deepEqual(
        memory.bytes(bufferA, 2 * PAGE),
        disk.subarray(8 * SECTOR_SIZE, 8 * SECTOR_SIZE + 2 * PAGE),
      );
      assert.deepEqual(
        memory.bytes(bufferB, 1024),
        disk.subarray(40 * SECTOR_SIZE, 40 * SECTOR_SIZE + 1024),
      );

      assert.ok(signalled(logEvent, 2000), "the log eventfd is signalled after logging");
      assert.deepEqual(log.markedPages(), [
        page(bufferA),
        page(bufferA) + 1,
        page(bufferB),
        page(bufferB) + 1,
        page(status),
        page(usedLog),
      ], "marked: the data buffers, the status bytes, the used ring's log address; nothing else");

      // LOG_ALL off: more I/O marks nothing and signals nothing.
      client.setFeatures(driver.features);
      log.bits.fill(0);
      signalled(logEvent, 0); // a signal of the last logged batch may have come after ours
      assert.equal(driver.read(0, 0, 8192).status, BlkStatus.OK);
      assert.equal(driver.write(0, 100, pattern(4096, 12)).status, BlkStatus.OK);
      assert.deepEqual(log.markedPages(), [], "nothing is logged without LOG_ALL");
      assert.equal(signalled(logEvent, 100), false, "no log signal without LOG_ALL");

      // On again: the same mapped log is used again.
      client.setFeatures(driver.features | LOG_ALL);
      assert.equal(driver.read(0, 0, 4096).status, BlkStatus.OK);
      // The signal follows the batch's last mark (the used ring's comes just after used.idx).
      assert.ok(signalled(logEvent, 2000), "the log eventfd is signalled again");
      assert.ok(log.markedPages().includes(page(usedLog)), "logging resumes with LOG_ALL");
    } finally {
      s.close();
      log.close();
      closeQuietly(logEvent);
    }
  });
});

/** Shares a log and turns LOG_ALL on (in either order), and checks that a read is logged. */
function startLogging(vhostd: VhostdProcess, extra: bigint, featuresFirst = false): void {
  const s = openDriver(vhostd, extra);
  const log = new SharedLog(PAGE, 0);
  try {
    // QEMU shares the log first when a migration starts (vhost_migration_log), but sends
    // LOG_ALL first when a device starts while a migration runs (vhost_dev_start:
    // SET_FEATURES, memory, rings, and only then SET_LOG_BASE).
    if (featuresFirst) s.client.setFeatures(s.driver.features | LOG_ALL);
    log.share(s.client);
    if (!featuresFirst) s.client.setFeatures(s.driver.features | LOG_ALL);
    assert.equal(s.driver.read(0, 0, 4096).status, BlkStatus.OK);
    assert.notDeepEqual(log.markedPages(), [], "logging is on");
  } finally {
    s.close();
    log.close();
  }
}

Deno.test("dirty log: a --ram disk warns when logging starts without DEVICE_STATE; not with DEVICE_STATE, not for --file", async () => {
  await withVhostd({ args: ["--ram", "4M"] }, async (vhostd) => {
    startLogging(vhostd, 0n);
    const line = await nextLogLine(vhostd, RAM_WARNING, 0);
    assert.match(line, /warn: .*RAM disk/);
    assert.equal(countLogLines(vhostd, STARTED), 2, "the start line and the warning");

    startLogging(vhostd, bit(ProtocolFeature.DEVICE_STATE));
    await nextLogLine(vhostd, STARTED, 2);
    assert.equal(
      countLogLines(vhostd, RAM_WARNING),
      1,
      "no warning when DEVICE_STATE is negotiated",
    );
  });
  const dir = await Deno.makeTempDir({ prefix: "vhostd-dirty-" });
  try {
    await makeImage(`${dir}/disk.img`, 4 * 2 ** 20);
    await withVhostd({ args: ["--file", `${dir}/disk.img`] }, async (vhostd) => {
      startLogging(vhostd, 0n);
      await nextLogLine(vhostd, STARTED, 0);
      assert.equal(countLogLines(vhostd, RAM_WARNING), 0, "an image file needs no warning");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dirty log: the RAM-disk warning also comes when LOG_ALL precedes SET_LOG_BASE (QEMU's device start order)", async () => {
  await withVhostd({ args: ["--ram", "4M"] }, async (vhostd) => {
    startLogging(vhostd, 0n, true);
    await nextLogLine(vhostd, STARTED, 0);
    await nextLogLine(vhostd, RAM_WARNING, 0);
  });
});
