/**
 * virtio-fs benchmark (part of `deno task bench`, `--only fs`): one TCG
 * guest under QEMU mounts three tmpfs directories — served by `vhostd fs
 * --cache never`, by virtiofsd with no caching when one is installed, and by
 * `vhostd fs --cache auto` (the default, guest page cache on, for
 * reference) — and runs the workload of `fsBenchScript` on each in turns:
 * sequential write and read of 64 MiB (MiB/s), create, stat and unlink of
 * 1,000 files (seconds and ops/s), timed after one untimed round (a warm-up,
 * as the host rows have). The table shows the medians over the rounds and
 * vhostd's speed over virtiofsd's in each round. Not a test: it prints
 * numbers and never fails on speed.
 *
 * The guest is emulated (no KVM here), so the guest's own CPU time is part
 * of every figure, for every back-end alike; the ratio is what compares them.
 *
 * Run alone: `deno run -A scripts/bench_fs.ts [ROUNDS]` (default 3 timed rounds).
 *
 * @module
 */

import { guestAssets, qemuAvailable, runGuest } from "../tests/qemu/harness.ts";
import {
  findVirtiofsd,
  type FsBackendKind,
  startFsBackend,
  stopBackend,
  vhostUserFsArgs,
} from "../tests/qemu/fs_backend.ts";
import type { VhostdProcess } from "../tests/qemu/migration_harness.ts";
import {
  BENCH_FILE_MIB,
  BENCH_FILES,
  benchPhaseTimes,
  fsBenchScript,
  type PhaseTimes,
} from "./fs_bench_script.ts";
import { benchVirtiofsd } from "./bench_fs_host.ts";
import { median } from "./bench_stats.ts";

/** One share of the benchmark guest: its mount tag and who serves it how. */
export interface BenchShare {
  /** Mount tag, also the share's name in the guest's marks. */
  tag: string;
  kind: FsBackendKind;
  /** `vhostd fs` options (vhostd only). */
  vhostdArgs?: string[];
}

/**
 * Boots one guest with a fresh tmpfs directory per share, each served by
 * its own back-end, runs `rounds` timed rounds of the workload on all of
 * them, and returns each share's phase times per round.
 *
 * @throws {Error} with the console tail and the back-ends' logs when the guest did not finish
 */
export async function benchFsShares(
  shares: BenchShare[],
  rounds: number,
): Promise<Map<string, PhaseTimes[]>> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vhostd-bench-fs-" });
  const backends: VhostdProcess[] = [];
  try {
    const chardevs: string[] = [];
    for (const [i, share] of shares.entries()) {
      const base = `${dir}/${share.tag}`;
      await Deno.mkdir(`${base}/shared`, { recursive: true });
      backends.push(
        await startFsBackend(share.kind, {
          sharedDir: `${base}/shared`,
          socket: `${base}/fs.sock`,
          logPath: `${base}/backend.log`,
          logLevel: "warn",
          vhostdArgs: share.vhostdArgs,
        }),
      );
      chardevs.push(...vhostUserFsArgs(`${base}/fs.sock`, share.tag, `fs${i}`));
    }
    const tags = shares.map((share) => share.tag);
    const result = await runGuest({
      script: fsBenchScript(tags, rounds),
      chardevs,
      memoryMiB: 512,
      // A round is a few seconds per share on this machine; ten times that on a busy one.
      timeoutMs: 60_000 * shares.length * (rounds + 1),
    });
    if (result.exitCode !== 0) {
      const logs = await Promise.all(backends.map((backend) => backend.log()));
      throw new Error(
        `the guest workload failed (exit ${result.exitCode}):\n` +
          `${result.output.slice(-3000)}\n${result.qemuStderr}\n${logs.join("\n")}`,
      );
    }
    return benchPhaseTimes(result.scriptOutput, tags, rounds);
  } finally {
    for (const backend of backends) await stopBackend(backend).catch(() => backend.dispose());
    await Deno.remove(dir, { recursive: true });
  }
}

interface Row {
  name: string;
  unit: string;
  value: (times: PhaseTimes) => number;
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
 * Runs `rounds` timed rounds of the fs workload in one guest on three shares
 * (vhostd `--cache never`, virtiofsd cache=none when installed, vhostd
 * `--cache auto`) and prints the medians and vhostd's speed over virtiofsd's
 * in each round. Prints why and returns when QEMU or the guest is missing.
 */
export async function runFsBench(rounds = 3): Promise<void> {
  console.log(
    `\nvirtio-fs: one TCG guest (QEMU, no KVM), a tmpfs shared directory per back-end; ` +
      `${BENCH_FILE_MIB} MiB sequential, ${BENCH_FILES} files; one untimed round, then ` +
      `${rounds} timed, each phase on every share in turn, the order reversed every round ` +
      `(median; the ratio of each round in brackets)`,
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
  const shares: BenchShare[] = [
    { tag: "never", kind: "vhostd", vhostdArgs: ["--cache", "never"] },
    ...(virtiofsd === undefined ? [] : [{ tag: "virtiofsd", kind: "virtiofsd" as const }]),
    { tag: "auto", kind: "vhostd", vhostdArgs: ["--cache", "auto"] },
  ];
  const times = await benchFsShares(shares, rounds);
  const ours = times.get("never")!;
  const cached = times.get("auto")!;
  const theirs = times.get("virtiofsd");
  console.log(
    pad("workload", 22) + pad("unit", 7) + pad("vhostd never", 14) + pad("vhostd auto", 13) +
      (theirs ? pad("virtiofsd none", 16) + "never/virtiofsd speed [rounds]" : ""),
  );
  for (const row of ROWS) {
    let line = pad(row.name, 22) + pad(row.unit, 7) + pad(fmt(median(ours.map(row.value))), 14) +
      pad(fmt(median(cached.map(row.value))), 13);
    if (theirs) {
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
  const rounds = Deno.args.length === 0 ? 3 : Number(Deno.args[0]);
  if (!Number.isInteger(rounds) || rounds < 1 || Deno.args.length > 1) {
    console.error(
      "usage: deno run -A scripts/bench_fs.ts [ROUNDS]   (ROUNDS: a whole number, default 3)",
    );
    Deno.exit(2);
  }
  await runFsBench(rounds);
}
