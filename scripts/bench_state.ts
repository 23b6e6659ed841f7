/**
 * Device-state throughput: SAVE and LOAD of a RAM disk full of random data
 * through a pipe, in MiB/s (issue #3's goal: at least 1 GiB/s each way).
 * Until the DEVICE_STATE messages land in the back-end this measures the
 * transfer path itself: a SAVE Worker streaming into a pipe that a LOAD
 * Worker reads into a staging memfd, as the daemon will run them.
 *
 * @module
 */

import { closeQuietly, ftruncate, memfdCreate, pipe2, pwrite, setPipeSize } from "../ffi/mod.ts";
import { StateTransfer } from "../src/migration/state_transfer.ts";

/** Fills `bytes` with random data (getRandomValues takes at most 64 KiB at a time). */
export function fillRandom(bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length; off += 65536) {
    crypto.getRandomValues(bytes.subarray(off, Math.min(off + 65536, bytes.length)));
  }
}

/** Runs the state transfer benchmark on a RAM disk of `size` bytes. */
export async function runStateBench(size: number): Promise<void> {
  const source = memfdCreate("bench-source");
  const target = memfdCreate("bench-target");
  try {
    ftruncate(source, size);
    ftruncate(target, size);
    const chunk = new Uint8Array(1 << 20);
    for (let off = 0; off < size; off += chunk.length) {
      fillRandom(chunk);
      pwrite(source, chunk, off);
    }
    const device = { kind: "blk", identity: { size }, vhostd: "bench" };
    const [r, w] = pipe2();
    setPipeSize(w, 1 << 20);
    const t0 = performance.now();
    const save = new StateTransfer({
      direction: "save",
      fd: w,
      device,
      snapshot: { state: {}, ramDisk: { fd: source, size } },
    });
    const load = new StateTransfer({
      direction: "load",
      fd: r,
      device,
      staging: { ramDisk: { fd: target, size } },
    });
    const [saved, loaded] = await Promise.all([save.finished(), load.finished()]);
    const total = (performance.now() - t0) / 1000;
    if (!saved.ok || !loaded.ok) {
      console.log(`state transfer failed: ${saved.error ?? loaded.error}`);
      return;
    }
    const mib = size / 2 ** 20;
    console.log(
      `\ndevice state: ${mib} MiB RAM disk of random data, SAVE Worker -> pipe -> LOAD Worker`,
    );
    console.log(
      `  stream ${(saved.bytes / 2 ** 20).toFixed(1)} MiB in ${total.toFixed(2)} s: ` +
        `${(mib / total).toFixed(0)} MiB/s end to end (save side ${
          (mib / (saved.ms / 1000)).toFixed(0)
        } MiB/s, ` +
        `load side ${(mib / (loaded.ms / 1000)).toFixed(0)} MiB/s, includes Worker start-up)`,
    );
  } finally {
    closeQuietly(source);
    closeQuietly(target);
  }
}
