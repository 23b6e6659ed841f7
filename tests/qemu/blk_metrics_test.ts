/**
 * `--metrics` under a real QEMU 10 guest: after the guest wrote and read
 * 4 MiB of /dev/vda with O_DIRECT and powered off, the scrape counts at
 * least those bytes, one latency per request, no errors, nothing in flight
 * and the session QEMU opened and closed.
 */

import assert from "node:assert/strict";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import { VhostdProcess } from "./migration_harness.ts";
import { scrape } from "../support/metrics_client.ts";
import { type ParsedFamily, sampleValue } from "../support/prometheus_text.ts";

const MiB = 1024 * 1024;

async function scrapeWhenIdle(address: string): Promise<Map<string, ParsedFamily>> {
  // QEMU has exited; vhostd ends the session once it reads the hang-up.
  const deadline = performance.now() + 15_000;
  for (;;) {
    const f = await scrape(address);
    if (sampleValue(f, "vhostd_sessions_active") === 0) return f;
    if (performance.now() > deadline) throw new Error("the session never ended");
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("QEMU guest I/O shows in vhostd's --metrics", async () => {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-e2e-metrics-" });
  const image = `${dir}/disk.img`;
  const socket = `${dir}/blk.sock`;
  const address = `unix:${dir}/metrics.sock`;
  const file = await Deno.open(image, { create: true, write: true });
  await file.truncate(64 * MiB);
  file.close();
  let vhostd: VhostdProcess | undefined;
  try {
    vhostd = await VhostdProcess.start({
      image,
      socket,
      logPath: `${dir}/vhostd.log`,
      extraArgs: ["--metrics", address],
    });
    const result = await runGuest({
      script: [
        "set -e",
        "head -c 4194304 /dev/zero | tr '\\0' 'v' > /tmp/p",
        "dd if=/tmp/p of=/dev/vda bs=64k seek=16 oflag=direct conv=fsync 2>/dev/null",
        "dd if=/dev/vda of=/tmp/q bs=64k skip=16 count=64 iflag=direct 2>/dev/null",
        'cmp /tmp/p /tmp/q && echo "READBACK-OK"',
      ].join("\n"),
      chardevs: [
        "-chardev",
        `socket,id=vhostd0,path=${socket}`,
        "-device",
        "vhost-user-blk-pci,chardev=vhostd0",
      ],
      timeoutMs: 120_000,
    });
    assert.equal(result.exitCode, 0, `guest script failed:\n${result.output.slice(-3000)}`);
    assert.match(result.scriptOutput, /READBACK-OK/);
    const f = await scrapeWhenIdle(address);
    const q0 = { queue: "0" };
    const requests = sampleValue(f, "vhostd_queue_requests_total", q0);
    // 64 writes and 64 reads of 64 KiB at least (plus the kernel's own at boot, and flushes).
    assert.ok(requests >= 128, `${requests} requests`);
    assert.equal(sampleValue(f, "vhostd_queue_request_duration_seconds_count", q0), requests);
    assert.equal(sampleValue(f, "vhostd_queue_requests_in_flight", q0), 0);
    assert.ok(sampleValue(f, "vhostd_blk_bytes_total", { direction: "write" }) >= 4 * MiB);
    assert.ok(sampleValue(f, "vhostd_blk_bytes_total", { direction: "read" }) >= 4 * MiB);
    assert.ok(sampleValue(f, "vhostd_queue_written_bytes_total", q0) >= 4 * MiB);
    assert.equal(sampleValue(f, "vhostd_blk_errors_total", { status: "ioerr" }), 0);
    for (const kind of ["device_exception", "stray_completion", "ring_broken"]) {
      assert.equal(sampleValue(f, "vhostd_queue_errors_total", { ...q0, kind }), 0, kind);
    }
    assert.ok(sampleValue(f, "vhostd_sessions_accepted_total") >= 1);
    const status = await vhostd.stop();
    assert.equal(status.code, 0, (await vhostd.log()).slice(-2000));
  } finally {
    await vhostd?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
