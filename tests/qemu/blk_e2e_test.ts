/**
 * End to end against QEMU 10: a TCG guest with `vhost-user-blk-pci` served by
 * a vhostd process writes a known pattern to /dev/vda, reads it back, powers
 * off, and the host then checks the image bytes. Once with one queue, once
 * with two (two vCPUs writing at the same time, so both rings carry I/O), and
 * once with four vCPUs and no queue count given to either side: QEMU then asks
 * for one queue per vCPU and vhostd's default must cover it.
 */

import assert from "node:assert/strict";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import { VhostdProcess } from "./migration_harness.ts";

const MiB = 1024 * 1024;
const IMAGE_SIZE = 64 * MiB;
/** Bytes each guest writer puts down. */
const PATTERN_SIZE = 4 * MiB;

/** The pattern `seq 1 N | head -c SIZE` produces in the guest, rebuilt on the host. */
function seqPattern(size: number, start = 1): Uint8Array {
  const parts: string[] = [];
  let length = 0;
  for (let i = start; length < size; i++) {
    const line = `${i}\n`;
    parts.push(line);
    length += line.length;
  }
  return new TextEncoder().encode(parts.join("")).subarray(0, size);
}

/**
 * Runs the guest with `numQueues` vCPUs. With `queueOptions` false neither
 * vhostd nor QEMU is told a queue count (both defaults).
 */
async function runBlkGuest(numQueues: number, queueOptions = true): Promise<void> {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-e2e-" });
  const image = `${dir}/disk.img`;
  const socket = `${dir}/blk.sock`;
  const file = await Deno.open(image, { create: true, write: true });
  await file.truncate(IMAGE_SIZE);
  file.close();
  let vhostd: VhostdProcess | undefined;
  try {
    vhostd = await VhostdProcess.start({
      image,
      socket,
      logPath: `${dir}/vhostd.log`,
      extraArgs: queueOptions ? ["--num-queues", String(numQueues)] : [],
    });
    // Writer k writes PATTERN_SIZE bytes at (1 + 8k) MiB from vCPU k.
    const writers = Array.from({ length: numQueues }, (_, k) => {
      const seek = 1 + 8 * k;
      const start = 1 + k * 1_000_000;
      return [
        `( seq ${start} ${start + 999_999} | head -c ${PATTERN_SIZE} > /tmp/p${k}`,
        `  taskset -c ${k} dd if=/tmp/p${k} of=/dev/vda bs=64k seek=${
          seek * 16
        } oflag=direct conv=fsync 2>/dev/null ) &`,
      ].join("\n");
    });
    const readers = Array.from({ length: numQueues }, (_, k) => {
      const skip = (1 + 8 * k) * 16;
      return `dd if=/dev/vda of=/tmp/q${k} bs=64k skip=${skip} count=${
        PATTERN_SIZE / 65536
      } iflag=direct 2>/dev/null
cmp /tmp/p${k} /tmp/q${k} && echo "READBACK-OK ${k}"`;
    });
    const result = await runGuest({
      script: [
        "set -e",
        `echo "QUEUES $(ls /sys/block/vda/mq | wc -l)"`,
        ...writers,
        "wait",
        "echo 3 > /proc/sys/vm/drop_caches",
        ...readers,
        "sync",
      ].join("\n"),
      chardevs: [
        "-chardev",
        `socket,id=vhostd0,path=${socket}`,
        "-device",
        `vhost-user-blk-pci,chardev=vhostd0${queueOptions ? `,num-queues=${numQueues}` : ""}`,
      ],
      extraArgs: ["-smp", String(numQueues)],
      timeoutMs: 120_000,
    });
    assert.equal(result.timedOut, false, `guest timed out:\n${result.output.slice(-2000)}`);
    assert.equal(
      result.exitCode,
      0,
      `guest script failed:\n${result.output.slice(-3000)}\n${result.qemuStderr}`,
    );
    assert.match(result.scriptOutput, new RegExp(`QUEUES ${numQueues}`));
    for (let k = 0; k < numQueues; k++) {
      assert.match(result.scriptOutput, new RegExp(`READBACK-OK ${k}`));
    }

    const status = await vhostd.stop();
    const log = await vhostd.log();
    assert.equal(status.code, 0, `vhostd exit status ${status.code}\n${log.slice(-2000)}`);
    for (let k = 0; k < numQueues; k++) {
      assert.match(log, new RegExp(`ring ${k} running`), `ring ${k} never ran`);
    }

    const bytes = await Deno.readFile(image);
    assert.equal(bytes.length, IMAGE_SIZE, "image size changed");
    for (let k = 0; k < numQueues; k++) {
      const at = (1 + 8 * k) * MiB;
      const expected = seqPattern(PATTERN_SIZE, 1 + k * 1_000_000);
      assert.ok(
        bytes.subarray(at, at + PATTERN_SIZE).every((b, i) => b === expected[i]),
        `image bytes at ${at} do not hold writer ${k}'s pattern`,
      );
    }
    assert.ok(bytes.subarray(0, MiB).every((b) => b === 0), "first MiB should be untouched");
  } finally {
    await vhostd?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("QEMU guest writes and reads /dev/vda through vhostd (1 queue)", () => runBlkGuest(1));

Deno.test("QEMU guest writes and reads /dev/vda through vhostd (2 queues, 2 vCPUs)", () =>
  runBlkGuest(2));

Deno.test("QEMU -smp 4 with default queue counts on both sides: four queues carry I/O", () =>
  runBlkGuest(4, false));
