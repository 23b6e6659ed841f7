/**
 * Builds, mounts and unmounts latency_fs (latency_fs.c beside this file): a
 * FUSE filesystem with one image file whose reads and writes each take about
 * `delayUs` (an SSD-like backing for the block benchmark), many of them in
 * parallel.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

const SETUP = fileURLToPath(new URL("../setup_latency_fs.sh", import.meta.url));
const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

/** A mounted latency_fs. */
export interface LatencyFs {
  /** Where it is mounted. */
  mountpoint: string;
  /** The image file inside the mount. */
  image: string;
  /** Delay of every read and write, in µs. */
  delayUs: number;
  /** The server process. */
  child: Deno.ChildProcess;
}

/**
 * Runs scripts/setup_latency_fs.sh (installs the Debian packages it needs
 * when missing, compiles when the source changed) and returns the binary's
 * path. Throws with the script's output when it fails.
 */
export async function buildLatencyFs(): Promise<string> {
  const out = await new Deno.Command("bash", { args: [SETUP], stdin: "null" }).output();
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`setup_latency_fs.sh failed: ${text.decode(out.stderr).trim()}`);
  }
  const lines = text.decode(out.stdout).trim().split("\n");
  return lines[lines.length - 1];
}

/** Reads `stream` to the end; resolves with what it held (for error messages). */
async function collect(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  return text;
}

/** Whether `path` is a mount point right now (/proc/self/mountinfo). */
export function isMounted(path: string): boolean {
  try {
    // Field 5 is the mount point, with spaces and the like octal-escaped.
    return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
      .some((line) => line.split(" ")[4] === path);
  } catch {
    return false;
  }
}

/** Options of {@linkcode mountLatencyFs}. */
export interface MountOptions {
  /** Hold every read and write until SIGUSR1 (SIGUSR2: and stop holding); for tests. */
  hold?: boolean;
  /** Receives each line the server prints after "ready" ("held N" in hold mode). */
  onLine?: (line: string) => void;
}

/**
 * Mounts latency_fs at `mountpoint` (an empty directory) serving the bytes
 * of `store` as `mountpoint/disk.img`, and resolves once it answers. The
 * server ends itself when this process goes away (its stdin is a pipe from
 * here), and its auto_unmount helper unmounts even after a SIGKILL. Throws
 * with the server's error output when it cannot mount.
 */
export async function mountLatencyFs(
  binary: string,
  store: string,
  mountpoint: string,
  delayUs: number,
  options: MountOptions = {},
): Promise<LatencyFs> {
  const args = ["--store", store, "--delay-us", String(delayUs), "--exit-with-stdin"];
  if (options.hold) args.push("--hold");
  const child = new Deno.Command(binary, {
    args: [...args, mountpoint],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = collect(child.stderr);
  const ready = (async () => {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!seen.includes("ready\n")) {
      const { value, done } = await reader.read();
      if (done) return false;
      seen += value;
    }
    const onLine = options.onLine;
    if (onLine === undefined) {
      // Nothing else is wanted from stdout: let the pipe go.
      await reader.cancel();
      return true;
    }
    let rest = seen.slice(seen.indexOf("ready\n") + "ready\n".length);
    (async () => {
      for (;;) {
        let newline;
        while ((newline = rest.indexOf("\n")) >= 0) {
          onLine(rest.slice(0, newline));
          rest = rest.slice(newline + 1);
        }
        const { value, done } = await reader.read();
        if (done) return;
        rest += value;
      }
    })().catch(() => {});
    return true;
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) =>
    timer = setTimeout(() => r("timeout"), READY_TIMEOUT_MS)
  );
  const outcome = await Promise.race([ready, child.status.then(() => false), timeout]);
  clearTimeout(timer);
  const fs: LatencyFs = { mountpoint, image: `${mountpoint}/disk.img`, delayUs, child };
  if (outcome !== true) {
    await unmountLatencyFs(fs);
    const why = (await stderr).trim() ||
      (outcome === "timeout" ? "no answer in 15 s" : "it exited");
    throw new Error(`latency_fs could not mount ${mountpoint}: ${why}`);
  }
  // From here on its error output is the user's to see.
  stderr.then((text) => text && console.error(text.trimEnd()));
  // The first access waits for FUSE's INIT exchange: afterwards it is serving.
  await Deno.stat(fs.image);
  return fs;
}

/**
 * Stops the server (SIGTERM: it answers what is pending and unmounts) and
 * makes sure the mount is gone, lazily detaching it if the server did not.
 * Safe to call twice and after the server died.
 */
export async function unmountLatencyFs(fs: LatencyFs): Promise<void> {
  try {
    fs.child.stdin.close();
  } catch {
    // already closed
  }
  try {
    fs.child.kill("SIGTERM");
  } catch {
    // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exited = await Promise.race([
    fs.child.status.then(() => true),
    new Promise<false>((r) => timer = setTimeout(() => r(false), STOP_TIMEOUT_MS)),
  ]);
  clearTimeout(timer);
  if (!exited) {
    try {
      fs.child.kill("SIGKILL");
    } catch {
      // gone meanwhile
    }
    await fs.child.status;
  }
  if (isMounted(fs.mountpoint)) {
    await new Deno.Command("fusermount3", { args: ["-u", "-z", fs.mountpoint], stderr: "null" })
      .output().catch(() => undefined);
  }
  if (isMounted(fs.mountpoint)) {
    await new Deno.Command("umount", { args: ["-l", fs.mountpoint], stderr: "null" }).output()
      .catch(() => undefined);
  }
}

/**
 * CPU time the process `pid` has used so far, all threads, in ns
 * (/proc/PID/task/TID/schedstat: exact, unlike the tick-sampled
 * /proc/PID/stat). NaN when it cannot be read.
 */
export function cpuNs(pid: number): number {
  let total = 0;
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(
          Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/schedstat`)
            .split(" ")[0],
        );
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    return NaN;
  }
  return total;
}
