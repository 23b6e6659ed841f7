/**
 * virtio-rng throughput through the real interface: the TypeScript
 * front-end keeps `DEPTH` entropy requests in flight on a `vhostd rng`
 * process and counts the bytes returned per second, for several request
 * sizes. No installable peer serves vhost-user-rng here, so the limits are
 * printed beside it: getrandom into a buffer in this process (the source
 * vhostd reads) and a memory copy of the same size (this machine's
 * bandwidth). A benchmark: it prints numbers and never fails on speed.
 *
 *   deno run -A scripts/bench_rng.ts [--seconds S]   (also: deno task bench --only rng)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { getRandom } from "../ffi/mod.ts";
import { type Peer, startPeer, stopPeer } from "./bench_peer.ts";
import { fmt, pad } from "./bench_stats.ts";
import { RngDriver } from "../tests/support/rng_driver.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const DEPTH = 32;
const SIZES = [64, 4096, 65536];
const MiB = 2 ** 20;

function startVhostdRng(dir: string): Promise<Peer> {
  const socket = `${dir}/rng.sock`;
  const args = ["run", "-A", MAIN, "rng", "--socket-path", socket, "--log-level", "warn"];
  return startPeer("vhostd rng", Deno.execPath(), args, socket);
}

/** Bytes per second vhostd returns with DEPTH requests of `size` bytes in flight. */
function measureDevice(socket: string, size: number, seconds: number): number {
  const driver = RngDriver.connect(socket, 64, 64 * MiB);
  try {
    const buffers = Array.from({ length: DEPTH }, () => driver.memory.alloc(size, 64));
    const byHead = new Map<number, number>();
    const submit = (gpa: number) => byHead.set(driver.request(size, gpa), gpa);
    const run = (ms: number) => {
      let bytes = 0;
      const end = performance.now() + ms;
      while (performance.now() < end) {
        // Every completion's buffer first: a resubmission may reuse a head of this batch.
        const free: number[] = [];
        for (const c of driver.wait(10_000)) {
          bytes += c.len;
          free.push(byHead.get(c.head)!);
          byHead.delete(c.head);
        }
        free.forEach(submit);
        driver.notify();
      }
      return bytes;
    };
    buffers.forEach(submit);
    driver.notify();
    run(300); // warm-up: JIT, page faults
    const t0 = performance.now();
    const bytes = run(seconds * 1000);
    return bytes / ((performance.now() - t0) / 1000);
  } finally {
    driver.close();
  }
}

/** Bytes per second of `fill` over a buffer of `size` bytes. */
function rate(size: number, seconds: number, fill: (buf: Uint8Array) => void): number {
  const buf = new Uint8Array(size);
  let bytes = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) fill(buf);
    bytes += 64 * size;
  }
  return bytes / ((performance.now() - t0) / 1000);
}

/** Runs the rng rows and prints the table. */
export async function runRngBench(seconds: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-bench-rng-" });
  let peer: Peer | undefined;
  try {
    peer = await startVhostdRng(dir);
    const source = new Uint8Array(65536);
    getRandom(source);
    console.log(
      `\nvirtio-rng: ${DEPTH} requests in flight, ${seconds} s per row, TypeScript front-end; ` +
        "limits measured in this process",
    );
    console.log(
      pad("request", 10) + pad("vhostd MiB/s", 14) + pad("getrandom MiB/s", 17) +
        pad("memcpy MiB/s", 14) + "vhostd/getrandom",
    );
    for (const size of SIZES) {
      const ours = measureDevice(peer.socket, size, seconds);
      const entropy = rate(size, Math.min(1, seconds), (b) => getRandom(b));
      const copy = rate(size, Math.min(1, seconds), (b) => b.set(source.subarray(0, b.length)));
      console.log(
        pad(size >= 1024 ? `${size / 1024} KiB` : `${size} B`, 10) +
          pad(fmt(ours / MiB, 1), 14) + pad(fmt(entropy / MiB, 1), 17) +
          pad(fmt(copy / MiB, 0), 14) + `${fmt(ours / entropy, 2)}x`,
      );
    }
  } finally {
    if (peer) await stopPeer(peer);
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { seconds: { type: "string" } } });
  const seconds = Number(values.seconds ?? "2");
  if (!(seconds > 0)) {
    console.error("bench_rng: --seconds must be positive");
    Deno.exit(2);
  }
  await runRngBench(seconds);
}
