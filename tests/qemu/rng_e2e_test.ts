/**
 * End to end against QEMU 10: a TCG guest with `vhost-user-rng-pci` served
 * by `vhostd rng` reads /dev/hwrng (Linux's virtio_rng). The bytes are not
 * constant; with `--max-bytes` the guest's reads take at least as long as
 * the budget dictates (a lower bound only: a busy machine is slower, never
 * faster), and without it the same read is served at once by count of
 * requests, not periods.
 */

import assert from "node:assert/strict";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import { withVhostd } from "../support/vhostd_process.ts";

/** Guest script: which hwrng is current, entropy statistics, and how long a read took. */
function hwrngScript(bytes: number): string {
  return `set -e
echo "CURRENT $(cat /sys/class/misc/hw_random/rng_current)"
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/hwrng of=/tmp/a bs=64 count=${bytes / 64} 2>/dev/null
t1=$(cut -d' ' -f1 /proc/uptime)
echo "ELAPSED $t0 $t1"
echo "SIZE $(wc -c < /tmp/a)"
echo "DISTINCT $(od -An -v -tx1 /tmp/a | tr -s ' ' '\\n' | grep -v '^$' | sort -u | wc -l)"
dd if=/dev/hwrng of=/tmp/b bs=64 count=4 2>/dev/null
head -c 256 /tmp/a > /tmp/a256
cmp -s /tmp/a256 /tmp/b && echo "REPEATED" || echo "DIFFERENT"`;
}

async function readHwrng(args: string[], bytes: number) {
  requireGuestEnvironment();
  return await withVhostd({ command: "rng", args }, async (vhostd) => {
    const result = await runGuest({
      script: hwrngScript(bytes),
      chardevs: [
        "-chardev",
        `socket,id=vhostd0,path=${vhostd.socketPath}`,
        "-device",
        "vhost-user-rng-pci,chardev=vhostd0",
      ],
      timeoutMs: 180_000,
    });
    assert.equal(result.timedOut, false, `guest timed out:\n${result.output.slice(-2000)}`);
    assert.equal(
      result.exitCode,
      0,
      `guest script failed:\n${result.output.slice(-3000)}\n${result.qemuStderr}`,
    );
    const out = result.scriptOutput;
    assert.match(out, /CURRENT virtio_rng/);
    assert.match(out, new RegExp(`SIZE ${bytes}\\b`));
    assert.match(out, /DIFFERENT/);
    const distinct = Number(/DISTINCT (\d+)/.exec(out)?.[1]);
    // A few KiB of random bytes cover nearly all 256 values; a constant source covers one.
    assert.ok(distinct > 200, `only ${distinct} distinct byte values:\n${out}`);
    const [, t0, t1] = /ELAPSED ([\d.]+) ([\d.]+)/.exec(out) ?? [];
    return { elapsedS: Number(t1) - Number(t0), log: vhostd.log() };
  });
}

Deno.test("QEMU guest reads random bytes from /dev/hwrng through vhostd rng", async () => {
  const { log } = await readHwrng(["--log-level", "debug"], 16384);
  assert.match(log, /ring 0 running/);
});

Deno.test("QEMU guest: vhostd rng --max-bytes makes /dev/hwrng wait for each period", async () => {
  // 2 KiB at 512 bytes per 500 ms: the first 512 bytes come at once, the rest need three
  // more periods (the guest's own hwrng thread may take some of the budget too: slower only).
  const { elapsedS } = await readHwrng(["--max-bytes", "512", "--period", "500"], 2048);
  assert.ok(elapsedS >= 1.4, `2048 bytes took ${elapsedS} s, the limit allows no less than 1.5 s`);
});
