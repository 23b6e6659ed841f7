/**
 * vsock benchmark: throughput (MiB/s) with one and eight streams in each
 * direction, and round-trip latency, between host programs (this script,
 * on Unix sockets) and a QEMU guest (TCG) running socat on vsock, through
 * `vhostd vsock`. No other vhost-user vsock back-end is installable here,
 * so the figures are printed beside this machine's memory-copy speed, the
 * limit of a data path that copies every byte at least once. Not a test:
 * it prints numbers and never fails on speed.
 *
 *   deno run -A scripts/bench_vsock.ts [--single-mib N] [--eight-mib N] [--pings N]
 *
 * Under TCG the guest's CPU (socat, the virtio driver, every copy in the
 * guest kernel) is emulated, so the figures measure the whole path, of
 * which vhostd is one part; `--log-level` of vhostd is info.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { requireGuestEnvironment, runGuest } from "../tests/qemu/harness.ts";
import { VhostdProcess } from "../tests/qemu/migration_harness.ts";

const MiB = 1024 * 1024;
const GUEST_CID = 3;
/** Guest-to-host streams connect to host ports 5000 (single) and 5001..5008 (eight). */
const TO_HOST = 5000;
/** Host-to-guest streams go to guest ports 6000 (single) and 6001..6008 (eight). */
const TO_GUEST = 6000;
/** The guest's echo server for the round trips. */
const ECHO_PORT = 6100;
/** The guest connects here once its listeners are up; the host closes it to start phase 2. */
const READY_PORT = 7000;
const GO_PORT = 7001;
const EIGHT = 8;

/** A phase's measurement. */
export interface VsockThroughput {
  streams: number;
  bytes: number;
  ms: number;
  /** CPU time vhostd used in the phase (user + system), ms; undefined where /proc is not readable. */
  vhostdCpuMs?: number;
}

/** CPU time (user + system) of process `pid` so far, ms, from /proc (clock ticks of 10 ms). */
function cpuMs(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/** Runs `phase` and adds the CPU time vhostd (`pid`) used meanwhile. */
async function withCpu(
  pid: number,
  phase: () => Promise<VsockThroughput>,
): Promise<VsockThroughput> {
  const before = cpuMs(pid);
  const t = await phase();
  const after = cpuMs(pid);
  return {
    ...t,
    vhostdCpuMs: before === undefined || after === undefined ? undefined : after - before,
  };
}

/** What one run measured. */
export interface VsockBenchResult {
  hostToGuest: VsockThroughput[];
  guestToHost: VsockThroughput[];
  /** Round-trip times of 1-byte pings, ms, sorted. */
  roundTripsMs: number[];
  /** Memory copy speed of this machine (64 MiB Uint8Array.set), MiB/s. */
  memcpyMiBps: number;
}

function mibps(t: VsockThroughput): number {
  return t.bytes / MiB / (t.ms / 1000);
}

/** This machine's memory copy speed: the best of several 64 MiB copies. */
export function memoryCopySpeed(): number {
  const a = new Uint8Array(64 * MiB).fill(1);
  const b = new Uint8Array(64 * MiB);
  let best = Infinity;
  for (let i = 0; i < 8; i++) {
    const t0 = performance.now();
    b.set(a);
    best = Math.min(best, performance.now() - t0);
  }
  return 64 / (best / 1000);
}

async function acceptOne(path: string): Promise<Deno.UnixConn> {
  const listener = Deno.listen({ transport: "unix", path });
  try {
    return await listener.accept();
  } finally {
    listener.close();
  }
}

/** Reads `conn` to EOF; returns the bytes read. */
async function sink(conn: Deno.UnixConn): Promise<number> {
  let total = 0;
  const buf = new Uint8Array(256 * 1024);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      total += n;
    }
  } catch (e) {
    // A peer that ends with RST after everything was read is done all the same.
    if (!(e instanceof Deno.errors.ConnectionReset)) throw e;
  }
  conn.close();
  return total;
}

async function connectToGuest(uds: string, port: number): Promise<Deno.UnixConn> {
  const conn = await Deno.connect({ transport: "unix", path: uds });
  await writeAll(conn, new TextEncoder().encode(`CONNECT ${port}\n`));
  const answer = new Uint8Array(64);
  let got = 0;
  while (!answer.subarray(0, got).includes(0x0a)) {
    const n = await conn.read(answer.subarray(got));
    if (n === null) throw new Error(`CONNECT ${port}: refused`);
    got += n;
  }
  return conn;
}

async function writeAll(conn: Deno.UnixConn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}

/** Streams `bytes` zero bytes to each of `ports` at once; the guest discards them. */
async function hostToGuest(uds: string, ports: number[], bytes: number): Promise<VsockThroughput> {
  const conns = await Promise.all(ports.map((p) => connectToGuest(uds, p)));
  const chunk = new Uint8Array(256 * 1024);
  const t0 = performance.now();
  await Promise.all(conns.map(async (conn) => {
    for (let sent = 0; sent < bytes; sent += chunk.length) {
      await writeAll(conn, chunk.subarray(0, Math.min(chunk.length, bytes - sent)));
    }
    await conn.closeWrite();
    // The guest's socat closes after it read everything: its EOF ends the timing.
    await sink(conn);
  }));
  return { streams: ports.length, bytes: bytes * ports.length, ms: performance.now() - t0 };
}

/** 1-byte round trips through the guest's echo server. */
async function pings(uds: string, count: number): Promise<number[]> {
  const conn = await connectToGuest(uds, ECHO_PORT);
  const out = new Uint8Array([0x2a]);
  const back = new Uint8Array(16);
  const times: number[] = [];
  for (let i = 0; i < count + 10; i++) {
    const t0 = performance.now();
    await writeAll(conn, out);
    if (await conn.read(back) === null) throw new Error("the echo server closed");
    if (i >= 10) times.push(performance.now() - t0); // the first ten warm up
  }
  conn.close();
  return times.sort((a, b) => a - b);
}

function guestScript(singleMiB: number, eightMiB: number): string {
  return `
socat -d -d VSOCK-LISTEN:${ECHO_PORT} EXEC:/bin/cat 2>/tmp/le &
for i in $(seq 0 ${EIGHT}); do
  socat -b 65536 -d -d -u VSOCK-LISTEN:$((${TO_GUEST} + i)) /dev/null 2>/tmp/l$i &
done
for f in /tmp/le $(seq -f /tmp/l%g 0 ${EIGHT}); do
  until grep -q "listening on" $f; do usleep 20000; done
done
socat -u /dev/null VSOCK-CONNECT:2:${READY_PORT}
socat -u VSOCK-CONNECT:2:${GO_PORT} /dev/null
socat -b 65536 -u OPEN:/dev/zero,readbytes=${singleMiB * MiB} VSOCK-CONNECT:2:${TO_HOST}
for i in $(seq 1 ${EIGHT}); do
  socat -b 65536 -u OPEN:/dev/zero,readbytes=${eightMiB * MiB} VSOCK-CONNECT:2:$((${TO_HOST} + i)) &
done
wait
`;
}

/** Runs the guest and both phases; resolves with the figures. */
export async function benchVsock(
  opts: { singleMiB: number; eightMiB: number; pings: number },
): Promise<VsockBenchResult> {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-bench-vsock-" });
  const socket = `${dir}/vhost.sock`;
  const uds = `${dir}/vsock`;
  let vhostd: VhostdProcess | undefined;
  try {
    vhostd = await VhostdProcess.startKind(
      "vsock",
      ["--guest-cid", String(GUEST_CID), "--uds-path", uds],
      dir,
    );
    const eightPorts = Array.from({ length: EIGHT }, (_, i) => i + 1);
    const accepted = (port: number) =>
      acceptOne(`${uds}_${port}`).then((conn) => ({ conn, at: performance.now() }));
    const guestToHostSingle = accepted(TO_HOST);
    const guestToHostEight = eightPorts.map((i) => accepted(TO_HOST + i));
    const host = acceptOne(`${uds}_${READY_PORT}`).then(async (ready) => {
      ready.close();
      const go = acceptOne(`${uds}_${GO_PORT}`);
      const pid = vhostd!.pid;
      const h2g = [
        await withCpu(pid, () => hostToGuest(uds, [TO_GUEST], opts.singleMiB * MiB)),
        await withCpu(
          pid,
          () => hostToGuest(uds, eightPorts.map((i) => TO_GUEST + i), opts.eightMiB * MiB),
        ),
      ];
      const rtt = await pings(uds, opts.pings);
      (await go).close();
      // Guest to host: from the (first) connection to the last byte.
      const cpu0 = cpuMs(pid);
      const one = await guestToHostSingle;
      const single = await sink(one.conn);
      const t1 = performance.now();
      const cpu1 = cpuMs(pid);
      const eight = await Promise.all(guestToHostEight.map(async (c) => sink((await c).conn)));
      const t3 = performance.now();
      const cpu3 = cpuMs(pid);
      const used = (a?: number, b?: number) =>
        a === undefined || b === undefined ? undefined : b - a;
      const t2 = Math.min(...(await Promise.all(guestToHostEight)).map((c) => c.at));
      const t0 = one.at;
      return {
        h2g,
        rtt,
        g2h: [
          { streams: 1, bytes: single, ms: t1 - t0, vhostdCpuMs: used(cpu0, cpu1) },
          {
            streams: EIGHT,
            bytes: eight.reduce((a, b) => a + b, 0),
            ms: t3 - t2,
            vhostdCpuMs: used(cpu1, cpu3),
          },
        ],
      };
    });
    const result = await runGuest({
      script: guestScript(opts.singleMiB, opts.eightMiB),
      chardevs: [
        "-chardev",
        `socket,id=vhostd0,path=${socket}`,
        "-device",
        "vhost-user-vsock-pci,chardev=vhostd0",
      ],
      memoryMiB: 512,
      timeoutMs: 900_000,
    });
    if (result.exitCode !== 0) {
      throw new Error(`guest failed:\n${result.output.slice(-2000)}\n${result.qemuStderr}`);
    }
    const measured = await host;
    return {
      hostToGuest: measured.h2g,
      guestToHost: measured.g2h,
      roundTripsMs: measured.rtt,
      memcpyMiBps: memoryCopySpeed(),
    };
  } finally {
    await vhostd?.stop().catch(() => {});
    await vhostd?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}

function row(t: VsockThroughput): string {
  const cpu = t.vhostdCpuMs === undefined
    ? ""
    : `, vhostd CPU ${(100 * t.vhostdCpuMs / t.ms).toFixed(0)}% of one core`;
  return `${t.streams} stream(s): ${mibps(t).toFixed(1)} MiB/s (${t.bytes / MiB} MiB)${cpu}`;
}

/** The result as a table. */
export function formatVsockBench(r: VsockBenchResult): string {
  const rows = [
    "vsock through vhostd vsock, QEMU TCG guest with socat (MiB/s)",
    ...r.hostToGuest.map((t) => `  host -> guest, ${row(t)}`),
    ...r.guestToHost.map((t) => `  guest -> host, ${row(t)}`),
  ];
  const q = (p: number) =>
    r.roundTripsMs[Math.min(r.roundTripsMs.length - 1, Math.floor(p * r.roundTripsMs.length))];
  rows.push(
    `  round trip, 1 byte host -> guest -> host: median ${q(0.5).toFixed(3)} ms, ` +
      `p90 ${q(0.9).toFixed(3)} ms (${r.roundTripsMs.length} pings)`,
    `  limit: this machine's memory copy, ${
      r.memcpyMiBps.toFixed(0)
    } MiB/s (64 MiB Uint8Array.set)`,
  );
  return rows.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "single-mib": { type: "string", default: "128" },
      "eight-mib": { type: "string", default: "32" },
      pings: { type: "string", default: "500" },
    },
  });
  const result = await benchVsock({
    singleMiB: Number(values["single-mib"]),
    eightMiB: Number(values["eight-mib"]),
    pings: Number(values.pings),
  });
  console.log(formatVsockBench(result));
}
