/**
 * `deno task bench`: the same workload through the TypeScript front-end
 * against vhostd and against qemu-storage-daemon (the C peer), in one run,
 * side by side. Not a test: it prints numbers and never fails on speed.
 *
 * Block I/O: 4 KiB random reads and writes at queue depth 1 and 32, on one
 * and on four queues (the depth is spread over the queues), on two
 * backings: a raw image on tmpfs (a request is a memory copy: per-request
 * overhead) and the same bytes behind latency_fs, a FUSE filesystem that
 * answers every read and write after about 100 µs but keeps any number of
 * them in flight, like an SSD (scripts/latency_fs/). The second shows
 * whether a back-end keeps the guest's queue depth in flight.
 * Each workload runs once with each back-end's default caching and once
 * with O_DIRECT (vhostd --cache none, qemu-storage-daemon cache.direct=on),
 * the latter only when vhostd has the option.
 *
 * Device state (scripts/bench_state.ts) and virtio-fs follow: host-driven
 * rows against vhostd and virtiofsd (scripts/bench_fs_host.ts; virtiofsd from
 * scripts/setup_virtiofsd.sh), then a QEMU guest's workload (scripts/bench_fs.ts).
 *
 * Options:
 *   --seconds N          per workload and back-end (default 3, plus 0.5 s warm-up)
 *   --only blk|state|fs|rng|vsock  run one part
 *   --size SIZE          image (default 256M)
 *   --backing tmpfs|latency|both   (default both)
 *   --queues 1|4|both    (default both)
 *   --cache default|none|both      caching rows (default both)
 *   --delay-us N         latency_fs delay (default 100)
 *   --qsd-aio threads|io_uring|native   qemu-storage-daemon's engine (default io_uring)
 *   --vhostd-aio sync|io_uring         passed as vhostd --aio (when vhostd has it)
 *   --vhostd-workers N   passed as vhostd --workers (default: vhostd's own choice)
 *   --vhostd-metrics     run vhostd with --metrics (on a Unix socket): the cost of counting
 *   --scrape-hz N        also scrape it N times a second during each row (implies
 *                        --vhostd-metrics; scripts/metrics_scraper.ts, a separate process)
 *   --peer qsd|vhostd|vhostd-metrics   what vhostd is compared with: qemu-storage-daemon
 *                        (default), vhostd without --metrics ("plain": what metrics cost),
 *                        or vhostd with --metrics never scraped ("counted": what scraping costs)
 *   --reverse            measure the second column first in each row (the first one measured
 *                        can be favoured or hurt by what ran before: alternate runs with this)
 *   --fs-queues N[,N]    fs request queues, one row set each (default 1,4)
 *   --fs-depth N         fs operations in flight (default 32)
 *   --fs-runs N          fs: times each host row runs, and timed rounds of the guest workload;
 *                        ratios of each shown (default 2)
 *   --fs-threads T[,T]   virtiofsd --thread-pool-size on tmpfs[,latency_fs] (default 0,32)
 *
 * Ctrl-C (or SIGTERM) stops after the running workload; back-ends are
 * stopped, latency_fs unmounted and the image removed on every way out.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runRngBench } from "./bench_rng.ts";
import { benchVsock, formatVsockBench } from "./bench_vsock.ts";
import { fileURLToPath } from "node:url";
import { BlkDriver, SharedGuestMemory, VhostUserClient } from "../src/frontend/mod.ts";
import {
  closeQuietly,
  EPOLL_CTL_ADD,
  epollCreate,
  epollCtl,
  EpollEvents,
  EPOLLIN,
  epollWait,
  eventfdRead,
} from "../ffi/mod.ts";
import { parseSize } from "../src/cli/size.ts";
import { runStateBench } from "./bench_state.ts";
import { fmt, pad, percentile } from "./bench_stats.ts";
import { writeRandomFile } from "./random_file.ts";
import {
  type BlkPeerConfig,
  type Peer,
  startQsdBlk,
  startVhostdBlk,
  stopPeer,
  vhostdBlkOptions,
} from "./bench_peer.ts";
import { runFsBench } from "./bench_fs.ts";
import {
  FS_HOST_ARG_OPTIONS,
  type FsHostOptions,
  fsHostOptions,
  runFsHostBench,
} from "./bench_fs_host.ts";
import {
  buildLatencyFs,
  cpuNs,
  type LatencyFs,
  mountLatencyFs,
  unmountLatencyFs,
} from "./latency_fs/mount.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const BLOCK = 4096;
const SECTOR = 512;
const WARM_UP_MS = 500;
/** A wait for completions longer than this means the back-end is stuck. */
const STUCK_MS = 5000;

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

type Cache = BlkPeerConfig["cache"];

interface Result {
  iops: number;
  p50us: number;
  p99us: number;
  /** CPU µs the latency_fs server spent per request (NaN on tmpfs). */
  fsCpuUs: number;
  /** CPU µs the back-end process (all its threads) spent per request. */
  backendCpuUs: number;
}

/** What one run of the block benchmark compares. */
interface BlkOptions {
  seconds: number;
  imageSize: number;
  backings: ("tmpfs" | "latency")[];
  queues: number[];
  caches: Cache[];
  delayUs: number;
  qsdAio: string;
  vhostdAio: string | undefined;
  vhostdWorkers: number | undefined;
  /** Run vhostd with --metrics. */
  metrics: boolean;
  /** Scrapes per second of vhostd's metrics during each row (0: none). */
  scrapeHz: number;
  /** The second column: qemu-storage-daemon, vhostd without metrics, or with unscraped metrics. */
  peer: "qsd" | "vhostd" | "vhostd-metrics";
  /** Measure the second column first. */
  reverse: boolean;
}

/** Set by SIGINT/SIGTERM; checked between workloads (a workload itself is synchronous). */
let interrupted = false;

class Interrupted extends Error {
  constructor() {
    super("interrupted");
  }
}

/** Lets a pending signal listener run, then stops the run if it was asked to. */
async function checkInterrupt(): Promise<void> {
  await new Promise((r) => setTimeout(r, 0));
  if (interrupted) throw new Interrupted();
}

/**
 * Queue of a slot's next request: with at least one request per queue each
 * slot stays on its own queue; with fewer (depth 1 on four queues) a slot
 * moves to the next queue with each request, so every queue is used.
 */
function queueOf(slot: number, round: number, depth: number, queues: number): number {
  return depth >= queues ? slot % queues : (slot + round) % queues;
}

/**
 * Runs one workload for `seconds` against the back-end at `socket`, keeping
 * `w.depth` requests in flight over `queues` queues. `fsPid`, when given, is
 * the latency_fs server whose CPU time per request is reported.
 */
function runWorkload(
  socket: string,
  sectors: number,
  w: Workload,
  seconds: number,
  queues: number,
  fsPid: number | undefined,
  backendPid: number,
): Result {
  const client = VhostUserClient.connect(socket);
  const memory = SharedGuestMemory.create({ size: 64 << 20 });
  let epfd = -1;
  try {
    const driver = BlkDriver.setup(client, memory, {
      numQueues: queues,
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
    const rounds = new Array<number>(w.depth).fill(0);
    const started = new Map<number, { at: number; slot: number }>();
    const submit = (slot: number) => {
      const sector = nextSector();
      const queue = queueOf(slot, rounds[slot]++, w.depth, queues);
      const token = driver.submit(
        queue,
        w.write
          ? { op: "write", sector, length: BLOCK, buffer: buffers[slot] }
          : { op: "read", sector, length: BLOCK, buffer: buffers[slot] },
      );
      started.set(token, { at: performance.now(), slot });
    };
    const latencies: number[] = [];
    let record = false;
    let resubmit = true;
    let done = 0;
    const complete = (c: { token: number; status: number | undefined }) => {
      const s = started.get(c.token)!;
      started.delete(c.token);
      if (c.status !== 0) throw new Error(`request failed with status ${c.status}`);
      if (record) latencies.push(performance.now() - s.at);
      done++;
      if (resubmit) submit(s.slot);
    };

    // Several queues: one epoll set over their call eventfds, so a wait
    // ends at the first completion on any of them (no spinning).
    const events = new EpollEvents(Math.max(1, queues));
    if (queues > 1) {
      epfd = epollCreate();
      for (let q = 0; q < queues; q++) {
        epollCtl(epfd, EPOLL_CTL_ADD, driver.ring(q).callFd, EPOLLIN, q);
      }
    }
    /** Takes what has completed on every queue; waits (bounded) when nothing has. */
    const pollAll = () => {
      let got = 0;
      for (let q = 0; q < queues; q++) {
        for (const c of driver.waitCompletions(q, 0, 0)) {
          complete(c);
          got++;
        }
      }
      if (got > 0) {
        for (let q = 0; q < queues; q++) driver.notify(q);
        return;
      }
      // Ask for an interrupt on every ring (event idx), then re-check before sleeping.
      let waiting = false;
      for (let q = 0; q < queues; q++) waiting = driver.ring(q).waitForUsed(0) || waiting;
      if (waiting) return;
      const n = epollWait(epfd, events, STUCK_MS);
      for (let i = 0; i < n; i++) eventfdRead(driver.ring(events.data(i)).callFd);
      if (n === 0 && !driver.session.rings.some((r) => r.hasUsed())) {
        throw new Error(`no completion in ${STUCK_MS} ms (${started.size} in flight)`);
      }
    };

    const run = (ms: number) => {
      resubmit = true;
      done = 0;
      for (let slot = 0; slot < w.depth; slot++) submit(slot);
      for (let q = 0; q < queues; q++) driver.notify(q);
      const end = performance.now() + ms;
      while (performance.now() < end) {
        if (queues === 1) {
          // The path the one-queue figures have always been measured with.
          for (const c of driver.waitCompletions(0, 1, STUCK_MS)) complete(c);
          driver.notify(0);
        } else {
          pollAll();
        }
      }
      const counted = done;
      // Drain what is still in flight so the next phase starts clean.
      resubmit = false;
      record = false;
      for (let q = 0; q < queues; q++) {
        while (driver.inFlight(q) > 0) {
          for (const c of driver.waitCompletions(q, 1, STUCK_MS)) complete(c);
        }
      }
      return counted;
    };
    run(WARM_UP_MS); // JIT, page cache, TLB
    const cpu0 = fsPid === undefined ? NaN : cpuNs(fsPid);
    const backend0 = cpuNs(backendPid);
    const t0 = performance.now();
    record = true;
    const count = run(seconds * 1000);
    const elapsed = (performance.now() - t0) / 1000;
    const cpu1 = fsPid === undefined ? NaN : cpuNs(fsPid);
    const backend1 = cpuNs(backendPid);
    const sorted = Float64Array.from(latencies).sort();
    driver.close();
    return {
      iops: count / elapsed,
      p50us: percentile(sorted, 0.5) * 1000,
      p99us: percentile(sorted, 0.99) * 1000,
      // Includes the drained tail, which is at most depth requests.
      fsCpuUs: (cpu1 - cpu0) / 1000 / (count + w.depth),
      backendCpuUs: (backend1 - backend0) / 1000 / count,
    };
  } finally {
    if (epfd >= 0) closeQuietly(epfd);
    memory.close();
    client.close();
  }
}

/** Runs every workload on one backing and prints its table. */
async function runBacking(
  label: string,
  image: string,
  dir: string,
  opts: BlkOptions,
  fs: LatencyFs | undefined,
): Promise<void> {
  const withFs = fs !== undefined;
  const other = { qsd: "qsd", vhostd: "plain", "vhostd-metrics": "counted" }[opts.peer];
  console.log(`\n${label}`);
  console.log(
    (pad("workload", 19) + pad("queues", 8) + pad("cache", 9) + pad("vhostd IOPS", 13) +
      pad("p50/p99 us", 13) + pad(`${other} IOPS`, 12) + pad("p50/p99 us", 13) +
      pad(`vhostd/${other}`, 14) +
      pad("CPU us/req v/q", 16) + (withFs ? "fs CPU us/req v/q" : "")).trimEnd(),
  );
  const fsPid = fs?.child.pid;
  const cpuStart = fsPid === undefined ? NaN : cpuNs(fsPid);
  const wallStart = performance.now();
  for (const cache of opts.caches) {
    for (const queues of opts.queues) {
      const config = (name: string): BlkPeerConfig => ({
        image,
        socket: `${dir}/${name}.sock`,
        queues,
        cache,
      });
      const peers: Peer[] = [];
      const metricsAddress = `unix:${dir}/vhostd-metrics.sock`;
      try {
        peers.push(
          await startVhostdBlk(
            MAIN,
            config("vhostd"),
            opts.vhostdAio,
            opts.vhostdWorkers,
            opts.metrics ? ["--metrics", metricsAddress] : [],
          ),
        );
        peers.push(
          opts.peer === "qsd"
            ? await startQsdBlk(config("qsd"), opts.qsdAio)
            : await startVhostdBlk(
              MAIN,
              config("plain"),
              opts.vhostdAio,
              opts.vhostdWorkers,
              opts.peer === "vhostd-metrics" ? ["--metrics", `unix:${dir}/plain-metrics.sock`] : [],
            ),
        );
        for (const w of WORKLOADS) {
          await checkInterrupt();
          const run = (p: Peer) =>
            runWorkload(
              p.socket,
              opts.imageSize / SECTOR,
              w,
              opts.seconds,
              queues,
              fsPid,
              p.child.pid,
            );
          // The scraper runs only while the vhostd it scrapes is measured (its warm-up
          // covers the scraper's start), and is gone before the other column runs.
          const theirsFirst = opts.reverse ? run(peers[1]) : undefined;
          const scraper = opts.scrapeHz > 0
            ? startScraper(metricsAddress, opts.scrapeHz)
            : undefined;
          const ours = run(peers[0]);
          const scraped = scraper ? await stopScraper(scraper) : undefined;
          const theirs = theirsFirst ?? run(peers[1]);
          console.log(
            (pad(w.name, 19) + pad(String(queues), 8) + pad(cache, 9) + pad(fmt(ours.iops), 13) +
              pad(`${fmt(ours.p50us)}/${fmt(ours.p99us)}`, 13) + pad(fmt(theirs.iops), 12) +
              pad(`${fmt(theirs.p50us)}/${fmt(theirs.p99us)}`, 13) +
              pad(`${fmt(ours.iops / theirs.iops, 2)}x`, 14) +
              pad(`${fmt(ours.backendCpuUs, 1)}/${fmt(theirs.backendCpuUs, 1)}`, 16) +
              (withFs ? `${fmt(ours.fsCpuUs, 1)}/${fmt(theirs.fsCpuUs, 1)}` : "")).trimEnd(),
          );
          if (scraped) console.log(`  scraper: ${scraped}`);
        }
      } finally {
        for (const p of peers) await stopPeer(p);
      }
    }
  }
  if (fsPid !== undefined) {
    if (opts.caches.includes("default")) {
      // fio shows the same (io_uring, --direct=0, qd32: ~30k IOPS at ~1 ms; with O_DIRECT
      // ~180k): without IOCB_DIRECT the kernel sends a FUSE direct_io write synchronously,
      // so io_uring hands it to its worker threads, which keep writes to one file in order.
      console.log(
        "note: cache default on latency_fs: writes without O_DIRECT through io_uring reach " +
          "FUSE synchronously via io_uring's workers, which caps qsd's writes; the cache none " +
          "rows are the like-for-like ones",
      );
    }
    const cpu = (cpuNs(fsPid) - cpuStart) / 1e9;
    const wall = (performance.now() - wallStart) / 1000;
    console.log(
      `latency_fs server: ${fmt(cpu, 1)} s CPU in ${fmt(wall, 1)} s ` +
        `(${fmt((cpu / wall) * 100)} % of one CPU, of ${navigator.hardwareConcurrency})`,
    );
  }
}

/** Starts scripts/metrics_scraper.ts against `address` at `hz` scrapes a second. */
function startScraper(address: string, hz: number): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("./metrics_scraper.ts", import.meta.url)),
      address,
      String(hz),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** Stops a scraper; its summary line. */
async function stopScraper(scraper: Deno.ChildProcess): Promise<string> {
  try {
    scraper.kill("SIGTERM");
  } catch {
    // already gone
  }
  const out = await scraper.output();
  return new TextDecoder().decode(out.stdout).trim() || `exited with code ${out.code}`;
}

/** The block benchmark on every backing asked for. */
async function runBlkBench(opts: BlkOptions): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vhostd-bench-" });
  const image = `${dir}/disk.img`;
  let fs: LatencyFs | undefined;
  try {
    const available = await vhostdBlkOptions(MAIN);
    const caches = opts.caches.filter((c) => c !== "none" || available.has("--cache"));
    if (caches.length < opts.caches.length) {
      console.log(
        "\nblock I/O: vhostd --cache none rows skipped: `vhostd blk --help` lists no --cache " +
          "option yet",
      );
    }
    let vhostdAio = opts.vhostdAio;
    if (vhostdAio !== undefined && !available.has("--aio")) {
      console.log(
        `block I/O: --vhostd-aio ${vhostdAio} ignored: \`vhostd blk --help\` lists no --aio ` +
          "option yet (vhostd runs its only engine, synchronous)",
      );
      vhostdAio = undefined;
    }
    if (caches.length === 0) return;
    const run = { ...opts, caches, vhostdAio };
    const metrics = !opts.metrics
      ? ""
      : opts.scrapeHz > 0
      ? ` with --metrics, scraped ${opts.scrapeHz} times a second`
      : " with --metrics (not scraped)";
    const engines =
      `vhostd ${vhostdAio === undefined ? "default engine" : `--aio ${vhostdAio}`}${metrics}, ` +
      {
        qsd: `qemu-storage-daemon aio=${opts.qsdAio}`,
        vhostd: "plain = the same vhostd without --metrics",
        "vhostd-metrics": "counted = the same vhostd with --metrics, never scraped",
      }[opts.peer];
    const common = `${opts.imageSize / 2 ** 20} MiB raw image of random data, ${opts.seconds} s ` +
      `per run, TypeScript front-end (event idx, queue size 128); ${engines}`;
    console.log(
      `\nblock I/O: ${common}\n` +
        "cache: default = vhostd's default and qsd cache.direct=off; none = vhostd --cache none " +
        "and qsd cache.direct=on",
    );
    await writeRandomFile(image, opts.imageSize);

    if (opts.backings.includes("tmpfs")) {
      await runBacking("backing: tmpfs", image, dir, run, undefined);
    }
    if (opts.backings.includes("latency")) {
      await checkInterrupt();
      const mountpoint = `${dir}/mnt`;
      await Deno.mkdir(mountpoint);
      try {
        fs = await mountLatencyFs(await buildLatencyFs(), image, mountpoint, opts.delayUs);
      } catch (error) {
        console.log(
          `\nbacking: latency_fs skipped: ${error instanceof Error ? error.message : error}`,
        );
      }
      if (fs !== undefined) {
        await runBacking(
          `backing: latency_fs (FUSE, ${opts.delayUs} µs per read/write, any number in ` +
            "flight, bytes on tmpfs; fs CPU = the FUSE server's CPU time per request)",
          fs.image,
          dir,
          run,
          fs,
        );
      }
    }
  } finally {
    if (fs !== undefined) await unmountLatencyFs(fs);
    await Deno.remove(dir, { recursive: true }).catch((e) =>
      console.error(`bench: could not remove ${dir}: ${e}`)
    );
  }
}

function usage(message: string): never {
  console.error(`bench: ${message}`);
  Deno.exit(2);
}

function both<T>(value: string | undefined, all: T[], name: string, one: (v: string) => T): T[] {
  if (value === undefined || value === "both") return all;
  const v = one(value);
  if (!all.includes(v)) usage(`--${name} must be ${all.join(", ")} or both`);
  return [v];
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seconds: { type: "string", default: "3" },
      size: { type: "string", default: "256M" },
      only: { type: "string" },
      backing: { type: "string", default: "both" },
      queues: { type: "string", default: "both" },
      cache: { type: "string", default: "both" },
      "delay-us": { type: "string", default: "100" },
      "qsd-aio": { type: "string", default: "io_uring" },
      "vhostd-aio": { type: "string" },
      "vhostd-workers": { type: "string" },
      "vhostd-metrics": { type: "boolean", default: false },
      "scrape-hz": { type: "string", default: "0" },
      peer: { type: "string", default: "qsd" },
      reverse: { type: "boolean", default: false },
      ...FS_HOST_ARG_OPTIONS,
    },
  });
  const seconds = Number(values.seconds);
  const size = parseSize(values.size ?? "256M");
  if (!(seconds > 0) || size === undefined || size % (1 << 20) !== 0) {
    usage("--seconds must be positive and --size a whole number of MiB");
  }
  const qsdAio = values["qsd-aio"] ?? "io_uring";
  if (!["threads", "io_uring", "native"].includes(qsdAio)) {
    usage("--qsd-aio must be threads, io_uring or native");
  }
  const vhostdAio = values["vhostd-aio"];
  if (vhostdAio !== undefined && !["sync", "io_uring"].includes(vhostdAio)) {
    usage("--vhostd-aio must be sync or io_uring");
  }
  const vhostdWorkers = values["vhostd-workers"] === undefined
    ? undefined
    : Number(values["vhostd-workers"]);
  if (vhostdWorkers !== undefined && !(Number.isInteger(vhostdWorkers) && vhostdWorkers >= 1)) {
    usage("--vhostd-workers must be a whole number of at least 1");
  }
  const scrapeHz = Number(values["scrape-hz"]);
  if (!(scrapeHz >= 0) || scrapeHz > 1000) usage("--scrape-hz must be from 0 to 1000");
  const peer = values.peer ?? "qsd";
  if (peer !== "qsd" && peer !== "vhostd" && peer !== "vhostd-metrics") {
    usage("--peer must be qsd, vhostd or vhostd-metrics");
  }
  const delayUs = Number(values["delay-us"]);
  if (!Number.isInteger(delayUs) || delayUs < 0) usage("--delay-us must be a whole number");
  const opts: BlkOptions = {
    seconds,
    imageSize: size,
    backings: both(values.backing, ["tmpfs", "latency"], "backing", (v) => v as "tmpfs"),
    queues: both(values.queues, [1, 4], "queues", Number),
    caches: both(values.cache, ["default", "none"], "cache", (v) => v as Cache),
    delayUs,
    qsdAio,
    vhostdAio,
    vhostdWorkers,
    metrics: (values["vhostd-metrics"] ?? false) || scrapeHz > 0,
    scrapeHz,
    peer,
    reverse: values.reverse ?? false,
  };
  if (qsdAio === "native" && opts.caches.includes("default")) {
    usage("--qsd-aio native needs O_DIRECT: use it with --cache none");
  }
  let fsOptions: FsHostOptions;
  try {
    fsOptions = fsHostOptions(values);
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const only = values.only;
  if (only !== undefined && !["blk", "state", "fs", "rng", "vsock"].includes(only)) {
    usage("--only must be blk, state, fs, rng or vsock");
  }

  // A workload runs synchronously, so the listener runs between workloads;
  // without listeners Deno would exit at once and skip every clean-up.
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\nbench: interrupted; stopping after the running workload and cleaning up");
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const t0 = performance.now();
  console.log(
    `machine: ${navigator.hardwareConcurrency} CPUs, ${Deno.osRelease()}, Deno ${Deno.version.deno}`,
  );
  let status = 0;
  try {
    if (only === undefined || only === "blk") await runBlkBench(opts);
    if (only === undefined || only === "state") {
      await checkInterrupt();
      await runStateBench(size);
    }
    if (only === undefined || only === "fs") {
      await checkInterrupt();
      await runFsHostBench(fsOptions, checkInterrupt);
      await checkInterrupt();
      await runFsBench(fsOptions.runs);
    }
    if (only === undefined || only === "rng") {
      await checkInterrupt();
      await runRngBench(seconds);
    }
    if (only === undefined || only === "vsock") {
      await checkInterrupt();
      console.log(formatVsockBench(await benchVsock({ singleMiB: 128, eightMiB: 32, pings: 500 })));
    }
  } catch (error) {
    // After Ctrl-C in a terminal the back-ends got SIGINT too, so the running
    // workload may have failed for that reason: that is the interruption.
    if (!interrupted) throw error;
    if (!(error instanceof Interrupted)) console.error(`bench: stopped: ${error}`);
    status = 130;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    console.log(`\ntotal time: ${fmt((performance.now() - t0) / 1000, 1)} s`);
  }
  if (status !== 0) Deno.exit(status);
}
