/**
 * Memory slots and the dirty log's size through a real vhostd process:
 * GET_MAX_MEM_SLOTS offers 509 like rust-vmm's vhost-user-backend and
 * virtiofsd; 509 regions hot-plugged one by one with ADD_MEM_REG (as QEMU
 * does) all serve I/O and the 510th is refused; REM_MEM_REG identifies a
 * region by guest address, size and user address; SET_LOG_BASE refuses a
 * log smaller than guest memory, and a table that grows past the log later
 * is accepted with a warning, the back-end never writing outside the log.
 */

import assert from "node:assert/strict";
import {
  closeQuietly,
  ftruncate,
  MAP_SHARED,
  mapArrayBuffer,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "../ffi/mod.ts";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import {
  BackendRefused,
  DEFAULT_PROTOCOL_FEATURES,
  SharedGuestMemory,
  STATUS_UNSET,
} from "../src/frontend/mod.ts";
import { bit, ProtocolFeature, VirtioFeature } from "../src/protocol/mod.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { countLogLines, nextLogLine } from "./support/state_tools.ts";
import { SharedLog } from "./support/shared_log.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const SLOTS = 509;
const PAGE = 4096;
/** Size of each hot-plugged region. */
const REGION = 64 * 1024;
/** Guest memory one byte of log covers (8 pages). */
const PER_LOG_BYTE = 8 * PAGE;
const LOG_ALL = bit(VirtioFeature.LOG_ALL);

/** A write from `buffer` to `sector`, then a read back into `into`: both must carry `data`. */
function roundTrip(
  s: BlkFixture,
  buffer: number,
  into: number,
  sector: number,
  data: Uint8Array,
): void {
  const { driver, memory } = s;
  memory.bytes(buffer, data.length).set(data);
  const w = driver.submit(0, { op: "write", sector, length: data.length, buffer });
  assert.equal(driver.waitFor(0, w).status, BlkStatus.OK, `write from 0x${buffer.toString(16)}`);
  memory.bytes(into, data.length).fill(0);
  const r = driver.submit(0, { op: "read", sector, length: data.length, buffer: into });
  const c = driver.waitFor(0, r);
  assert.equal(c.status, BlkStatus.OK, `read into 0x${into.toString(16)}`);
  assert.equal(c.written, data.length + 1);
  assert.deepEqual(memory.bytes(into, data.length), data);
}

Deno.test("memory slots: GET_MAX_MEM_SLOTS is 509; 509 regions added one by one serve I/O in the first, a middle and the last; the 510th is refused", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, ({ socketPath }) => {
    // Rings and the driver's buffer pool fit in the first REGION bytes.
    using s = BlkFixture.open(socketPath, { memorySize: SLOTS * REGION, bufferPoolBytes: 16384 });
    const { client, memory, driver } = s;
    assert.equal(client.getMaxMemSlots(), SLOTS);

    // From the one region of SET_MEM_TABLE to 509 hot-plugged ones, the ring stopped meanwhile.
    const position = driver.stopQueue(0);
    client.remMemReg(memory.regionDescs()[0]);
    const descs = memory.splitRegionDescs(SLOTS);
    const started = performance.now();
    client.addMemRegs(descs, memory.fd);
    const elapsed = performance.now() - started;
    console.log(
      `${SLOTS} ADD_MEM_REG: ${elapsed.toFixed(0)} ms (${(elapsed / SLOTS).toFixed(2)} ms each)`,
    );

    const extra = SharedGuestMemory.create({ size: REGION, guestBase: memory.guestEnd + REGION });
    try {
      assert.throws(
        () => client.addMemReg(extra.regionDescs()[0], extra.fd),
        (e) => e instanceof BackendRefused && e.request === "ADD_MEM_REG",
        "the 510th region",
      );
    } finally {
      extra.close();
    }
    driver.restartQueue(0, position);

    const base = memory.guestBase;
    const len = 8192;
    // The end of the first region (past the rings and pool), the first byte of a
    // middle region, the very last bytes of the last region.
    const buffers = [
      base + REGION - len,
      base + 254 * REGION,
      base + SLOTS * REGION - len,
    ];
    for (const [i, buffer] of buffers.entries()) {
      const other = buffers[(i + 1) % buffers.length];
      roundTrip(s, buffer, other, 16 * i, pattern(len, 40 + i));
    }
    // A buffer across two adjacent regions is one guest range: split at the boundary.
    const across = base + 100 * REGION - len / 2;
    roundTrip(s, across, buffers[1], 64, pattern(len, 50));
    // One reaching past the last region is refused, and the ring goes on.
    const past = base + SLOTS * REGION - 512;
    const bad = driver.submit(0, { op: "read", sector: 0, length: 1024, buffer: past });
    const c = driver.waitFor(0, bad);
    assert.equal(c.written, 0);
    assert.equal(c.status, STATUS_UNSET);
    assert.equal(driver.read(0, 16, len).status, BlkStatus.OK, "the ring goes on");
  });
});

Deno.test("memory slots: REM_MEM_REG with the right guest address and size but another user address is refused and the region stays", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, ({ socketPath }) => {
    using s = BlkFixture.open(socketPath);
    const extra = SharedGuestMemory.create({ size: 256 * 1024, guestBase: 0x8000_0000 });
    try {
      const [region] = extra.regionDescs();
      s.client.addMemReg(region, extra.fd);
      const buffer = extra.alloc(4096, 512);
      const use = (seed: number) => {
        extra.bytes(buffer, 4096).set(pattern(4096, seed));
        const w = s.driver.submit(0, { op: "write", sector: 8, buffer, length: 4096 });
        return s.driver.waitFor(0, w);
      };
      assert.equal(use(1).status, BlkStatus.OK);

      for (const userAddr of [region.userAddr + 4096n, region.userAddr - 4096n, 0n]) {
        assert.throws(
          () => s.client.remMemReg({ ...region, userAddr }),
          (e) => e instanceof BackendRefused && e.request === "REM_MEM_REG",
          `user address 0x${userAddr.toString(16)}`,
        );
      }
      assert.equal(use(2).status, BlkStatus.OK, "the region is still there");
      assert.deepEqual(s.driver.read(0, 8, 4096).data, pattern(4096, 2));

      // The mmap offset is ignored: guest address, size and user address identify it.
      s.client.remMemReg({ ...region, mmapOffset: 0x1234_5000n });
      const gone = use(3);
      assert.equal(gone.written, 0, "the buffer is no longer guest memory");
      assert.equal(gone.status, STATUS_UNSET);
      assert.deepEqual(s.driver.read(0, 8, 4096).data, pattern(4096, 2));
    } finally {
      extra.close();
    }
  });
});

/** A memfd of one page whose first `size` bytes are shared as the log; the rest shows stray writes. */
class PageLog {
  readonly fd = memfdCreate("vhostd-test-page-log");
  readonly #address: bigint;
  readonly page: Uint8Array;

  constructor(readonly size: number) {
    ftruncate(this.fd, PAGE);
    this.#address = mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, this.fd, 0);
    this.page = new Uint8Array(mapArrayBuffer(this.#address, PAGE));
  }

  [Symbol.dispose](): void {
    munmap(this.#address, PAGE);
    closeQuietly(this.fd);
  }
}

Deno.test("dirty log size: SET_LOG_BASE refuses a log smaller than guest memory; memory added past the log later is accepted with a warning and never logged outside the log", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, async (vhostd) => {
    const memorySize = 8 * 2 ** 20;
    using s = BlkFixture.open(vhostd.socketPath, {
      memorySize,
      protocolFeatures: DEFAULT_PROTOCOL_FEATURES | bit(ProtocolFeature.LOG_SHMFD),
    });
    const { client, driver } = s;
    const needed = memorySize / PER_LOG_BYTE; // 256 bytes, what QEMU's vhost_get_log_size gives
    const refused = (e: unknown) => e instanceof BackendRefused && e.request === "SET_LOG_BASE";

    using short = new PageLog(needed - 1);
    assert.throws(
      () => client.setLogBase({ mmapSize: BigInt(short.size), mmapOffset: 0n }, short.fd),
      refused,
      "a log one byte short",
    );
    using log = new PageLog(needed);
    client.setLogBase({ mmapSize: BigInt(log.size), mmapOffset: 0n }, log.fd);
    client.setFeatures(driver.features | LOG_ALL);
    assert.equal(driver.read(0, 0, 4096).status, BlkStatus.OK);
    assert.ok(log.page.subarray(0, needed).some((b) => b !== 0), "the read was logged");

    // Refused again once a log is in place: the accepted one stays in use.
    assert.throws(
      () => client.setLogBase({ mmapSize: BigInt(short.size), mmapOffset: 0n }, short.fd),
      refused,
    );
    log.page.fill(0);
    assert.equal(driver.read(0, 0, 4096).status, BlkStatus.OK);
    assert.ok(log.page.some((b) => b !== 0), "still logging into the accepted log");
    assert.equal(short.page.some((b) => b !== 0), false, "the refused log is never written");

    // Memory hot-plugged past the log while logging runs: accepted, with a warning.
    const extra = SharedGuestMemory.create({ size: 64 * 1024, guestBase: 0x8000_0000 });
    try {
      client.addMemReg(extra.regionDescs()[0], extra.fd);
      const warning = await nextLogLine(vhostd, "the memory table reaches 0x80010000", 0);
      assert.match(warning, /warn: dirty log of 256 bytes covers guest memory up to 0x800000/);

      log.page.fill(0);
      const buffer = extra.alloc(4096, 4096);
      const r = driver.submit(0, { op: "read", sector: 0, length: 4096, buffer });
      assert.equal(driver.waitFor(0, r).status, BlkStatus.OK, "the new memory works");
      await nextLogLine(vhostd, `a write at 0x${buffer.toString(16)} is not logged`, 0);
      assert.equal(
        log.page.subarray(needed).some((b) => b !== 0),
        false,
        "nothing written past the log's 256 bytes",
      );

      // A log sized for the new table is accepted and covers the new memory.
      using big = new SharedLog(Math.ceil((extra.guestEnd) / PER_LOG_BYTE), 0);
      big.share(client);
      const again = driver.submit(0, { op: "read", sector: 0, length: 4096, buffer });
      assert.equal(driver.waitFor(0, again).status, BlkStatus.OK);
      assert.ok(big.markedPages().includes(buffer / PAGE), "the new memory is logged");
      assert.equal(countLogLines(vhostd, "is not logged"), 1, "the worker warned once");
    } finally {
      extra.close();
    }
  });
});
