import assert from "node:assert/strict";
import { getStatusFlags } from "../../../ffi/mod.ts";
import { bit, hasBit, VirtioFeature } from "../../protocol/mod.ts";
import { openBacking } from "./backing.ts";
import {
  BlkDevice,
  MAX_BLK_QUEUES,
  SYNC_DEFAULT_MAX_WORKERS,
  validateSerial,
} from "./blk_device.ts";
import { BLK_CONFIG_SIZE, BlkConfigOffset, BlkFeature, SECTOR_SIZE } from "./blk_spec.ts";
import { BlkSharedState } from "./blk_shared_state.ts";

const SECTORS = 2048;

function makeDevice(readOnly: boolean, numQueues = 3): BlkDevice {
  const backing = openBacking({ kind: "ram", size: SECTORS * SECTOR_SIZE, readOnly });
  return new BlkDevice(backing, { numQueues, queueSize: 256, serial: "disk-7" });
}

function withDevice(
  readOnly: boolean,
  body: (device: BlkDevice) => void,
): () => void {
  return () => {
    const device = makeDevice(readOnly);
    try {
      body(device);
    } finally {
      device.close();
    }
  };
}

function configView(device: BlkDevice): DataView {
  const config = device.readConfig();
  return new DataView(config.buffer, config.byteOffset, config.byteLength);
}

Deno.test(
  "writable device offers DISCARD and WRITE_ZEROES, not RO",
  withDevice(false, (device) => {
    const f = device.features();
    assert.ok(!hasBit(f, BlkFeature.RO));
    assert.ok(hasBit(f, BlkFeature.DISCARD));
    assert.ok(hasBit(f, BlkFeature.WRITE_ZEROES));
    for (
      const b of [
        BlkFeature.FLUSH,
        BlkFeature.BLK_SIZE,
        BlkFeature.SEG_MAX,
        BlkFeature.CONFIG_WCE,
        BlkFeature.MQ,
        VirtioFeature.VERSION_1,
        VirtioFeature.RING_INDIRECT_DESC,
        VirtioFeature.RING_EVENT_IDX,
      ]
    ) {
      assert.ok(hasBit(f, b), `feature bit ${b} missing`);
    }
    // The vhost-user bits belong to the back-end, not the device.
    assert.ok(!hasBit(f, VirtioFeature.PROTOCOL_FEATURES));
    assert.ok(!hasBit(f, VirtioFeature.LOG_ALL));
  }),
);

Deno.test(
  "read-only device offers RO and neither DISCARD nor WRITE_ZEROES",
  withDevice(true, (device) => {
    const f = device.features();
    assert.ok(hasBit(f, BlkFeature.RO));
    assert.ok(!hasBit(f, BlkFeature.DISCARD));
    assert.ok(!hasBit(f, BlkFeature.WRITE_ZEROES));
    assert.ok(hasBit(f, BlkFeature.FLUSH));
    assert.match(device.describe(), /read-only/);
  }),
);

Deno.test(
  "configuration space: capacity, blk_size, num_queues, writeback at offset 32",
  withDevice(false, (device) => {
    const config = device.readConfig();
    assert.equal(config.length, BLK_CONFIG_SIZE);
    const view = configView(device);
    assert.equal(view.getBigUint64(0, true), BigInt(SECTORS));
    assert.equal(view.getUint32(BlkConfigOffset.blkSize, true), 512);
    assert.equal(view.getUint16(BlkConfigOffset.numQueues, true), 3);
    assert.equal(BlkConfigOffset.writeback, 32);
    assert.equal(config[32], 1, "writeback is on by default");
    assert.ok(view.getUint32(BlkConfigOffset.segMax, true) > 0);
    assert.ok(view.getUint32(BlkConfigOffset.maxDiscardSectors, true) > 0);
    assert.ok(view.getUint32(BlkConfigOffset.maxDiscardSeg, true) > 0);
    assert.ok(view.getUint32(BlkConfigOffset.maxWriteZeroesSectors, true) > 0);
    assert.ok(view.getUint32(BlkConfigOffset.maxWriteZeroesSeg, true) > 0);
    assert.equal(config[BlkConfigOffset.writeZeroesMayUnmap], 1);
    assert.equal(view.getUint32(BlkConfigOffset.discardSectorAlignment, true), 1);
  }),
);

Deno.test(
  "writeConfig toggles writeback and the Workers' shared flag follows",
  withDevice(false, (device) => {
    const workerView = new BlkSharedState(device.workerSetup().shared);
    assert.equal(device.writeConfig(32, Uint8Array.of(0)), undefined);
    assert.equal(device.readConfig()[32], 0);
    assert.equal(device.shared.writeback, false);
    assert.equal(workerView.writeback, false);
    assert.equal(device.writeConfig(32, Uint8Array.of(1)), undefined);
    assert.equal(device.readConfig()[32], 1);
    assert.equal(workerView.writeback, true);

    // Rewriting a whole window with unchanged read-only bytes is fine.
    const window = device.readConfig().slice(30, 36);
    window[2] = 0;
    assert.equal(device.writeConfig(30, window), undefined);
    assert.equal(device.shared.writeback, false);
  }),
);

Deno.test(
  "writeConfig refuses changed read-only bytes, writeback > 1 and writes past the end",
  withDevice(false, (device) => {
    const before = device.readConfig();
    assert.match(device.writeConfig(0, Uint8Array.of(1))!, /read-only/);
    assert.match(device.writeConfig(34, Uint8Array.of(9, 0))!, /read-only/);
    assert.match(device.writeConfig(32, Uint8Array.of(2))!, /writeback/);
    assert.match(device.writeConfig(32, Uint8Array.of(255))!, /writeback/);
    assert.notEqual(device.writeConfig(BLK_CONFIG_SIZE - 1, Uint8Array.of(0, 0)), undefined);
    assert.notEqual(device.writeConfig(BLK_CONFIG_SIZE, Uint8Array.of(0)), undefined);
    // A refused window that also holds the writeback byte leaves writeback alone.
    const window = before.slice(31, 34);
    window[0] ^= 0xff;
    window[1] = 0;
    assert.notEqual(device.writeConfig(31, window), undefined);
    assert.deepEqual(device.readConfig(), before);
    assert.equal(device.shared.writeback, true);
  }),
);

Deno.test(
  "setAckedFeatures without CONFIG_WCE forces writeback; reset restores defaults",
  withDevice(false, (device) => {
    const all = device.features();
    device.setAckedFeatures(all);
    assert.equal(device.ackedFeatures(), all);
    assert.equal(device.writeConfig(32, Uint8Array.of(0)), undefined);
    assert.equal(device.shared.writeback, false);
    // With CONFIG_WCE acked again the driver's choice stands.
    device.setAckedFeatures(all);
    assert.equal(device.shared.writeback, false);
    device.setAckedFeatures(all & ~bit(BlkFeature.CONFIG_WCE));
    assert.equal(device.shared.writeback, true);

    assert.equal(device.writeConfig(32, Uint8Array.of(0)), undefined);
    device.reset();
    assert.equal(device.ackedFeatures(), 0n);
    assert.equal(device.shared.writeback, true);
    assert.equal(device.readConfig()[32], 1);
  }),
);

Deno.test(
  "cache mode follows virtio 5.2.6.2: without CONFIG_WCE, writeback exactly when FLUSH is negotiated",
  withDevice(false, (device) => {
    const all = device.features();
    const noWce = all & ~bit(BlkFeature.CONFIG_WCE);
    device.setAckedFeatures(noWce & ~bit(BlkFeature.FLUSH));
    assert.equal(device.shared.writeback, false, "no FLUSH: write-through");
    assert.equal(device.readConfig()[32], 0);
    device.setAckedFeatures(noWce);
    assert.equal(device.shared.writeback, true, "FLUSH: writeback");
    device.reset();

    // CONFIG_WCE without FLUSH: writeback starts at 0; the driver may still change it,
    // and the SET_FEATURES QEMU re-sends (dirty logging on/off) keep the driver's choice.
    const wceNoFlush = all & ~bit(BlkFeature.FLUSH);
    device.setAckedFeatures(wceNoFlush);
    assert.equal(device.shared.writeback, false);
    assert.equal(device.writeConfig(32, Uint8Array.of(1)), undefined);
    device.setAckedFeatures(wceNoFlush | bit(VirtioFeature.LOG_ALL));
    assert.equal(device.shared.writeback, true);
    device.reset();

    // CONFIG_WCE with FLUSH: writeback after the first negotiation, then the driver's choice.
    device.setAckedFeatures(all);
    assert.equal(device.shared.writeback, true);
    assert.equal(device.writeConfig(32, Uint8Array.of(0)), undefined);
    device.setAckedFeatures(all | bit(VirtioFeature.LOG_ALL));
    assert.equal(device.shared.writeback, false);
  }),
);

Deno.test("workerSetup names the engine and, for --cache none, the O_DIRECT alignment", () => {
  const path = Deno.makeTempFileSync({ dir: "/var/tmp", prefix: "vhostd-blk-dev-test-" });
  try {
    Deno.truncateSync(path, 1 << 20);
    const ram = new BlkDevice(openBacking({ kind: "ram", size: 1 << 20, readOnly: false }), {
      numQueues: 2,
      queueSize: 128,
      serial: "s",
      aio: "io_uring",
    });
    const params = ram.workerSetup().params;
    assert.equal(params.aio, "io_uring");
    assert.equal(params.queueSize, 128);
    assert.equal(params.numQueues, 2);
    assert.equal(params.direct, undefined);
    assert.match(ram.describe(), /aio io_uring, cache writeback/);
    ram.close();
    let backing;
    try {
      backing = openBacking({ kind: "file", path, readOnly: false, cache: "none" });
    } catch (e) {
      console.log(`O_DIRECT part skipped: ${e instanceof Error ? e.message : e}`);
      return;
    }
    const file = new BlkDevice(backing, { numQueues: 1, queueSize: 64, serial: "s" });
    const fileParams = file.workerSetup().params;
    assert.equal(fileParams.aio, "sync");
    assert.deepEqual(fileParams.direct, { ...backing.direct });
    assert.deepEqual(structuredClone(fileParams), fileParams);
    assert.match(file.describe(), /aio sync, cache none \(O_DIRECT\)/);
    file.close();
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test(
  "workerSetup carries the backing (fd in shared state) as plain data",
  withDevice(true, (device) => {
    const setup = device.workerSetup();
    assert.equal(setup.kind, "blk");
    assert.equal(setup.shared, device.shared.buffer);
    // The fd travels in shared memory: a LOAD can replace it while Workers keep running.
    assert.equal(new BlkSharedState(setup.shared).backingFd, device.backing.fd);
    assert.equal(setup.params.size, SECTORS * SECTOR_SIZE);
    assert.equal(setup.params.readOnly, true);
    assert.equal(setup.params.serial, "disk-7");
    // Everything must survive a structured clone (it is posted to Workers).
    assert.deepEqual(structuredClone(setup.params), setup.params);
  }),
);

Deno.test("close() closes the backing fd", () => {
  const device = makeDevice(false);
  const fd = device.backing.fd;
  getStatusFlags(fd);
  const target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  device.close();
  // Test modules run in parallel in one process: another may reuse the number at once.
  let now: string | undefined;
  try {
    now = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    assert.ok(e instanceof Deno.errors.NotFound, String(e));
  }
  assert.notEqual(now, target, "the backing's fd still open after close()");
});

Deno.test("validateSerial accepts up to 20 printable ASCII bytes", () => {
  assert.equal(validateSerial(""), undefined);
  assert.equal(validateSerial("a".repeat(20)), undefined);
  assert.equal(validateSerial("Disk 1 ~!@#$%^&*()_+"), undefined);
  assert.match(validateSerial("a".repeat(21))!, /20 bytes/);
  // Multi-byte characters count in bytes, and are not ASCII anyway.
  assert.notEqual(validateSerial("é".repeat(11)), undefined);
  assert.match(validateSerial("é")!, /ASCII/);
  assert.match(validateSerial("tab\there")!, /ASCII/);
  assert.match(validateSerial("nul\0")!, /ASCII/);
});

Deno.test("with io_uring one Worker serves every queue; sync: one per queue up to CPUs and a cap", () => {
  const cpus = navigator.hardwareConcurrency || 1;
  const cases = [
    ["io_uring", 64, 1],
    ["sync", 1, 1],
    ["sync", 64, Math.min(cpus, SYNC_DEFAULT_MAX_WORKERS)],
    ["sync", MAX_BLK_QUEUES, Math.min(cpus, SYNC_DEFAULT_MAX_WORKERS)],
  ] as const;
  for (const [aio, numQueues, workers] of cases) {
    const backing = openBacking({ kind: "ram", size: SECTORS * SECTOR_SIZE, readOnly: false });
    const device = new BlkDevice(backing, { numQueues, queueSize: 256, serial: "d", aio });
    try {
      assert.equal(device.preferredWorkers, workers, `${aio}, ${numQueues} queues`);
    } finally {
      device.close();
    }
  }
});

Deno.test("a device offers 1 to MAX_BLK_QUEUES request queues and says so in its config", () => {
  const device = makeDevice(false, MAX_BLK_QUEUES);
  try {
    assert.equal(device.numQueues, MAX_BLK_QUEUES);
    assert.equal(configView(device).getUint16(BlkConfigOffset.numQueues, true), MAX_BLK_QUEUES);
  } finally {
    device.close();
  }
  for (const bad of [0, MAX_BLK_QUEUES + 1, 1.5]) {
    assert.throws(() => makeDevice(false, bad), RangeError);
  }
});
