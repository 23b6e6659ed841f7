/**
 * Checks with fio that latency_fs behaves like an SSD: at queue depth 1 a
 * 4 KiB random read or write takes about the delay (IOPS near 1/delay), at
 * depth 32 many are in flight at once (IOPS far above 1/delay). Prints IOPS,
 * completion latency and the FUSE server's CPU time per request.
 *
 * `deno run -A scripts/latency_fs/check.ts [--delay-us N] [--seconds N]`
 * (needs fio: apt-get install fio).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fillRandom } from "../bench_state.ts";
import {
  buildLatencyFs,
  cpuNs,
  type LatencyFs,
  mountLatencyFs,
  unmountLatencyFs,
} from "./mount.ts";

/** One fio job: what it runs and what it reported. */
interface FioResult {
  iops: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  ios: number;
}

interface FioJobSide {
  iops: number;
  total_ios: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}

/** Runs fio on `file` with `args` (one job) and returns its read or write side. */
async function fio(
  file: string,
  seconds: number,
  args: string[],
  write: boolean,
): Promise<FioResult> {
  const out = await new Deno.Command("fio", {
    args: [
      "--name=check",
      `--filename=${file}`,
      "--bs=4k",
      "--direct=1",
      `--runtime=${seconds}`,
      "--time_based",
      "--output-format=json",
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`fio failed: ${new TextDecoder().decode(out.stderr)}`);
  const job = JSON.parse(new TextDecoder().decode(out.stdout)).jobs[0];
  const side: FioJobSide = write ? job.write : job.read;
  const p = side.clat_ns.percentile ?? {};
  return {
    iops: side.iops,
    meanUs: side.clat_ns.mean / 1000,
    p50Us: (p["50.000000"] ?? NaN) / 1000,
    p99Us: (p["99.000000"] ?? NaN) / 1000,
    ios: side.total_ios,
  };
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "delay-us": { type: "string", default: "100" },
      seconds: { type: "string", default: "4" },
    },
  });
  const delayUs = Number(values["delay-us"]);
  const seconds = Number(values.seconds);
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "latency-fs-check-" });
  let fs: LatencyFs | undefined;
  try {
    const store = `${dir}/store.img`;
    const bytes = new Uint8Array(64 << 20);
    fillRandom(bytes);
    await Deno.writeFile(store, bytes);
    await Deno.mkdir(`${dir}/mnt`);
    fs = await mountLatencyFs(await buildLatencyFs(), store, `${dir}/mnt`, delayUs);
    console.log(
      `latency_fs, ${delayUs} µs per request, 64 MiB image, fio 4 KiB O_DIRECT, ${seconds} s each ` +
        `(${navigator.hardwareConcurrency} CPUs; 1/delay = ${Math.round(1e6 / delayUs)} IOPS)`,
    );
    console.log(
      pad("job", 30) + pad("IOPS", 10) + pad("mean us", 10) + pad("p50/p99 us", 14) +
        "fs CPU us/req",
    );
    const jobs: [string, string[], boolean][] = [
      ["randread psync qd1", ["--rw=randread", "--ioengine=psync"], false],
      ["randwrite psync qd1", ["--rw=randwrite", "--ioengine=psync"], true],
      ["randread io_uring qd1", ["--rw=randread", "--ioengine=io_uring", "--iodepth=1"], false],
      ["randread io_uring qd32", ["--rw=randread", "--ioengine=io_uring", "--iodepth=32"], false],
      ["randwrite io_uring qd32", ["--rw=randwrite", "--ioengine=io_uring", "--iodepth=32"], true],
      ["randread libaio qd32", ["--rw=randread", "--ioengine=libaio", "--iodepth=32"], false],
    ];
    for (const [name, args, write] of jobs) {
      const before = cpuNs(fs.child.pid);
      const r = await fio(fs.image, seconds, args, write);
      const cpu = (cpuNs(fs.child.pid) - before) / 1000 / r.ios;
      console.log(
        pad(name, 30) + pad(r.iops.toFixed(0), 10) + pad(r.meanUs.toFixed(0), 10) +
          pad(`${r.p50Us.toFixed(0)}/${r.p99Us.toFixed(0)}`, 14) + cpu.toFixed(1),
      );
    }
  } finally {
    if (fs !== undefined) await unmountLatencyFs(fs);
    await Deno.remove(dir, { recursive: true });
  }
}
