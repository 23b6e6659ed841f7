/**
 * Device-state throughput through the real interface, on a RAM disk full of
 * random data:
 *
 * - in process: the TypeScript front-end asks a vhostd to SAVE
 *   (DEVICE_STATE) and drains the pipe into a file on tmpfs, then a second
 *   vhostd LOADs that file;
 * - through a pipe, as scripts use it: `vhostd state save -o -` writing into
 *   a pipe (a FIFO this benchmark drains with splice to /dev/null, so the
 *   reader costs nothing), `vhostd state load -i -` reading from one (fed
 *   from the saved file with splice), and the two in one shell pipeline
 *   `save -o - | load -i -`.
 *
 * The through-a-pipe figures are what the tools themselves report on
 * stderr: from SET_DEVICE_STATE_FD to CHECK_DEVICE_STATE, without the
 * process start. Prints MiB/s for each run and the median (issue 11's goal:
 * at least 2 GiB/s each way through a pipe); never fails on speed.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { type Peer, startPeer, stopPeer } from "./bench_peer.ts";
import {
  closeQuietly,
  O_CLOEXEC,
  O_CREAT,
  O_RDONLY,
  O_TRUNC,
  O_WRONLY,
  openFile,
} from "../ffi/mod.ts";
import { FdSink, FdSource } from "../src/migration/byte_stream.ts";
import { splice } from "../ffi/mod.ts";
import {
  BlkDriver,
  loadDeviceState,
  negotiateDeviceState,
  saveDeviceState,
  SharedGuestMemory,
  VhostUserClient,
} from "../src/frontend/mod.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const REFERENCE_READER = fileURLToPath(new URL("./splice_into_memfd.ts", import.meta.url));
const WRITE_CHUNK = 1 << 20;

/** Fills `bytes` with random data (getRandomValues takes at most 64 KiB at a time). */
export function fillRandom(bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length; off += 65536) {
    crypto.getRandomValues(bytes.subarray(off, Math.min(off + 65536, bytes.length)));
  }
}

export function startVhostd(dir: string, name: string, size: number): Promise<Peer> {
  const socket = `${dir}/${name}.sock`;
  const args = ["run", "-A", MAIN, "blk", "--ram", String(size), "--socket-path", socket];
  return startPeer(`vhostd ${name}`, Deno.execPath(), [...args, "--log-level", "warn"], socket);
}

/** Writes random data over the whole disk through the front-end (1 MiB requests). */
export function fillDisk(socket: string, size: number): void {
  const client = VhostUserClient.connect(socket);
  const memory = SharedGuestMemory.create({ size: 8 << 20 });
  try {
    const driver = BlkDriver.setup(client, memory, { numQueues: 1, queueSize: 64 });
    const buffer = memory.alloc(WRITE_CHUNK, 4096);
    const view = memory.guestMemory.slice(buffer, WRITE_CHUNK)!;
    for (let off = 0; off < size; off += WRITE_CHUNK) {
      fillRandom(view);
      const token = driver.submit(0, {
        op: "write",
        sector: off / 512,
        length: WRITE_CHUNK,
        buffer,
      });
      driver.notify(0);
      const done = driver.waitFor(0, token);
      if (done.status !== 0) throw new Error(`fill write failed: status ${done.status}`);
    }
    driver.close();
  } finally {
    memory.close();
    client.close();
  }
}

function timed<T>(f: () => T): [T, number] {
  const t0 = performance.now();
  const result = f();
  return [result, (performance.now() - t0) / 1000];
}

/** CPU time (user + system, every thread) a process has used so far, in ms. */
function cpuMs(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  const ticksPerSecond = 100; // USER_HZ on Linux
  return (Number(fields[11]) + Number(fields[12])) * (1000 / ticksPerSecond);
}

/** Runs `transfer` and adds the CPU time `peer` spent meanwhile to `into`. */
async function withCpu<T>(peer: Peer, into: number[], transfer: () => Promise<T> | T): Promise<T> {
  const before = cpuMs(peer.child.pid);
  const result = await transfer();
  into.push(cpuMs(peer.child.pid) - before);
  return result;
}

/** Rate in MiB/s of `bytes` moved in `seconds`. */
function rate(bytes: number, seconds: number): number {
  return bytes / 2 ** 20 / seconds;
}

/** In process: SAVE into a file on tmpfs, LOAD from it. Returns [save, load] in MiB/s. */
function inProcessRun(dir: string, file: string): [number, number] {
  const out = openFile(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600);
  const saver = VhostUserClient.connect(`${dir}/source.sock`, 60_000);
  let saved: { bytes: number };
  let saveSeconds: number;
  try {
    negotiateDeviceState(saver);
    [saved, saveSeconds] = timed(() => saveDeviceState(saver, new FdSink(out)));
  } finally {
    saver.close();
    closeQuietly(out);
  }
  const input = openFile(file, O_RDONLY | O_CLOEXEC);
  const loader = VhostUserClient.connect(`${dir}/target.sock`, 60_000);
  let loadSeconds: number;
  try {
    negotiateDeviceState(loader);
    [, loadSeconds] = timed(() => loadDeviceState(loader, new FdSource(input)));
  } finally {
    loader.close();
    closeQuietly(input);
  }
  return [rate(saved.bytes, saveSeconds), rate(saved.bytes, loadSeconds)];
}

/** `vhostd state ...` as the shell runs it. */
function vhostdCommand(args: string): string {
  return `"${Deno.execPath()}" run -A "${MAIN}" state ${args}`;
}

/** The rate a `state save` or `state load` reported on stderr ("... (2133 MiB/s) ..."). */
function reportedRate(stderr: string, verb: "saved" | "loaded"): number {
  const line = stderr.split("\n").find((l) => l.startsWith(`${verb} `));
  const match = line?.match(/ in (\d+) ms \((\d+) MiB\/s\)/);
  if (!match) throw new Error(`no "${verb}" line from vhostd state:\n${stderr}`);
  return Number(match[2]);
}

async function shell(script: string): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command("sh", {
    args: ["-c", script],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  return await finish(child);
}

async function finish(child: Deno.ChildProcess): Promise<{ code: number; stderr: string }> {
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.code !== 0) throw new Error(`vhostd state failed (${out.code}):\n${stderr}`);
  return { code: out.code, stderr };
}

/** Moves everything between two fds with splice until end of input. */
function spliceToEnd(from: number, to: number): void {
  while (splice(from, undefined, to, undefined, 1 << 20) > 0) {
    // keep going
  }
}

/** `state save -o -` into a FIFO that this process drains into /dev/null. */
async function saveIntoPipe(dir: string): Promise<number> {
  const fifo = `${dir}/save.fifo`;
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `exec ${vhostdCommand(`save --socket-path "${dir}/source.sock" -o -`)} > "${fifo}"`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const pipeFd = openFile(fifo, O_RDONLY | O_CLOEXEC); // meets the shell's open
  const devNull = openFile("/dev/null", O_WRONLY | O_CLOEXEC);
  try {
    spliceToEnd(pipeFd, devNull);
  } finally {
    closeQuietly(pipeFd);
    closeQuietly(devNull);
  }
  return reportedRate((await finish(child)).stderr, "saved");
}

/** `state load -i -` from a FIFO that this process fills from `file`. */
async function loadFromPipe(dir: string, file: string): Promise<number> {
  const fifo = `${dir}/load.fifo`;
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `exec ${vhostdCommand(`load --socket-path "${dir}/target.sock" -i -`)} < "${fifo}"`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  feedFifo(fifo, file);
  return reportedRate((await finish(child)).stderr, "loaded");
}

/** Opens `fifo` for writing (meeting its reader's open) and splices all of `file` into it. */
function feedFifo(fifo: string, file: string): void {
  const pipeFd = openFile(fifo, O_WRONLY | O_CLOEXEC);
  const input = openFile(file, O_RDONLY | O_CLOEXEC);
  try {
    spliceToEnd(input, pipeFd);
  } finally {
    closeQuietly(pipeFd);
    closeQuietly(input);
  }
}

/**
 * The reference for LOAD: the same stream through the same kind of FIFO,
 * spliced into a fresh memfd by `splice_into_memfd.ts` and nothing else.
 */
async function referenceFromPipe(dir: string, file: string): Promise<number> {
  const fifo = `${dir}/load.fifo`;
  const size = (await Deno.stat(file)).size;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", REFERENCE_READER, fifo, String(size)],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  feedFifo(fifo, file);
  const out = await child.output();
  if (!out.success) {
    throw new Error(`reference reader failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  const { bytes, ms } = JSON.parse(new TextDecoder().decode(out.stdout));
  return rate(bytes, ms / 1000);
}

/** `state save -o - | state load -i -`: both rates. */
async function pipeline(dir: string): Promise<[number, number]> {
  const { stderr } = await shell(
    `${vhostdCommand(`save --socket-path "${dir}/source.sock" -o -`)} | ` +
      vhostdCommand(`load --socket-path "${dir}/target.sock" -i -`),
  );
  return [reportedRate(stderr, "saved"), reportedRate(stderr, "loaded")];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function row(label: string, values: number[]): void {
  const runs = values.map((v) => v.toFixed(0)).join(", ");
  console.log(
    `  ${label.padEnd(40)} ${median(values).toFixed(0).padStart(6)} MiB/s  (runs: ${runs})`,
  );
}

/** Runs the state transfer benchmark on a RAM disk of `size` bytes, `runs` times each. */
export async function runStateBench(size: number, runs = 3): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vhostd-state-bench-" });
  const peers: Peer[] = [];
  try {
    peers.push(await startVhostd(dir, "source", size));
    peers.push(await startVhostd(dir, "target", size));
    fillDisk(`${dir}/source.sock`, size);
    const file = `${dir}/state`;
    for (const name of ["save.fifo", "load.fifo"]) {
      const made = await new Deno.Command("mkfifo", { args: [`${dir}/${name}`] }).output();
      if (!made.success) throw new Error(`mkfifo failed: ${new TextDecoder().decode(made.stderr)}`);
    }
    const results: Record<string, number[]> = {
      inSave: [],
      inLoad: [],
      pipeSave: [],
      pipeLoad: [],
      reference: [],
      bothSave: [],
      bothLoad: [],
    };
    const [source, target] = peers;
    const saveCpu: number[] = [];
    const loadCpu: number[] = [];
    for (let run = 0; run < runs; run++) {
      const [s, l] = inProcessRun(dir, file);
      results.inSave.push(s);
      results.inLoad.push(l);
      results.pipeSave.push(await withCpu(source, saveCpu, () => saveIntoPipe(dir)));
      results.pipeLoad.push(await withCpu(target, loadCpu, () => loadFromPipe(dir, file)));
      results.reference.push(await referenceFromPipe(dir, file));
      const [bs, bl] = await pipeline(dir);
      results.bothSave.push(bs);
      results.bothLoad.push(bl);
    }
    const mib = size / 2 ** 20;
    const stream = (await Deno.stat(file)).size / 2 ** 20;
    console.log(
      `\ndevice state: ${mib} MiB RAM disk of random data (stream ${stream.toFixed(1)} MiB), ` +
        `median of ${runs} runs, SET_DEVICE_STATE_FD to CHECK_DEVICE_STATE`,
    );
    row("SAVE in process, to a file on tmpfs", results.inSave);
    row("LOAD in process, from that file", results.inLoad);
    row("SAVE `state save -o -` into a pipe", results.pipeSave);
    row("LOAD `state load -i -` from a pipe", results.pipeLoad);
    row("reference: that stream spliced into a fresh memfd", results.reference);
    row("SAVE in `save -o - | load -i -`", results.bothSave);
    row("LOAD in `save -o - | load -i -`", results.bothLoad);
    // CPU time does not depend on what else the machine runs: it says what
    // one free core per back-end would allow.
    const perGib = (values: number[]) => median(values) / (size / 2 ** 30);
    console.log(
      `  back-end CPU per GiB through a pipe (all its threads, the kernel's io_uring workers ` +
        `included): SAVE ${perGib(saveCpu).toFixed(0)} ms, LOAD ${perGib(loadCpu).toFixed(0)} ms`,
    );
  } finally {
    for (const peer of peers) await stopPeer(peer);
    await Deno.remove(dir, { recursive: true });
  }
}
