import assert from "node:assert/strict";
import { closeQuietly, ftruncate, memfdCreate, pipe2, pread, pwrite } from "../../ffi/mod.ts";
import { StateTransfer } from "./state_transfer.ts";
import type { DeviceDescription } from "./transfer.ts";

const SIZE = 8 << 20;
const device: DeviceDescription = {
  kind: "blk",
  identity: { size: SIZE, readOnly: false, backing: "ram" },
  vhostd: "test",
};

function ramDisk(): number {
  const fd = memfdCreate("transfer-test");
  ftruncate(fd, SIZE);
  return fd;
}

async function transfer(
  from: DeviceDescription,
  to: DeviceDescription,
  sourceFd: number,
  targetFd: number,
  dumpPath?: string,
) {
  const [r, w] = pipe2();
  const save = new StateTransfer({
    direction: "save",
    fd: w,
    device: from,
    snapshot: { state: { writeback: false }, ramDisk: { fd: sourceFd, size: SIZE } },
    dumpPath,
  });
  const load = new StateTransfer({
    direction: "load",
    fd: r,
    device: to,
    staging: { ramDisk: { fd: targetFd, size: SIZE } },
  });
  return [await save.finished(), await load.finished()] as const;
}

Deno.test("a SAVE Worker and a LOAD Worker move a RAM disk and its state through a pipe", async () => {
  const source = ramDisk();
  const target = ramDisk();
  const dir = await Deno.makeTempDir();
  try {
    const pattern = crypto.getRandomValues(new Uint8Array(65536));
    pwrite(source, pattern, 3 << 20);
    pwrite(source, pattern.subarray(0, 100), SIZE - 100);
    const [saved, loaded] = await transfer(device, device, source, target, `${dir}/dump`);
    assert.equal(saved.ok, true, saved.error);
    assert.equal(loaded.ok, true, loaded.error);
    assert.equal(loaded.bytes, saved.bytes);
    assert.deepEqual(loaded.state, { writeback: false });
    const back = new Uint8Array(65536);
    pread(target, back, 3 << 20);
    assert.deepEqual(back, pattern);
    const tail = new Uint8Array(100);
    pread(target, tail, SIZE - 100);
    assert.deepEqual(tail, pattern.subarray(0, 100));
    assert.equal((await Deno.stat(`${dir}/dump`)).size, saved.bytes, "dump holds the whole stream");
  } finally {
    closeQuietly(source);
    closeQuietly(target);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a LOAD for another configuration fails with the differing field", async () => {
  const source = ramDisk();
  const target = ramDisk();
  try {
    const other = { ...device, identity: { ...device.identity, readOnly: true } };
    const [saved, loaded] = await transfer(device, other, source, target);
    assert.equal(loaded.ok, false);
    assert.match(loaded.error ?? "", /readOnly/);
    // The saver sees its reader go away, or finishes first: either way it reports and closes.
    assert.equal(typeof saved.ok, "boolean");
  } finally {
    closeQuietly(source);
    closeQuietly(target);
  }
});

Deno.test("a LOAD whose writer closes early fails as truncated", async () => {
  const target = ramDisk();
  const [r, w] = pipe2();
  try {
    const load = new StateTransfer({
      direction: "load",
      fd: r,
      device,
      staging: { ramDisk: { fd: target, size: SIZE } },
    });
    closeQuietly(w);
    const outcome = await load.finished();
    assert.equal(outcome.ok, false);
    assert.match(outcome.error ?? "", /truncated|empty|not a vhostd state/);
  } finally {
    closeQuietly(target);
  }
});

Deno.test("cancel() ends a transfer Worker blocked on a pipe whose peer holds it open and never moves a byte", async () => {
  for (const direction of ["save", "load"] as const) {
    const disk = ramDisk();
    // Random data does not fit the pipe (SAVE); an empty pipe has nothing to read (LOAD).
    if (direction === "save") pwrite(disk, crypto.getRandomValues(new Uint8Array(65536)), 0);
    const [r, w] = pipe2();
    // The Worker gets one end; the test holds the other and does nothing with it.
    const held = direction === "save" ? r : w;
    const transfer = direction === "save"
      ? new StateTransfer({
        direction,
        fd: w,
        device,
        snapshot: {
          state: { writeback: false },
          ramDisk: { fd: disk, size: SIZE },
        },
      })
      : new StateTransfer({
        direction,
        fd: r,
        device,
        staging: { ramDisk: { fd: disk, size: SIZE } },
      });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      transfer.cancel("test");
      assert.equal(transfer.cancelled, true);
      const outcome = await transfer.finished();
      assert.equal(outcome.ok, false);
      assert.match(outcome.error ?? "", /aborted \(test\): transfer cancelled/);
    } finally {
      closeQuietly(held);
      closeQuietly(disk);
    }
  }
});
