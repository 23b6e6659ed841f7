import assert from "node:assert/strict";
import { VsockDevice } from "./vsock_device.ts";
import { createMainSocket } from "./vsock_command.ts";
import { hasBit, VirtioFeature } from "../../protocol/mod.ts";
import { describeVsockState } from "./vsock_state.ts";

function device(dir: string, guestCid = 42): VsockDevice {
  const udsPath = `${dir}/v.sock`;
  return new VsockDevice({
    guestCid,
    udsPath,
    listenFd: createMainSocket(udsPath),
    queueSize: 128,
  });
}

Deno.test("vsock device: two back-end queues, one Worker, config = le64 guest CID, read-only", () => {
  const dir = Deno.makeTempDirSync();
  const d = device(dir);
  try {
    assert.equal(d.numQueues, 2);
    assert.equal(d.maxWorkers, 1);
    assert.ok(hasBit(d.features(), VirtioFeature.VERSION_1));
    assert.equal(d.features() & 0b11n, 0n, "no SEQPACKET (stream only)");
    assert.deepEqual([...d.readConfig()], [42, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(d.writeConfig(0, new Uint8Array([42])), undefined, "same bytes accepted");
    assert.match(d.writeConfig(0, new Uint8Array([7]))!, /read-only/);
    assert.match(d.writeConfig(6, new Uint8Array(4))!, /past the end/);
    const setup = d.workerSetup();
    assert.equal(setup.kind, "vsock");
    assert.equal(setup.params.guestCid, 42);
  } finally {
    d.close();
    assert.throws(() => Deno.lstatSync(`${dir}/v.sock`), Deno.errors.NotFound, "socket removed");
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("vsock state: the guest CID must match; features checked; inspect view", async () => {
  const dir = Deno.makeTempDirSync();
  const d = device(dir, 42);
  Deno.mkdirSync(`${dir}/o`);
  const other = device(`${dir}/o`, 43);
  try {
    d.setAckedFeatures(d.features());
    const snap = await d.stateSupport.snapshot();
    assert.deepEqual(d.stateSupport.identity(), { guestCid: 42 });
    assert.deepEqual(snap.state, { guestCid: 42, features: `0x${d.features().toString(16)}` });
    d.reset();
    assert.equal(d.ackedFeatures(), 0n);
    d.stateSupport.applyLoad(snap.state);
    assert.equal(d.ackedFeatures(), d.features());
    assert.throws(() => other.stateSupport.applyLoad(snap.state), /saved for guest CID 42/);
    assert.throws(
      () => d.stateSupport.applyLoad({ ...snap.state, features: "0x1" }),
      /not offered/,
    );
    assert.throws(
      () => d.stateSupport.applyLoad({ guestCid: "42", features: "0x0" }),
      /whole number/,
    );
    assert.deepEqual(describeVsockState(snap.state).slice(0, 1), ["vsock: guest CID 42"]);
    assert.deepEqual(describeVsockState(null), ["vsock: no device state object"]);
    assert.match(describeVsockState({ guestCid: "x" })[0], /<bad/);
  } finally {
    d.close();
    other.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
