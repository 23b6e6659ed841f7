/**
 * What a LOAD leaves behind once its start sequence is over, through the
 * framework (a real vhostd, the TypeScript front-end): the loaded cache mode
 * (writeback off) survives the start sequence that follows the LOAD — on the
 * same connection, and on the next one after the loading front-end left (as
 * `vhostd state load` then QEMU) — and is forgotten by the first
 * RESET_DEVICE after a ring ran: the next start sequence gets the default
 * (writeback, as negotiated with FLUSH and CONFIG_WCE), and so does the next
 * front-end.
 */

import assert from "node:assert/strict";
import { BlkConfigOffset, BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { BlkDriver, SharedGuestMemory, VhostUserClient } from "../src/frontend/mod.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import {
  loadFromBytes,
  metadataOf,
  negotiateForState,
  saveToBytes,
  STATE_PROTOCOL_FEATURES,
} from "./support/state_tools.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const MEMORY_SIZE = 8 * 2 ** 20;

/** The writeback byte of the configuration space. */
function writebackByte(client: VhostUserClient): number {
  return client.getConfig(BlkConfigOffset.writeback, 1)[0];
}

/** A negotiated connection with no memory and no rings (a VMM before its start sequence). */
function stateClient(vhostd: VhostdProcess): VhostUserClient {
  const client = VhostUserClient.connect(vhostd.socketPath);
  try {
    negotiateForState(client);
    return client;
  } catch (e) {
    client.close();
    throw e;
  }
}

/** The start sequence a VMM runs on a negotiated connection: features, memory, one ring. */
function startDriver(client: VhostUserClient, memory: SharedGuestMemory): BlkDriver {
  return BlkDriver.setup(client, memory, {
    numQueues: 1,
    queueSize: 64,
    protocolFeatures: STATE_PROTOCOL_FEATURES,
    bufferPoolBytes: 1 * 2 ** 20,
  });
}

/** A write and its read-back through the running ring. */
function assertIo(driver: BlkDriver, seed: number, what: string): void {
  const data = pattern(4096, seed);
  assert.equal(driver.write(0, 8 * seed, data).status, BlkStatus.OK, `${what}: write`);
  const back = driver.read(0, 8 * seed, 4096);
  assert.equal(back.status, BlkStatus.OK, `${what}: read`);
  assert.deepEqual(back.data, data, `${what}: read-back`);
}

/** A state of this back-end with writeback off, saved by a front-end that switched it off. */
function stateWithWritebackOff(vhostd: VhostdProcess): Uint8Array {
  using s = BlkFixture.open(vhostd.socketPath, { protocolFeatures: STATE_PROTOCOL_FEATURES });
  assert.equal(s.driver.config.writeback, true, "the default is writeback");
  s.driver.setWriteback(false);
  assertIo(s.driver, 1, "saving session");
  s.driver.stopQueue(0);
  const stream = saveToBytes(s.client);
  assert.equal(metadataOf(stream).state.writeback, false);
  return stream;
}

/** RESET_DEVICE, then the start sequence again on the same connection: the default is back. */
function assertResetRestoresDefault(client: VhostUserClient, memory: SharedGuestMemory): void {
  client.resetDevice();
  assert.equal(writebackByte(client), 1, "RESET_DEVICE after the ring ran: writeback again");
  const driver = startDriver(client, memory);
  try {
    assert.equal(driver.config.writeback, true, "the next start sequence gets the default");
    assertIo(driver, 3, "after RESET_DEVICE");
  } finally {
    driver.close();
  }
}

Deno.test("a loaded writeback-off survives its start sequence and is forgotten by the next RESET_DEVICE", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, (vhostd) => {
    const stream = stateWithWritebackOff(vhostd);
    const client = stateClient(vhostd);
    const memory = SharedGuestMemory.create({ size: MEMORY_SIZE });
    try {
      assert.equal(writebackByte(client), 1, "a new front-end starts with the default");
      loadFromBytes(client, stream);
      assert.equal(writebackByte(client), 0, "the LOAD brought writeback off");
      // QEMU's start sequence after a LOAD may begin with a reset; it must not undo the LOAD.
      client.resetDevice();
      assert.equal(writebackByte(client), 0, "a reset before the start sequence keeps it");
      const driver = startDriver(client, memory);
      try {
        assert.equal(driver.config.writeback, false, "writeback off survives the start sequence");
        assertIo(driver, 2, "after the LOAD");
        assert.equal(writebackByte(client), 0);
      } finally {
        driver.close();
      }
      assertResetRestoresDefault(client, memory);
    } finally {
      client.close();
      memory.close();
    }
    // And the next front-end finds the default too.
    using next = BlkFixture.open(vhostd.socketPath);
    assert.equal(next.driver.config.writeback, true, "the next front-end gets the default");
  });
});

Deno.test("a state loaded by a front-end that then left survives the next front-end's start sequence, until its RESET_DEVICE", async () => {
  await withVhostd({ args: ["--ram", "1M"] }, (vhostd) => {
    const stream = stateWithWritebackOff(vhostd);
    // `vhostd state load`: load, and leave before any start sequence.
    const loader = stateClient(vhostd);
    try {
      loadFromBytes(loader, stream);
    } finally {
      loader.close();
    }
    const client = stateClient(vhostd);
    const memory = SharedGuestMemory.create({ size: MEMORY_SIZE });
    try {
      assert.equal(writebackByte(client), 0, "the loaded state waits for the start sequence");
      const driver = startDriver(client, memory);
      try {
        assert.equal(driver.config.writeback, false, "writeback off survives the start sequence");
        assertIo(driver, 2, "after the LOAD");
      } finally {
        driver.close();
      }
      assertResetRestoresDefault(client, memory);
    } finally {
      client.close();
      memory.close();
    }
  });
});
