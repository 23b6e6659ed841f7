/**
 * Host-driven virtio-fs benchmark (part of `deno task bench --only fs`):
 * the TypeScript front-end keeps many FUSE requests in flight over several
 * request queues (scripts/fs_pipeline.ts) against `vhostd fs` and against
 * virtiofsd, both serving the same directory and started side by side for
 * each run of a row, taking turns of 0.25 s (`measureInterleaved`). No guest, no QEMU: what is measured is the back-end's cost per
 * request, not the emulated guest's.
 *
 * Workloads, each for `seconds` after a 0.5 s warm-up, `depth` operations
 * in flight spread over the request queues (slot s uses queue 1 + s % Q):
 * - randread / randwrite 4k: READ / WRITE of 4 KiB at random aligned
 *   offsets of a 64 MiB file of random bytes (one open handle);
 * - getattr: GETATTR of one of 1,000 files looked up beforehand;
 * - lookup: LOOKUP of one of 10,000 names in one directory (no FORGET, as a
 *   kernel keeps its dentries);
 * - create+unlink: CREATE, RELEASE, UNLINK, then FORGET on the
 *   high-priority queue, a file per operation;
 * - readdirplus 64k: READDIRPLUS of 64 KiB through a directory of 10,000
 *   files (an open handle per slot, back to offset 0 at the end); its unit
 *   is entries per second.
 * On the latency backing (latency_fs, a FUSE filesystem answering every
 * read and write after `delayUs`, scripts/latency_fs/) only the two 4 KiB
 * rows run: it holds one file and no directory tree.
 *
 * Not a test: it prints numbers and never fails on speed; it does check
 * every reply (errno 0, unique, lengths, READ/WRITE byte counts).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { FsDriver, type FsName, SharedGuestMemory, VhostUserClient } from "../src/frontend/mod.ts";
import { decodeDirentsPlus, decodeEntryOut, FuseOpcode } from "../src/devices/fs/fuse/mod.ts";
import { HIPRIO_QUEUE } from "../src/devices/fs/fs_spec.ts";
import { type Peer, startPeer, stopPeer } from "./bench_peer.ts";
import { FsPipeline } from "./fs_pipeline.ts";
import {
  buildLatencyFs,
  cpuNs,
  type LatencyFs,
  mountLatencyFs,
  unmountLatencyFs,
} from "./latency_fs/mount.ts";
import { fillRandom } from "./bench_state.ts";
import { fmt, median, pad, percentile } from "./bench_stats.ts";
import { writeRandomFile } from "./random_file.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const BLOCK = 4096;
const DATA_FILE = "data.bin";
const DATA_BYTES = 64 * 2 ** 20;
const BIG_DIR = "many";
const BIG_DIR_FILES = 10_000;
const STAT_FILES = 1_000;
const CHURN_DIR = "churn";
const READDIR_BYTES = 64 * 1024;
const WARM_UP_MS = 500;
/** Length of one back-end's turn while a row is measured (see measureInterleaved). */
const SLICE_MS = 250;
/**
 * virtiofsd 1.13 offers one request queue (GET_QUEUE_NUM answers 2: the
 * high-priority queue and one): its rows keep the same depth on that one.
 */
const VIRTIOFSD_REQUEST_QUEUES = 1;
const O_RDWR = 0o2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;

/** Options of {@linkcode runFsHostBench}. */
export interface FsHostOptions {
  /** Seconds per workload and back-end. */
  seconds: number;
  /** Request-queue counts to run (each a set of rows). */
  queues: number[];
  /** Operations in flight, spread over the queues. */
  depth: number;
  /** Times each row is measured (alternating which back-end goes first). */
  runs: number;
  /** Backings to run on. */
  backings: ("tmpfs" | "latency")[];
  /** latency_fs delay in µs. */
  delayUs: number;
  /** virtiofsd's --thread-pool-size on tmpfs and on latency_fs. */
  virtiofsdThreads: { tmpfs: number; latency: number };
}

/** Nodes and handles a workload works on, found with the synchronous driver. */
export interface Prepared {
  /** The 64 MiB file (or latency_fs's image). */
  dataNode: bigint;
  /** Its handle, opened read-write. */
  dataFh: bigint;
  /** The directory of 10,000 files (0 on latency_fs). */
  bigDir: bigint;
  /** 1,000 of its files, looked up. */
  statNodes: bigint[];
  /** Where create+unlink works. */
  churnDir: bigint;
  /** One READDIRPLUS handle per slot (only for that workload). */
  dirHandles: bigint[];
}

/** Sends one operation for `slot` and calls `done(units)` when it is complete. */
export type Operation = (
  pipeline: FsPipeline,
  queue: number,
  slot: number,
  done: (units: number) => void,
) => void;

/** One row: what an operation is and how it is counted. */
export interface Workload {
  /** Row name. */
  name: string;
  /** What the rate counts. */
  unit: string;
  /** Whether it runs on a backing with only the data file (latency_fs). */
  dataOnly: boolean;
  /** Makes the operation, given what was prepared. */
  make: (prepared: Prepared, runId: string) => Operation;
}

const encoder = new TextEncoder();

function name(text: FsName): Uint8Array {
  return typeof text === "string" ? encoder.encode(text) : text;
}

function expectOk(what: string, error: number): void {
  if (error !== 0) throw new Error(`${what} failed with errno ${error}`);
}

/** xorshift32: cheap, reproducible, uniform enough. */
function randomSource(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

function randomBlock(random: (n: number) => number): bigint {
  return BigInt(random(DATA_BYTES / BLOCK) * BLOCK);
}

/** Every row, in table order (exported for one-off profiling runs). */
export const WORKLOADS: Workload[] = [
  {
    name: "randread 4k",
    unit: "IOPS",
    dataOnly: true,
    make: (p) => {
      const random = randomSource(0x2545f491);
      return (pipeline, queue, _slot, done) =>
        pipeline.submit({
          opcode: FuseOpcode.READ,
          args: {
            fh: p.dataFh,
            offset: randomBlock(random),
            size: BLOCK,
            readFlags: 0,
            lockOwner: 0n,
            flags: 0,
          },
          nodeid: p.dataNode,
          replyRoom: BLOCK,
          queue,
        }, (reply) => {
          expectOk("READ", reply.error);
          if (reply.payload.length !== BLOCK) {
            throw new Error(`READ returned ${reply.payload.length} bytes`);
          }
          done(1);
        });
    },
  },
  {
    name: "randwrite 4k",
    unit: "IOPS",
    dataOnly: true,
    make: (p) => {
      const random = randomSource(0x9e3779b9);
      const data = new Uint8Array(BLOCK);
      fillRandom(data);
      return (pipeline, queue, _slot, done) =>
        pipeline.submit({
          opcode: FuseOpcode.WRITE,
          args: {
            fh: p.dataFh,
            offset: randomBlock(random),
            data,
            writeFlags: 0,
            lockOwner: 0n,
            flags: 0,
          },
          nodeid: p.dataNode,
          replyRoom: 8,
          queue,
        }, (reply) => {
          expectOk("WRITE", reply.error);
          const size = new DataView(reply.payload.buffer, reply.payload.byteOffset).getUint32(
            0,
            true,
          );
          if (size !== BLOCK) throw new Error(`WRITE wrote ${size} bytes`);
          done(1);
        });
    },
  },
  {
    name: "getattr",
    unit: "ops/s",
    dataOnly: false,
    make: (p) => {
      const random = randomSource(0x1234567);
      return (pipeline, queue, _slot, done) =>
        pipeline.submit({
          opcode: FuseOpcode.GETATTR,
          args: { getattrFlags: 0, fh: 0n },
          nodeid: p.statNodes[random(p.statNodes.length)],
          replyRoom: 104,
          queue,
        }, (reply) => {
          expectOk("GETATTR", reply.error);
          done(1);
        });
    },
  },
  {
    name: "lookup",
    unit: "ops/s",
    dataOnly: false,
    make: (p) => {
      const random = randomSource(0x7654321);
      const names = Array.from({ length: BIG_DIR_FILES }, (_, i) => name(bigDirEntry(i)));
      return (pipeline, queue, _slot, done) =>
        pipeline.submit({
          opcode: FuseOpcode.LOOKUP,
          args: { name: names[random(names.length)] },
          nodeid: p.bigDir,
          replyRoom: 128,
          queue,
        }, (reply) => {
          expectOk("LOOKUP", reply.error);
          done(1);
        });
    },
  },
  {
    name: "create+unlink",
    unit: "files/s",
    dataOnly: false,
    make: (p, runId) => {
      let serial = 0;
      return (pipeline, queue, _slot, done) => {
        const file = name(`${runId}-${serial++}`);
        pipeline.submit({
          opcode: FuseOpcode.CREATE,
          args: {
            flags: O_RDWR | O_CREAT | O_EXCL,
            mode: 0o644,
            umask: 0,
            openFlags: 0,
            name: file,
          },
          nodeid: p.churnDir,
          replyRoom: 144,
          queue,
        }, (created) => {
          expectOk("CREATE", created.error);
          const nodeid = decodeEntryOut(created.payload).nodeid;
          const fh = new DataView(created.payload.buffer, created.payload.byteOffset + 128)
            .getBigUint64(0, true);
          pipeline.submit({
            opcode: FuseOpcode.RELEASE,
            args: { fh, flags: O_RDWR, releaseFlags: 0, lockOwner: 0n },
            nodeid,
            replyRoom: 0,
            queue,
          }, (released) => {
            expectOk("RELEASE", released.error);
            pipeline.submit({
              opcode: FuseOpcode.UNLINK,
              args: { name: file },
              nodeid: p.churnDir,
              replyRoom: 0,
              queue,
            }, (unlinked) => {
              expectOk("UNLINK", unlinked.error);
              pipeline.submit({
                opcode: FuseOpcode.FORGET,
                args: { nlookup: 1n },
                nodeid,
                replyRoom: 0,
                noReply: true,
                queue: HIPRIO_QUEUE,
              }, () => done(1));
            });
          });
        });
      };
    },
  },
  {
    name: "readdirplus 64k",
    unit: "entries/s",
    dataOnly: false,
    make: (p) => {
      const offsets = p.dirHandles.map(() => 0n);
      return (pipeline, queue, slot, done) =>
        pipeline.submit({
          opcode: FuseOpcode.READDIRPLUS,
          args: {
            fh: p.dirHandles[slot],
            offset: offsets[slot],
            size: READDIR_BYTES,
            readFlags: 0,
            lockOwner: 0n,
            flags: 0,
          },
          nodeid: p.bigDir,
          replyRoom: READDIR_BYTES,
          queue,
        }, (reply) => {
          expectOk("READDIRPLUS", reply.error);
          const entries = decodeDirentsPlus(reply.payload);
          offsets[slot] = entries.length === 0 ? 0n : entries[entries.length - 1].dirent.off;
          done(entries.length);
        });
    },
  },
];

function bigDirEntry(i: number): string {
  return `f${String(i).padStart(5, "0")}`;
}

/** One back-end's figures for one workload. */
export interface Measured {
  /** Units (operations, entries) per second. */
  rate: number;
  /** Median operation latency, µs. */
  p50us: number;
  /** 99th percentile, µs. */
  p99us: number;
  /** CPU µs the back-end process spent per unit. */
  cpuUs: number;
}

/**
 * One back-end's side of a row: a fresh connection and set-up (INIT,
 * look-ups) against `peer`, `opts.depth` operations in flight over `queues`
 * request queues while a phase runs; `dataName` is the file the 4 KiB rows
 * use, `runId` makes the names create+unlink uses unique. Phases can be
 * interleaved with another session's: the pipeline drains at each end.
 */
export class RowSession {
  readonly #peer: Peer;
  readonly #client: VhostUserClient;
  readonly #memory: SharedGuestMemory;
  readonly #driver: FsDriver;
  readonly #prepared: Prepared;
  readonly #pipeline: FsPipeline;
  readonly #operation: Operation;
  readonly #queues: number;
  readonly #depth: number;
  readonly #latencies: number[] = [];
  #units = 0;
  #cpuNs = 0;
  #ms = 0;
  #record = false;
  #running = false;

  constructor(
    peer: Peer,
    workload: Workload,
    opts: FsHostOptions,
    queues: number,
    dataName: string,
    runId: string,
  ) {
    this.#peer = peer;
    this.#queues = queues;
    this.#depth = opts.depth;
    this.#client = VhostUserClient.connect(peer.socket);
    this.#memory = SharedGuestMemory.create({ size: 64 << 20 });
    let driver: FsDriver | undefined;
    try {
      driver = FsDriver.setup(this.#client, this.#memory, {
        numRequestQueues: queues,
        queueSize: 128,
        eventIdx: true,
        bufferPoolBytes: 2 << 20,
      });
      driver.init();
      this.#prepared = prepare(driver, workload, opts.depth, dataName);
      this.#pipeline = new FsPipeline(driver, this.#memory, opts.depth, READDIR_BYTES + 4096);
      this.#operation = workload.make(this.#prepared, runId);
      this.#driver = driver;
    } catch (e) {
      driver?.close();
      this.#memory.close();
      this.#client.close();
      throw e;
    }
  }

  #start(slot: number): void {
    const t0 = performance.now();
    this.#operation(this.#pipeline, 1 + (slot % this.#queues), slot, (n) => {
      if (this.#record) {
        this.#latencies.push(performance.now() - t0);
        this.#units += n;
      }
      if (this.#running) this.#start(slot);
    });
  }

  /** Keeps the pipeline full for `ms`, then drains it; counted when `record`. */
  phase(ms: number, record: boolean): void {
    const cpu0 = cpuNs(this.#peer.child.pid);
    const t0 = performance.now();
    this.#record = record;
    this.#running = true;
    for (let slot = 0; slot < this.#depth; slot++) this.#start(slot);
    const end = t0 + ms;
    while (performance.now() < end) this.#pipeline.poll();
    this.#running = false;
    this.#pipeline.drain();
    if (record) {
      this.#ms += performance.now() - t0;
      this.#cpuNs += cpuNs(this.#peer.child.pid) - cpu0;
    }
    this.#record = false;
  }

  /** What the recorded phases measured, together. */
  result(): Measured {
    const sorted = Float64Array.from(this.#latencies).sort();
    return {
      rate: this.#units / (this.#ms / 1000),
      p50us: percentile(sorted, 0.5) * 1000,
      p99us: percentile(sorted, 0.99) * 1000,
      cpuUs: this.#cpuNs / 1000 / this.#units,
    };
  }

  /** Releases the row's handles and closes the connection. */
  close(): void {
    try {
      cleanUp(this.#driver, this.#prepared);
    } finally {
      this.#pipeline.close();
      this.#driver.close();
      this.#memory.close();
      this.#client.close();
    }
  }
}

/**
 * Measures a row on two sessions at once: both warm up, then the measured
 * time is cut into `SLICE_MS` slices that alternate between them (who goes
 * first alternating too); results in the sessions' order. The machine's speed drifts over seconds (a VM on
 * a shared host); slices make that drift hit both back-ends alike, where
 * two seconds each one after the other did not.
 */
export function measureInterleaved(sessions: readonly RowSession[], seconds: number): Measured[] {
  for (const session of sessions) session.phase(WARM_UP_MS, false);
  const slices = Math.max(1, Math.round(seconds * 1000 / SLICE_MS));
  for (let i = 0; i < slices; i++) {
    const order = i % 2 === 0 ? sessions : [...sessions].reverse();
    for (const session of order) session.phase(seconds * 1000 / slices, true);
  }
  return sessions.map((session) => session.result());
}

function prepare(driver: FsDriver, workload: Workload, depth: number, dataName: string): Prepared {
  const data = driver.lookup(1n, dataName).nodeid;
  const prepared: Prepared = {
    dataNode: data,
    dataFh: driver.open(data, O_RDWR).fh,
    bigDir: 0n,
    statNodes: [],
    churnDir: 0n,
    dirHandles: [],
  };
  if (workload.dataOnly) return prepared;
  prepared.bigDir = driver.lookup(1n, BIG_DIR).nodeid;
  prepared.churnDir = driver.lookup(1n, CHURN_DIR).nodeid;
  for (let i = 0; i < STAT_FILES; i++) {
    prepared.statNodes.push(driver.lookup(prepared.bigDir, bigDirEntry(i * 10)).nodeid);
  }
  if (workload.name.startsWith("readdirplus")) {
    for (let slot = 0; slot < depth; slot++) {
      prepared.dirHandles.push(driver.opendir(prepared.bigDir).fh);
    }
  }
  return prepared;
}

function cleanUp(driver: FsDriver, prepared: Prepared): void {
  // FsDriver's release helpers send the root as the node: virtiofsd wants the handle's own.
  const args = { flags: 0, releaseFlags: 0, lockOwner: 0n };
  for (const fh of prepared.dirHandles) {
    driver.call(FuseOpcode.RELEASEDIR, { ...args, fh }, { nodeid: prepared.bigDir });
  }
  driver.call(FuseOpcode.RELEASE, { ...args, fh: prepared.dataFh, flags: O_RDWR }, {
    nodeid: prepared.dataNode,
  });
}

/** Writes the tree every workload needs into `dir` (an empty directory). */
export async function makeTree(dir: string): Promise<void> {
  await writeRandomFile(`${dir}/${DATA_FILE}`, DATA_BYTES);
  await Deno.mkdir(`${dir}/${BIG_DIR}`);
  await Deno.mkdir(`${dir}/${CHURN_DIR}`);
  for (let i = 0; i < BIG_DIR_FILES; i++) {
    Deno.writeFileSync(`${dir}/${BIG_DIR}/${bigDirEntry(i)}`, new Uint8Array(0));
  }
}

/** The wrapper scripts/setup_virtiofsd.sh makes, or `$VIRTIOFSD`. */
export function benchVirtiofsd(): string | undefined {
  const candidates = [Deno.env.get("VIRTIOFSD"), "/var/cache/vhostd-bench/virtiofsd"];
  return candidates.find((path) => {
    if (!path) return false;
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
}

/** virtiofsd's flags in this benchmark, besides the directory and socket. */
export function virtiofsdBenchFlags(threads: number): string[] {
  return [
    "--cache",
    "never",
    "--sandbox",
    "none",
    "--seccomp",
    "none",
    "--inode-file-handles=never",
    "--no-announce-submounts",
    "--thread-pool-size",
    String(threads),
    "--log-level",
    "error",
  ];
}

/** Starts `kind` serving `sharedDir` on `socket` (see {@linkcode virtiofsdBenchFlags}). */
export function startBackend(
  kind: "vhostd" | "virtiofsd",
  binary: string,
  sharedDir: string,
  socket: string,
  queues: number,
  threads: number,
): Promise<Peer> {
  if (kind === "vhostd") {
    return startPeer("vhostd", Deno.execPath(), [
      "run",
      "-A",
      MAIN,
      "fs",
      "--shared-dir",
      sharedDir,
      "--socket-path",
      socket,
      "--num-request-queues",
      String(queues),
      "--cache",
      "never",
      // Like virtiofsd's --sandbox none here; the CPU column reads this process.
      "--sandbox",
      "none",
      "--log-level",
      "warn",
    ], socket);
  }
  return startPeer("virtiofsd", binary, [
    "--shared-dir",
    sharedDir,
    "--socket-path",
    socket,
    ...virtiofsdBenchFlags(threads),
  ], socket);
}

/** Runs every row on one backing and prints its table. */
async function runBacking(
  label: string,
  sharedDir: string,
  dataName: string,
  dataOnly: boolean,
  threads: number,
  virtiofsd: string,
  dir: string,
  opts: FsHostOptions,
  betweenRows: () => Promise<void>,
): Promise<void> {
  console.log(`\n${label}; virtiofsd --thread-pool-size ${threads}`);
  console.log(
    (pad("workload", 17) + pad("q v/f", 7) + pad("unit", 10) + pad("vhostd", 9) +
      pad("p50/p99 us", 12) + pad("virtiofsd", 10) + pad("p50/p99 us", 12) +
      pad("vhostd/virtiofsd [runs]", 26) + "CPU us/unit v/f").trimEnd(),
  );
  let runSerial = 0;
  for (const queues of opts.queues) {
    for (const workload of WORKLOADS) {
      if (dataOnly && !workload.dataOnly) continue;
      await betweenRows();
      const ours: Measured[] = [];
      const theirs: Measured[] = [];
      for (let run = 0; run < opts.runs; run++) {
        // Both back-ends run side by side, fresh each run, and take turns (measureInterleaved);
        // which one starts, connects and warms up first alternates from run to run.
        const kinds = run % 2 === 0
          ? (["vhostd", "virtiofsd"] as const)
          : (["virtiofsd", "vhostd"] as const);
        const peers: Peer[] = [];
        const sessions: RowSession[] = [];
        try {
          for (const kind of kinds) {
            const socket = `${dir}/${kind}.sock`;
            const served = kind === "vhostd" ? queues : Math.min(queues, VIRTIOFSD_REQUEST_QUEUES);
            peers.push(await startBackend(kind, virtiofsd, sharedDir, socket, served, threads));
            sessions.push(
              new RowSession(peers.at(-1)!, workload, opts, served, dataName, `r${runSerial++}`),
            );
          }
          const results = measureInterleaved(sessions, opts.seconds);
          ours.push(results[kinds.indexOf("vhostd")]);
          theirs.push(results[kinds.indexOf("virtiofsd")]);
        } finally {
          for (const session of sessions) session.close();
          for (const peer of peers) {
            await stopPeer(peer);
            await Deno.remove(peer.socket).catch(() => {});
          }
        }
      }
      const ratios = ours.map((m, i) => m.rate / theirs[i].rate);
      const ratioText = `${fmt(median(ratios), 2)}x [` +
        ratios.map((r) => fmt(r, 2)).join(" ") + "]";
      const mid = (ms: Measured[], f: (m: Measured) => number) => median(ms.map(f));
      console.log(
        (pad(workload.name, 17) +
          pad(`${queues}/${Math.min(queues, VIRTIOFSD_REQUEST_QUEUES)}`, 7) +
          pad(workload.unit, 10) +
          pad(fmt(mid(ours, (m) => m.rate)), 9) +
          pad(`${fmt(mid(ours, (m) => m.p50us))}/${fmt(mid(ours, (m) => m.p99us))}`, 12) +
          pad(fmt(mid(theirs, (m) => m.rate)), 10) +
          pad(`${fmt(mid(theirs, (m) => m.p50us))}/${fmt(mid(theirs, (m) => m.p99us))}`, 12) +
          pad(ratioText, 26) +
          `${fmt(mid(ours, (m) => m.cpuUs), 1)}/${fmt(mid(theirs, (m) => m.cpuUs), 1)}`)
          .trimEnd(),
      );
    }
  }
}

/**
 * Runs the host-driven rows on every backing asked for and prints their
 * tables; prints why and returns when no virtiofsd is installed.
 * `betweenRows` (the runner's Ctrl-C check) is awaited before each row and
 * may throw to stop; the back-ends and latency_fs are cleaned up anyway.
 */
export async function runFsHostBench(
  opts: FsHostOptions,
  betweenRows: () => Promise<void> = () => Promise.resolve(),
): Promise<void> {
  const virtiofsd = benchVirtiofsd();
  console.log(
    `\nvirtio-fs, host-driven: TypeScript front-end, ${opts.depth} operations in flight over ` +
      `the request queues, queue size 128, event idx, ${opts.seconds} s per row and back-end ` +
      `in turns of ${SLICE_MS} ms, ${opts.runs} runs (median; the ratio of each run in ` +
      `brackets); vhostd --cache never, ` +
      `virtiofsd ${virtiofsdBenchFlags(0).slice(0, -4).join(" ")}`,
  );
  if (virtiofsd === undefined) {
    console.log("fs host-driven: skipped: no virtiofsd (bash scripts/setup_virtiofsd.sh)");
    return;
  }
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vhostd-bench-fshost-" });
  let fs: LatencyFs | undefined;
  try {
    if (opts.backings.includes("tmpfs")) {
      const shared = `${dir}/shared`;
      await Deno.mkdir(shared);
      await makeTree(shared);
      await runBacking(
        `backing: tmpfs (${DATA_BYTES >> 20} MiB file, ${BIG_DIR_FILES} files in one directory)`,
        shared,
        DATA_FILE,
        false,
        opts.virtiofsdThreads.tmpfs,
        virtiofsd,
        dir,
        opts,
        betweenRows,
      );
      await Deno.remove(shared, { recursive: true });
    }
    if (opts.backings.includes("latency")) {
      const store = `${dir}/store.img`;
      const mountpoint = `${dir}/mnt`;
      await writeRandomFile(store, DATA_BYTES);
      await Deno.mkdir(mountpoint);
      try {
        fs = await mountLatencyFs(await buildLatencyFs(), store, mountpoint, opts.delayUs);
      } catch (error) {
        console.log(`\nfs host-driven on latency_fs: skipped: ${error}`);
      }
      if (fs !== undefined) {
        await runBacking(
          `backing: latency_fs (FUSE, ${opts.delayUs} µs per read/write, any number in flight; ` +
            `one ${DATA_BYTES >> 20} MiB file)`,
          mountpoint,
          "disk.img",
          true,
          opts.virtiofsdThreads.latency,
          virtiofsd,
          dir,
          opts,
          betweenRows,
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

/** The command-line spelling of {@linkcode FsHostOptions} (strings as parseArgs gives them). */
export interface FsHostArgs {
  seconds?: string;
  backing?: string;
  "delay-us"?: string;
  "fs-queues"?: string;
  "fs-depth"?: string;
  "fs-runs"?: string;
  "fs-threads"?: string;
}

/** parseArgs options for {@linkcode FsHostArgs}, besides the shared ones. */
export const FS_HOST_ARG_OPTIONS = {
  "fs-queues": { type: "string" },
  "fs-depth": { type: "string" },
  "fs-runs": { type: "string" },
  "fs-threads": { type: "string" },
} as const;

function wholeNumbers(text: string, option: string, min: number, max: number): number[] {
  const values = text.split(",").map(Number);
  if (values.some((v) => !Number.isInteger(v) || v < min || v > max)) {
    throw new RangeError(`--${option} takes whole numbers from ${min} to ${max}, got "${text}"`);
  }
  return values;
}

/**
 * Checks and converts the options; defaults: 3 s, request queues 1 and 4,
 * depth 32, 2 runs, both backings, 100 µs, virtiofsd pool 0 on tmpfs and
 * 32 on latency_fs (`--fs-threads T` or `--fs-threads TMPFS,LATENCY`).
 *
 * @throws {RangeError} naming the bad option
 */
export function fsHostOptions(args: FsHostArgs): FsHostOptions {
  const seconds = Number(args.seconds ?? "3");
  if (!(seconds > 0)) throw new RangeError("--seconds must be positive");
  const backing = args.backing ?? "both";
  if (!["tmpfs", "latency", "both"].includes(backing)) {
    throw new RangeError("--backing must be tmpfs, latency or both");
  }
  const [delayUs] = wholeNumbers(args["delay-us"] ?? "100", "delay-us", 0, 1_000_000);
  const [depth] = wholeNumbers(args["fs-depth"] ?? "32", "fs-depth", 1, 100);
  const [runs] = wholeNumbers(args["fs-runs"] ?? "2", "fs-runs", 1, 20);
  const threads = wholeNumbers(args["fs-threads"] ?? "0,32", "fs-threads", 0, 256);
  return {
    seconds,
    queues: wholeNumbers(args["fs-queues"] ?? "1,4", "fs-queues", 1, 64),
    depth,
    runs,
    backings: backing === "both" ? ["tmpfs", "latency"] : [backing as "tmpfs" | "latency"],
    delayUs,
    virtiofsdThreads: { tmpfs: threads[0], latency: threads[1] ?? threads[0] },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      ...FS_HOST_ARG_OPTIONS,
      seconds: { type: "string" },
      backing: { type: "string" },
      "delay-us": { type: "string" },
    },
  });
  await runFsHostBench(fsHostOptions(values));
}
