/**
 * virtio-fs benchmark (part of `deno task bench`, `--only fs`): a TCG guest
 * under QEMU mounts a tmpfs directory shared through `vhostd fs` and runs
 * the workload of `fsBenchScript` — sequential write and read of 64 MiB
 * (MiB/s), create, stat and unlink of 1,000 files (seconds and ops/s), timed
 * after one untimed round of the same (a warm-up, as the host rows have). When
 * a virtiofsd is installed the same workload runs against it in the same
 * run, and the table shows both and their ratio. Not a test: it prints
 * numbers and never fails on speed.
 *
 * The guest is emulated (no KVM here), so the guest's own CPU time is part
 * of every figure, for both back-ends alike; the ratio is what compares them.
 *
 * Run alone: `deno run -A scripts/bench_fs.ts [RUNS]` (default 3 runs per back-end).
 *
 * @module
 */

import { guestAssets, qemuAvailable, runGuest } from "../tests/qemu/harness.ts";
import type { GuestRunResult } from "../tests/qemu/harness.ts";
import {
  findVirtiofsd,
  type FsBackendKind,
  startFsBackend,
  stopBackend,
  vhostUserFsArgs,
} from "../tests/qemu/fs_backend.ts";
import { BENCH_FILE_MIB, BENCH_FILES, fsBenchScript } from "../tests/qemu/fs_guest_scripts.ts";
import type { VhostdProcess } from "../tests/qemu/migration_harness.ts";
import { benchVirtiofsd } from "./bench_fs_host.ts";
import { median } from "./bench_stats.ts";

/** Seconds each phase of the workload took in one back-end's run. */
export interface FsBenchTimes {
  write: number;
  read: number;
  create: number;
  stat: number;
  unlink: number;
}

const PHASES: (keyof FsBenchTimes)[] = ["write", "read", "create", "stat", "unlink"];

/**
 * Boots a guest against `kind` serving a fresh tmpfs directory and returns
 * the phase times the guest measured.
 *
 * @throws {Error} with the console tail when the guest did not finish its workload
 */
export async function benchFsBackend(
  kind: FsBackendKind,
  vhostdArgs: string[] = [],
): Promise<FsBenchTimes> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vhostd-bench-fs-" });
  let backend: VhostdProcess | undefined;
  let result: GuestRunResult | undefined;
  try {
    await Deno.mkdir(`${dir}/shared`);
    backend = await startFsBackend(kind, {
      sharedDir: `${dir}/shared`,
      socket: `${dir}/fs.sock`,
      logPath: `${dir}/backend.log`,
      logLevel: "warn",
      vhostdArgs,
    });
    result = await runGuest({
      script: fsBenchScript(),
      chardevs: vhostUserFsArgs(backend.socket),
      memoryMiB: 512,
      timeoutMs: 300_000,
    });
    if (result.exitCode !== 0) {
      throw new Error(
        `${kind}: the guest workload failed (exit ${result.exitCode}):\n` +
          `${result.output.slice(-3000)}\n${result.qemuStderr}\n${await backend.log()}`,
      );
    }
    return phaseTimes(result.scriptOutput);
  } finally {
    if (backend !== undefined) await stopBackend(backend).catch(() => backend?.dispose());
    await Deno.remove(dir, { recursive: true });
  }
}

/** Subtracts the `MARK phase-start|end UPTIME` lines of the guest's output. */
function phaseTimes(output: string): FsBenchTimes {
  const marks = new Map<string, number>();
  for (const match of output.matchAll(/^MARK (\S+) (\d+)$/gm)) {
    marks.set(match[1], Number(match[2]) / 1e9);
  }
  const times = {} as FsBenchTimes;
  for (const phase of PHASES) {
    const start = marks.get(`${phase}-start`);
    const end = marks.get(`${phase}-end`);
    if (start === undefined || end === undefined) {
      throw new Error(`the guest printed no marks for ${phase}:\n${output}`);
    }
    times[phase] = Math.max(end - start, 1e-6);
  }
  return times;
}

interface Row {
  name: string;
  unit: string;
  value: (times: FsBenchTimes) => number;
  /** True when a larger value is better (throughput); the ratio is always vhostd/virtiofsd speed. */
  rate: boolean;
}

const ROWS: Row[] = [
  { name: "seq write 1M fsync", unit: "MiB/s", value: (t) => BENCH_FILE_MIB / t.write, rate: true },
  { name: "seq read 1M (cold)", unit: "MiB/s", value: (t) => BENCH_FILE_MIB / t.read, rate: true },
  { name: `create ${BENCH_FILES}`, unit: "s", value: (t) => t.create, rate: false },
  {
    name: `create ${BENCH_FILES}`,
    unit: "ops/s",
    value: (t) => BENCH_FILES / t.create,
    rate: true,
  },
  { name: `stat ${BENCH_FILES}`, unit: "s", value: (t) => t.stat, rate: false },
  { name: `stat ${BENCH_FILES}`, unit: "ops/s", value: (t) => BENCH_FILES / t.stat, rate: true },
  { name: `unlink ${BENCH_FILES}`, unit: "s", value: (t) => t.unlink, rate: false },
  {
    name: `unlink ${BENCH_FILES}`,
    unit: "ops/s",
    value: (t) => BENCH_FILES / t.unlink,
    rate: true,
  },
];

function pad(text: string, width: number): string {
  return text.length >= width ? `${text} ` : text + " ".repeat(width - text.length);
}

function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(2);
}

/** The one-line version a virtiofsd binary reports, or its path when it says nothing. */
function virtiofsdVersion(binary: string): string {
  try {
    const out = new Deno.Command(binary, { args: ["--version"], stdout: "piped", stderr: "piped" })
      .outputSync();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    const line = text.split("\n").find((l) => l.trim() !== "");
    return line ? `${binary} (${line.trim()})` : binary;
  } catch {
    return binary;
  }
}

/**
 * Runs the fs workload `runs` times against vhostd (`--cache never`) and,
 * when installed, virtiofsd (cache=none), alternating which goes first, and
 * once against vhostd with its default `--cache auto` for reference; prints
 * the medians and the ratio of each run. Prints why and returns when QEMU or
 * the guest is missing.
 */
export async function runFsBench(runs = 3): Promise<void> {
  console.log(
    `\nvirtio-fs: TCG guest (QEMU, no KVM) on a tmpfs shared directory; ` +
      `${BENCH_FILE_MIB} MiB sequential, ${BENCH_FILES} files, timed after one untimed round; ` +
      `${runs} runs each, alternating ` +
      `who goes first (median; the ratio of each run in brackets)`,
  );
  if (!qemuAvailable()) {
    console.log("fs: skipped: QEMU 10 is not installed (bash scripts/setup_qemu.sh)");
    return;
  }
  try {
    guestAssets();
  } catch (error) {
    console.log(`fs: skipped: ${error instanceof Error ? error.message : error}`);
    return;
  }
  // The one scripts/setup_virtiofsd.sh installs, unless $VIRTIOFSD names another.
  const installed = benchVirtiofsd();
  if (installed !== undefined) Deno.env.set("VIRTIOFSD", installed);
  const virtiofsd = findVirtiofsd();
  if (virtiofsd === undefined) console.log("virtiofsd not installed: no comparison");
  else console.log(`virtiofsd: ${virtiofsdVersion(virtiofsd)}, no guest caching`);
  // Like for like: virtiofsd runs with cache=none, vhostd with --cache never.
  const ours: FsBenchTimes[] = [];
  const theirs: FsBenchTimes[] = [];
  for (let run = 0; run < runs; run++) {
    const order: FsBackendKind[] = run % 2 === 0
      ? ["vhostd", "virtiofsd"]
      : ["virtiofsd", "vhostd"];
    for (const kind of order) {
      if (kind === "vhostd") ours.push(await benchFsBackend("vhostd", ["--cache", "never"]));
      else if (virtiofsd !== undefined) theirs.push(await benchFsBackend("virtiofsd"));
    }
  }
  // The default (--cache auto, guest page cache on), shown beside them.
  const cached = await benchFsBackend("vhostd", ["--cache", "auto"]);
  const compared = theirs.length > 0;
  console.log(
    pad("workload", 22) + pad("unit", 7) + pad("vhostd never", 14) + pad("vhostd auto", 13) +
      (compared ? pad("virtiofsd none", 16) + "never/virtiofsd speed [runs]" : ""),
  );
  for (const row of ROWS) {
    let line = pad(row.name, 22) + pad(row.unit, 7) + pad(fmt(median(ours.map(row.value))), 14) +
      pad(fmt(row.value(cached)), 13);
    if (compared) {
      const speedRatios = ours.map((mine, i) => {
        const other = row.value(theirs[i]);
        return row.rate ? row.value(mine) / other : other / row.value(mine);
      });
      line += pad(fmt(median(theirs.map(row.value))), 16) +
        `${median(speedRatios).toFixed(2)}x [${speedRatios.map((r) => r.toFixed(2)).join(" ")}]`;
    }
    console.log(line);
  }
}

if (import.meta.main) {
  const runs = Deno.args.length === 0 ? 3 : Number(Deno.args[0]);
  if (!Number.isInteger(runs) || runs < 1 || Deno.args.length > 1) {
    console.error(
      "usage: deno run -A scripts/bench_fs.ts [RUNS]   (RUNS: a whole number, default 3)",
    );
    Deno.exit(2);
  }
  await runFsBench(runs);
}
