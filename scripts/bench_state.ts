/**
 * Device-state throughput through the real interface: a vhostd serving a
 * RAM disk full of random data is asked to SAVE (DEVICE_STATE) into a pipe
 * that the TypeScript front-end drains into a file on tmpfs; a second vhostd
 * then LOADs that file through a pipe. Prints MiB/s each way (issue #3's
 * goal: at least 1 GiB/s each way).
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
import {
  BlkDriver,
  loadDeviceState,
  negotiateDeviceState,
  saveDeviceState,
  SharedGuestMemory,
  VhostUserClient,
} from "../src/frontend/mod.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const WRITE_CHUNK = 1 << 20;

/** Fills `bytes` with random data (getRandomValues takes at most 64 KiB at a time). */
export function fillRandom(bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length; off += 65536) {
    crypto.getRandomValues(bytes.subarray(off, Math.min(off + 65536, bytes.length)));
  }
}

function startVhostd(dir: string, name: string, size: number): Promise<Peer> {
  const socket = `${dir}/${name}.sock`;
  const args = ["run", "-A", MAIN, "blk", "--ram", String(size), "--socket-path", socket];
  return startPeer(`vhostd ${name}`, Deno.execPath(), [...args, "--log-level", "warn"], socket);
}

/** Writes random data over the whole disk through the front-end (1 MiB requests). */
function fillDisk(socket: string, size: number): void {
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

/** Runs the state transfer benchmark on a RAM disk of `size` bytes. */
export async function runStateBench(size: number): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "vhostd-state-bench-" });
  const peers: Peer[] = [];
  try {
    peers.push(await startVhostd(dir, "source", size));
    peers.push(await startVhostd(dir, "target", size));
    fillDisk(`${dir}/source.sock`, size);
    const file = `${dir}/state`;

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
    const mib = size / 2 ** 20;
    const streamMib = saved.bytes / 2 ** 20;
    console.log(
      `\ndevice state: ${mib} MiB RAM disk of random data through DEVICE_STATE and a pipe ` +
        `(front-end <-> file on tmpfs), stream ${streamMib.toFixed(1)} MiB`,
    );
    console.log(
      `  SAVE ${(mib / saveSeconds).toFixed(0)} MiB/s (${(saveSeconds * 1000).toFixed(0)} ms, ` +
        `SET_DEVICE_STATE_FD to CHECK_DEVICE_STATE)`,
    );
    console.log(
      `  LOAD ${(mib / loadSeconds).toFixed(0)} MiB/s (${(loadSeconds * 1000).toFixed(0)} ms, ` +
        `includes verification and applying)`,
    );
  } finally {
    for (const peer of peers) await stopPeer(peer);
    await Deno.remove(dir, { recursive: true });
  }
}
