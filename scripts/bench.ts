/**
 * `deno task bench`: the same workload through the TypeScript front-end
 * against vhostd and against qemu-storage-daemon (the C peer), in one run,
 * side by side. Not a test: it prints numbers and never fails on speed.
 *
 * Block I/O: 4 KiB random reads and writes at queue depth 1 and 32, one
 * queue, on a 256 MiB raw image on tmpfs that both back-ends serve.
 *
 * virtio-fs: a QEMU guest's file workload through vhostd fs and, when
 * installed, virtiofsd (scripts/bench_fs.ts).
 *
 * Options: --seconds N (per workload and back-end, default 5),
 * --only blk|state|fs, --size SIZE (image, default 256M), --qsd-aio
 * threads|io_uring|native (qemu-storage-daemon's I/O engine; default
 * threads, its own default).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { BlkDriver, SharedGuestMemory, VhostUserClient } from "../src/frontend/mod.ts";
import { parseSize } from "../src/cli/size.ts";
import { fillRandom, runStateBench } from "./bench_state.ts";
import { type Peer, startPeer, stopPeer } from "./bench_peer.ts";
import { runFsBench } from "./bench_fs.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const BLOCK = 4096;
const SECTOR = 512;

interface Workload {
  name: string;
  write: boolean;
  depth: number;
}

const WORKLOADS: Workload[] = [
  { name: "randread  4k qd1", write: false, depth: 1 },
  { name: "randwrite 4k qd1", write: true, depth: 1 },
  { name: "randread  4k qd32", write: false, depth: 32 },
  { name: "randwrite 4k qd32", write: true, depth: 32 },
];

interface Result {
  iops: number;
  p50us: number;
  p99us: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

/** Runs one workload for `seconds` against the back-end at `socket`. */
function runWorkload(socket: string, sectors: number, w: Workload, seconds: number): Result {
  const client = VhostUserClient.connect(socket);
  const memory = SharedGuestMemory.create({ size: 64 << 20 });
  try {
    const driver = BlkDriver.setup(client, memory, {
      numQueues: 1,
      queueSize: 128,
      eventIdx: true,
    });
    const buffers = Array.from({ length: w.depth }, () => memory.alloc(BLOCK, BLOCK));
    for (const gpa of buffers) {
      crypto.getRandomValues(memory.guestMemory.slice(gpa, BLOCK)!);
    }
    const blocks = Math.floor(sectors / (BLOCK / SECTOR));
    let seed = 0x2545f491;
    const nextSector = () => {
      // xorshift32: cheap, reproducible, uniform enough over the image.
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return ((seed >>> 0) % blocks) * (BLOCK / SECTOR);
    };
    const started = new Map<number, { at: number; slot: number }>();
    const submit = (slot: number) => {
      const sector = nextSector();
      const token = driver.submit(
        0,
        w.write
          ? { op: "write", sector, length: BLOCK, buffer: buffers[slot] }
          : { op: "read", sector, length: BLOCK, buffer: buffers[slot] },
      );
      started.set(token, { at: performance.now(), slot });
    };
    const latencies: number[] = [];
    const run = (ms: number, record: boolean) => {
      for (let slot = 0; slot < w.depth; slot++) submit(slot);
      driver.notify(0);
      const end = performance.now() + ms;
      let done = 0;
      while (performance.now() < end) {
        for (const c of driver.waitCompletions(0, 1, 5000)) {
          const s = started.get(c.token)!;
          started.delete(c.token);
          if (c.status !== 0) throw new Error(`request failed with status ${c.status}`);
          if (record) latencies.push(performance.now() - s.at);
          done++;
          submit(s.slot);
        }
        driver.notify(0);
      }
      // Drain what is still in flight so the next phase starts clean.
      while (driver.inFlight(0) > 0) {
        for (const c of driver.waitCompletions(0, 1, 5000)) started.delete(c.token);
      }
      return done;
    };
    run(500, false); // warm-up: JIT, page cache, TLB
    const t0 = performance.now();
    const done = run(seconds * 1000, true);
    const elapsed = (performance.now() - t0) / 1000;
    const sorted = Float64Array.from(latencies).sort();
    driver.close();
    return {
      iops: done / elapsed,
      p50us: percentile(sorted, 0.5) * 1000,
      p99us: percentile(sorted, 0.99) * 1000,
    };
  } finally {
    memory.close();
    client.close();
  }
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "-";
}

async function runBlkBench(seconds: number, imageSize: number, qsdAio: string): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vhostd-bench-" });
  const image = `${dir}/disk.img`;
  const peers: Peer[] = [];
  try {
    // Real data everywhere: reads of holes would be cheaper than reads of data.
    const file = await Deno.open(image, { create: true, write: true });
    const chunk = new Uint8Array(1 << 20);
    for (let off = 0; off < imageSize; off += chunk.length) {
      fillRandom(chunk);
      await file.write(chunk);
    }
    file.close();
    peers.push(
      await startPeer("vhostd", Deno.execPath(), [
        "run",
        "-A",
        MAIN,
        "blk",
        "--file",
        image,
        "--socket-path",
        `${dir}/vhostd.sock`,
        "--log-level",
        "warn",
      ], `${dir}/vhostd.sock`),
    );
    peers.push(
      await startPeer("qemu-storage-daemon", "qemu-storage-daemon", [
        "--blockdev",
        `driver=file,node-name=file0,filename=${image},cache.direct=off,aio=${qsdAio}`,
        "--export",
        `type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,addr.path=${dir}/qsd.sock,writable=on,num-queues=1`,
      ], `${dir}/qsd.sock`),
    );
    const sectors = imageSize / SECTOR;
    console.log(
      `\nblock I/O: ${
        imageSize / 2 ** 20
      } MiB raw image on tmpfs, 1 queue, ${seconds} s per run, ` +
        `TypeScript front-end (event idx); qemu-storage-daemon aio=${qsdAio}`,
    );
    console.log(
      pad("workload", 20) + pad("vhostd IOPS", 13) + pad("p50/p99 us", 16) + pad("qsd IOPS", 12) +
        pad("p50/p99 us", 16) + "vhostd/qsd",
    );
    for (const w of WORKLOADS) {
      const [ours, theirs] = peers.map((p) => runWorkload(p.socket, sectors, w, seconds));
      console.log(
        pad(w.name, 20) + pad(fmt(ours.iops), 13) +
          pad(`${fmt(ours.p50us)}/${fmt(ours.p99us)}`, 16) +
          pad(fmt(theirs.iops), 12) + pad(`${fmt(theirs.p50us)}/${fmt(theirs.p99us)}`, 16) +
          `${fmt(ours.iops / theirs.iops, 2)}x`,
      );
    }
  } finally {
    for (const p of peers) await stopPeer(p);
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seconds: { type: "string", default: "5" },
      size: { type: "string", default: "256M" },
      only: { type: "string" },
      "qsd-aio": { type: "string", default: "threads" },
    },
  });
  const seconds = Number(values.seconds);
  const size = parseSize(values.size ?? "256M");
  if (!(seconds > 0) || size === undefined || size % (1 << 20) !== 0) {
    console.error("bench: --seconds must be positive and --size a whole number of MiB");
    Deno.exit(2);
  }
  console.log(
    `machine: ${navigator.hardwareConcurrency} CPUs, ${Deno.osRelease()}, Deno ${Deno.version.deno}`,
  );
  const aio = values["qsd-aio"] ?? "threads";
  if (!["threads", "io_uring", "native"].includes(aio)) {
    console.error("bench: --qsd-aio must be threads, io_uring or native");
    Deno.exit(2);
  }
  const only = values.only;
  if (only !== undefined && !["blk", "state", "fs"].includes(only)) {
    console.error("bench: --only must be blk, state or fs");
    Deno.exit(2);
  }
  if (only === undefined || only === "blk") await runBlkBench(seconds, size, aio);
  if (only === undefined || only === "state") await runStateBench(size);
  if (only === undefined || only === "fs") await runFsBench();
}
