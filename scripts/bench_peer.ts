/**
 * Back-end processes for the benchmarks: start one, wait until it listens
 * on its socket, stop it.
 *
 * @module
 */

/** A running back-end. */
export interface Peer {
  /** Name for messages ("vhostd", "qemu-storage-daemon"). */
  name: string;
  /** Socket it listens on. */
  socket: string;
  /** The process. */
  child: Deno.ChildProcess;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitForSocket(path: string, child: Deno.ChildProcess, name: string): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${name} exited before listening`);
    try {
      if (Deno.lstatSync(path).isSocket) return;
    } catch {
      // not yet
    }
    await delay(20);
  }
  child.kill("SIGKILL");
  throw new Error(`${name} did not listen on ${path}`);
}

/** util-linux setpriv, when installed (it is on Debian: util-linux is essential). */
const SETPRIV = (() => {
  try {
    return Deno.statSync("/usr/bin/setpriv").isFile ? "/usr/bin/setpriv" : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Starts `command args` and resolves once `socket` exists. The back-end
 * gets SIGTERM when this process dies, even by SIGKILL (setpriv
 * --pdeathsig, which survives the exec), so no daemon outlives a benchmark.
 * Deno spawns from its main thread, whose end is the process's end.
 */
export async function startPeer(
  name: string,
  command: string,
  args: string[],
  socket: string,
): Promise<Peer> {
  const wrapped = SETPRIV === undefined
    ? [command, ...args]
    : [SETPRIV, "--pdeathsig", "TERM", "--", command, ...args];
  const child = new Deno.Command(wrapped[0], {
    args: wrapped.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitForSocket(socket, child, name);
  return { name, socket, child };
}

/** How long a back-end may take to exit after SIGTERM before it gets SIGKILL. */
const STOP_TIMEOUT_MS = 10_000;

/**
 * SIGTERM and wait for the exit; SIGKILL if it takes longer than 10 s (a
 * back-end stuck on a vanished file must not hang the benchmark's clean-up).
 */
export async function stopPeer(peer: Peer): Promise<void> {
  try {
    peer.child.kill("SIGTERM");
  } catch {
    // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exited = await Promise.race([
    peer.child.status.then(() => true),
    new Promise<false>((r) => timer = setTimeout(() => r(false), STOP_TIMEOUT_MS)),
  ]);
  clearTimeout(timer);
  if (exited) return;
  console.error(`${peer.name} did not exit ${STOP_TIMEOUT_MS / 1000} s after SIGTERM: SIGKILL`);
  try {
    peer.child.kill("SIGKILL");
  } catch {
    // gone meanwhile
  }
  await peer.child.status;
}

/** How vhostd and qemu-storage-daemon serve an image in one benchmark cell. */
export interface BlkPeerConfig {
  /** Raw image to serve. */
  image: string;
  /** Unix socket to listen on. */
  socket: string;
  /** Request queues. */
  queues: number;
  /**
   * "default": each back-end's default caching (vhostd's own, qsd
   * cache.direct=off); "none": O_DIRECT (vhostd --cache none, qsd
   * cache.direct=on).
   */
  cache: "default" | "none";
}

/** Options `vhostd blk --help` lists, for passing through only what exists. */
export async function vhostdBlkOptions(main: string): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "blk", "--help"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return new Set([...text.matchAll(/^\s+(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]));
}

/**
 * Starts `vhostd blk` (main.ts under Deno) for `config`; `aio` and `workers`,
 * when given, are passed as --aio and --workers, `extra` (`--metrics ADDR`)
 * as it is. The caller checks that the options exist.
 */
export function startVhostdBlk(
  main: string,
  config: BlkPeerConfig,
  aio?: string,
  workers?: number,
  extra: string[] = [],
): Promise<Peer> {
  const args = ["run", "-A", main, "blk", "--file", config.image, "--socket-path", config.socket];
  args.push("--num-queues", String(config.queues), "--log-level", "warn");
  if (config.cache === "none") args.push("--cache", "none");
  if (aio !== undefined) args.push("--aio", aio);
  if (workers !== undefined) args.push("--workers", String(workers));
  args.push(...extra);
  return startPeer("vhostd", Deno.execPath(), args, config.socket);
}

/** Starts qemu-storage-daemon exporting `config.image` as vhost-user-blk with I/O engine `aio`. */
export function startQsdBlk(config: BlkPeerConfig, aio: string): Promise<Peer> {
  const direct = config.cache === "none" ? "on" : "off";
  return startPeer("qemu-storage-daemon", "qemu-storage-daemon", [
    "--blockdev",
    `driver=file,node-name=file0,filename=${config.image},cache.direct=${direct},aio=${aio}`,
    "--export",
    `type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,addr.path=${config.socket},` +
    `writable=on,num-queues=${config.queues}`,
  ], config.socket);
}
