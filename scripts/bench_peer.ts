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

/** Starts `command args` and resolves once `socket` exists. */
export async function startPeer(
  name: string,
  command: string,
  args: string[],
  socket: string,
): Promise<Peer> {
  const child = new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitForSocket(socket, child, name);
  return { name, socket, child };
}

/** SIGTERM and wait for the exit. */
export async function stopPeer(peer: Peer): Promise<void> {
  try {
    peer.child.kill("SIGTERM");
  } catch {
    // already gone
  }
  await peer.child.status;
}
