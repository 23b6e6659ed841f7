import assert from "node:assert/strict";
import {
  closeQuietly,
  O_CLOEXEC,
  O_CREAT,
  O_RDWR,
  openFile,
  pread,
  pwrite,
} from "../../../ffi/mod.ts";
import { loadState, saveState } from "../../migration/transfer.ts";
import { openBacking } from "./backing.ts";
import { BlkDevice } from "./blk_device.ts";
import { decodeBlkState } from "./blk_state.ts";

const MiB = 1 << 20;

function ramDevice(size = 4 * MiB, serial = "state-test"): BlkDevice {
  return new BlkDevice(openBacking({ kind: "ram", size, readOnly: false }), {
    numQueues: 1,
    queueSize: 128,
    serial,
  });
}

function describeDevice(device: BlkDevice) {
  return { kind: "blk", identity: device.stateSupport!.identity(), vhostd: "test" };
}

/** SAVE `from` into a temp file, then LOAD the file into `to` as the back-end does. */
function moveState(from: BlkDevice, to: BlkDevice, dir: string): string | undefined {
  const path = `${dir}/state`;
  const out = openFile(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
  try {
    saveState(out, describeDevice(from), from.stateSupport!.snapshot());
  } finally {
    closeQuietly(out);
  }
  const input = openFile(path, O_RDWR | O_CLOEXEC);
  const support = to.stateSupport!;
  const staging = support.prepareLoad();
  try {
    const { metadata } = loadState(input, describeDevice(to), staging);
    support.applyLoad(metadata.state, staging);
    return undefined;
  } catch (e) {
    support.discardLoad(staging);
    return e instanceof Error ? e.message : String(e);
  } finally {
    closeQuietly(input);
  }
}

Deno.test("a RAM disk's contents, cache mode, features and counters move to another device", async () => {
  const dir = await Deno.makeTempDir();
  const source = ramDevice();
  const target = ramDevice();
  try {
    const data = crypto.getRandomValues(new Uint8Array(8192));
    pwrite(source.backingFd, data, 3 * MiB);
    source.setAckedFeatures(source.features());
    source.writeConfig(32, new Uint8Array([0])); // write-through
    source.shared.count("writes", 7);
    const snapshotFd = source.backingFd;
    assert.equal(moveState(source, target, dir), undefined);
    const back = new Uint8Array(8192);
    pread(target.backingFd, back, 3 * MiB);
    assert.deepEqual(back, data);
    assert.equal(target.writeback, false);
    assert.equal(target.ackedFeatures(), source.features());
    assert.equal(target.counters().writes, 7n);
    // SAVE did not change the source.
    assert.equal(source.backingFd, snapshotFd);
    assert.equal(source.writeback, false);
  } finally {
    source.close();
    target.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a state for another disk size is refused and the target keeps what it had", async () => {
  const dir = await Deno.makeTempDir();
  const source = ramDevice(4 * MiB);
  const target = ramDevice(8 * MiB);
  try {
    pwrite(target.backingFd, new Uint8Array([42]), 0);
    const fdBefore = target.backingFd;
    const error = moveState(source, target, dir);
    assert.match(error ?? "", /size is 4194304 in the state, 8388608 here/);
    assert.equal(target.backingFd, fdBefore);
    const byte = new Uint8Array(1);
    pread(target.backingFd, byte, 0);
    assert.equal(byte[0], 42);
    assert.equal(target.writeback, true);
  } finally {
    source.close();
    target.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a loaded cache mode survives the start sequence's reset, not a later one", async () => {
  const dir = await Deno.makeTempDir();
  const source = ramDevice();
  const target = ramDevice();
  try {
    source.writeConfig(32, new Uint8Array([0]));
    assert.equal(moveState(source, target, dir), undefined);
    target.reset();
    target.setAckedFeatures(0n);
    assert.equal(target.writeback, false, "start sequence must not undo the loaded state");
    target.ringStarted();
    target.reset();
    assert.equal(target.writeback, true);
  } finally {
    source.close();
    target.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("decodeBlkState refuses malformed states with a reason", () => {
  const offered = 0xffn;
  const good = { features: "0x3", writeback: true, counters: { reads: "5" } };
  assert.equal(decodeBlkState(good, offered).counters.reads, 5n);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...good, features: 3 }, /hex string/],
    [{ ...good, features: "0x100" }, /not offered/],
    [{ ...good, writeback: "yes" }, /writeback/],
    [{ ...good, counters: [] }, /counters must be an object/],
    [{ ...good, counters: { reads: "-1" } }, /decimal/],
  ];
  for (const [state, reason] of cases) assert.throws(() => decodeBlkState(state, offered), reason);
});
