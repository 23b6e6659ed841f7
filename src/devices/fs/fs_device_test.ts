import assert from "node:assert/strict";
import { hasBit, VirtioFeature } from "../../protocol/mod.ts";
import type { DeviceWorkerChannel } from "../device.ts";
import { FsDevice, type FsDeviceOptions, type FsWorkerParams } from "./fs_device.ts";
import { decodeFsConfig, FS_CONFIG_SIZE, FsConfigOffset, FsFeature } from "./fs_spec.ts";

const OPTIONS: FsDeviceOptions = {
  sharedDir: "/srv/share",
  tag: "data",
  numRequestQueues: 2,
  readOnly: true,
  migrationOnError: "guest-error",
};

/** A Worker channel that records commands and answers with `answer`. */
class FakeChannel implements DeviceWorkerChannel {
  readonly requests: unknown[] = [];
  constructor(readonly answer: (request: unknown) => unknown) {}
  command(request: unknown): Promise<unknown[]> {
    this.requests.push(request);
    try {
      return Promise.resolve([this.answer(request)]);
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

Deno.test("fs device: queues, one Worker, ring features only", () => {
  const device = new FsDevice(OPTIONS);
  assert.equal(device.kind, "fs");
  assert.equal(device.numQueues, 3);
  assert.equal(device.maxWorkers, 1);
  const f = device.features();
  assert.ok(hasBit(f, VirtioFeature.VERSION_1));
  assert.ok(hasBit(f, VirtioFeature.RING_INDIRECT_DESC));
  assert.ok(hasBit(f, VirtioFeature.RING_EVENT_IDX));
  assert.ok(!hasBit(f, FsFeature.NOTIFICATION));
  device.setAckedFeatures(f);
  assert.equal(device.ackedFeatures(), f);
  device.reset();
  assert.equal(device.ackedFeatures(), 0n);
  assert.match(device.describe(), /"data".*\/srv\/share read-only, 2 request queue/);
});

Deno.test("fs device: bad tags and queue counts are refused", () => {
  assert.throws(() => new FsDevice({ ...OPTIONS, tag: "" }), RangeError);
  assert.throws(() => new FsDevice({ ...OPTIONS, tag: "x".repeat(37) }), RangeError);
  assert.throws(() => new FsDevice({ ...OPTIONS, numRequestQueues: 0 }), RangeError);
});

Deno.test("fs device: the configuration space is read-only", () => {
  const device = new FsDevice(OPTIONS);
  const config = device.readConfig();
  assert.deepEqual(decodeFsConfig(config), { tag: "data", numRequestQueues: 2 });
  assert.equal(device.writeConfig(0, config), undefined, "unchanged bytes are accepted");
  assert.equal(device.writeConfig(FsConfigOffset.numRequestQueues, Uint8Array.of(2)), undefined);
  assert.match(device.writeConfig(0, Uint8Array.of(0x41))!, /read-only/);
  assert.match(device.writeConfig(FsConfigOffset.numRequestQueues, Uint8Array.of(5))!, /read-only/);
  assert.match(device.writeConfig(FS_CONFIG_SIZE - 1, Uint8Array.of(0, 0))!, /past the end/);
  config[0] = 0; // the caller's copy, not the device's
  assert.deepEqual(decodeFsConfig(device.readConfig()).tag, "data");
});

Deno.test("fs device: Worker parameters are plain data", () => {
  const setup = new FsDevice(OPTIONS).workerSetup();
  assert.equal(setup.kind, "fs");
  const params = setup.params as FsWorkerParams;
  assert.deepEqual(params, {
    sharedDir: "/srv/share",
    readOnly: true,
    migrationOnError: "guest-error",
    cache: "auto",
    aio: "sync",
    xattrOptions: {},
    inodeFileHandles: "never",
    migrationMode: "find-paths",
  });
  const prefer = new FsDevice({ ...OPTIONS, inodeFileHandles: "prefer" }).workerSetup();
  assert.equal((prefer.params as FsWorkerParams).inodeFileHandles, "prefer");
  assert.ok(setup.shared instanceof SharedArrayBuffer);
  assert.deepEqual(structuredClone(setup.params), setup.params);
  const xattrOptions = { xattr: true, posixAcl: true, xattrMapping: ":ok:all:::" };
  const withXattr = new FsDevice({ ...OPTIONS, xattrOptions }).workerSetup();
  assert.deepEqual((withXattr.params as FsWorkerParams).xattrOptions, xattrOptions);
  assert.deepEqual(structuredClone(withXattr.params), withXattr.params);
});

Deno.test("fs device: state identity leaves the directory out; snapshot and load go to the Worker", async () => {
  const device = new FsDevice(OPTIONS);
  const support = device.stateSupport;
  assert.deepEqual(support.identity(), { tag: "data", numRequestQueues: 2, readOnly: true });
  assert.deepEqual(
    new FsDevice({ ...OPTIONS, sharedDir: "/elsewhere" }).stateSupport.identity(),
    support.identity(),
  );
  await assert.rejects(() => support.snapshot(), /not running/);
  const state = {
    session: { initialized: true, minor: 37, flags: 1, flags2: 0 },
    fs: { version: 1, inodes: [] },
  };
  const channel = new FakeChannel((request) => {
    const op = (request as { op: string }).op;
    if (op === "snapshot") return state;
    if (op === "restore") return { errors: [] };
    throw new Error("unexpected");
  });
  device.attachWorkers(channel);
  const snapshot = await support.snapshot();
  assert.deepEqual(snapshot.state, state);
  assert.equal(snapshot.ramDisk, undefined);
  assert.deepEqual(support.prepareLoad(), {});
  await support.applyLoad(state, {});
  assert.deepEqual(channel.requests, [{ op: "snapshot" }, { op: "restore", state }]);
  // A malformed state is refused before anything reaches the Worker.
  await assert.rejects(() => support.applyLoad({ session: {} }, {}), /fs state: /);
  assert.equal(channel.requests.length, 2);
  assert.ok(support.migrationWarning()?.includes("DEVICE_STATE"));
});

Deno.test("fs device: a Worker that refuses the load makes applyLoad fail with its reason", async () => {
  const device = new FsDevice(OPTIONS);
  device.attachWorkers(
    new FakeChannel(() => {
      throw new Error('fs restore failed: inode 2 ("gone") cannot be found');
    }),
  );
  await assert.rejects(
    () =>
      Promise.resolve(device.stateSupport.applyLoad({
        session: { initialized: true, minor: 37, flags: 0, flags2: 0 },
        fs: {},
      }, {})),
    /cannot be found/,
  );
});
