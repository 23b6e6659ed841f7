/**
 * Runs `vhostd blk` (or `vhostd fs`) as a separate process for integration tests: in its own
 * temporary directory, with its log in a file (a blocking front-end in the
 * test process must never leave a pipe undrained), listening on a socket in
 * that directory. Also counts the process's open fds through /proc.
 * Set `VHOSTD_TEST_LOG=1` to see the logs of passing tests too.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { servingProcess } from "./process_tree.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
/** How long a back-end may take to create its socket. */
const START_TIMEOUT_MS = 15_000;
/** How long a back-end may take to exit after a signal. */
const STOP_TIMEOUT_MS = 10_000;

/** Options of {@linkcode VhostdProcess.start}. */
export interface VhostdStartOptions {
  /** The device command, a kind of `src/devices/device_list.ts`. Default "blk". */
  command?: string;
  /** Extra arguments of the command (`--ram 1M`, `--file PATH`, `--shared-dir DIR`, ...). */
  args: string[];
  /** Directory for the socket and the log; default: a new temporary directory, removed on stop. */
  dir?: string;
  /** RLIMIT_NOFILE of the back-end (soft and hard, set by the shell's `ulimit -n`); default inherited. */
  fdLimit?: number;
  /** Supplementary groups of the back-end (set by `setpriv --groups`, needs root); default inherited. */
  groups?: readonly number[];
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isSocket(path: string): boolean {
  try {
    return Deno.lstatSync(path).isSocket === true;
  } catch {
    return false;
  }
}

/** A running `vhostd blk` or `vhostd fs` process. */
export class VhostdProcess {
  /** Unix socket the back-end listens on. */
  readonly socketPath: string;
  /** File holding the back-end's stdout and stderr. */
  readonly logPath: string;
  /** The working directory of the test (socket, log, images). */
  readonly dir: string;
  /** Process id of the back-end itself (the shell `exec`s it). */
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #ownsDir: boolean;
  #status: Deno.CommandStatus | undefined;

  private constructor(
    child: Deno.ChildProcess,
    dir: string,
    ownsDir: boolean,
    socketPath: string,
    logPath: string,
  ) {
    this.#child = child;
    this.dir = dir;
    this.#ownsDir = ownsDir;
    this.socketPath = socketPath;
    this.logPath = logPath;
    this.pid = child.pid;
    child.status.then((s) => this.#status = s);
  }

  /**
   * Starts `deno run -A main.ts COMMAND --socket-path DIR/vhostd.sock ARGS` and
   * resolves once the socket exists. Throws (with the log) when the process
   * exits first or the socket does not appear in time.
   */
  static async start(options: VhostdStartOptions): Promise<VhostdProcess> {
    const ownsDir = options.dir === undefined;
    const dir = options.dir ?? await Deno.makeTempDir({ prefix: "vhostd-it-" });
    const socketPath = `${dir}/vhostd.sock`;
    const logPath = `${dir}/vhostd.log`;
    // `exec` keeps the pid: signals and /proc/PID/fd reach vhostd itself.
    const child = new Deno.Command("sh", {
      args: [
        "-c",
        'log="$1"; limit="$2"; shift 2; if [ -n "$limit" ]; then ulimit -n "$limit" || exit 1; fi; ' +
        'exec "$@" >"$log" 2>&1',
        "sh",
        logPath,
        options.fdLimit === undefined ? "" : String(options.fdLimit),
        ...(options.groups === undefined
          ? []
          : ["setpriv", `--groups=${options.groups.join(",")}`, "--"]),
        Deno.execPath(),
        "run",
        "-A",
        MAIN,
        options.command ?? "blk",
        "--socket-path",
        socketPath,
        ...options.args,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const process = new VhostdProcess(child, dir, ownsDir, socketPath, logPath);
    const deadline = performance.now() + START_TIMEOUT_MS;
    while (!isSocket(socketPath)) {
      if (process.#status !== undefined || performance.now() > deadline) {
        const why = process.#status !== undefined
          ? `exited with code ${process.#status.code}`
          : `did not create ${socketPath} in ${START_TIMEOUT_MS} ms`;
        await process.stop("SIGKILL");
        throw new Error(`vhostd ${why}; its log:\n${process.log()}`);
      }
      await delay(10);
    }
    return process;
  }

  /** Exit status once the process has ended, else undefined. */
  get exitStatus(): Deno.CommandStatus | undefined {
    return this.#status;
  }

  /** The back-end's log so far. */
  log(): string {
    try {
      return Deno.readTextFileSync(this.logPath);
    } catch {
      return "(no log)";
    }
  }

  /**
   * The process that serves: vhostd itself, or, when it launched a sandboxed
   * daemon (`vhostd fs --sandbox namespace`), the end of its chain of only
   * children (launcher, unshare, daemon).
   */
  daemonPid(): number {
    return servingProcess(this.pid);
  }

  /** Names of the serving process's threads right now (each task's `comm` in /proc), sorted. */
  threadNames(): string[] {
    const pid = this.daemonPid();
    const out: string[] = [];
    for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        out.push(Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/comm`).trim());
      } catch {
        // The thread ended meanwhile.
      }
    }
    return out.sort();
  }

  /** Number of entries in /proc/PID/fd of the serving process right now. */
  fdCount(): number {
    let count = 0;
    for (const _ of Deno.readDirSync(`/proc/${this.daemonPid()}/fd`)) count++;
    return count;
  }

  /** The targets of the serving process's fds (for a readable failure message). */
  fdTargets(): string[] {
    const out: string[] = [];
    const pid = this.daemonPid();
    for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        out.push(`${entry.name} -> ${Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`)}`);
      } catch {
        out.push(`${entry.name} -> (gone)`);
      }
    }
    return out.sort((a, b) => parseInt(a) - parseInt(b));
  }

  /**
   * Waits until the fd count has stayed the same for `stableMs` (fds of a
   * finished session are closed asynchronously), at most `timeoutMs`, and
   * returns it.
   */
  async settledFdCount(stableMs = 150, timeoutMs = 5000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    // The socket exists before the queue Workers do: a count taken while they start is too low.
    while (!this.log().includes(" queue worker(s)") && performance.now() < deadline) {
      await delay(15);
    }
    let last = this.fdCount();
    let since = performance.now();
    while (performance.now() < deadline) {
      await delay(15);
      const now = this.fdCount();
      if (now !== last) {
        last = now;
        since = performance.now();
      } else if (performance.now() - since >= stableMs) {
        break;
      }
    }
    return last;
  }

  /**
   * Waits until the back-end holds at most `limit` fds (what it held before
   * the test's work: a leak never comes back down) and returns its count,
   * or the count after `timeoutMs`. Sessions and Workers close their fds
   * asynchronously, later on a busy machine: no fixed settling time.
   */
  async fdCountDownTo(limit: number, timeoutMs = 30_000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    let now = this.fdCount();
    while (now > limit && performance.now() < deadline) {
      await delay(20);
      now = this.fdCount();
    }
    return now;
  }

  /** Sends `signal` to the back-end. */
  signal(signal: Deno.Signal): void {
    if (this.#status === undefined) this.#child.kill(signal);
  }

  /** Resolves with the exit status, or undefined if it did not exit within `timeoutMs`. */
  async waitExit(timeoutMs: number = STOP_TIMEOUT_MS): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    });
    try {
      return await Promise.race([this.#child.status, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stops the back-end (SIGTERM by default, SIGKILL if it does not exit in
   * time), removes the temporary directory it owns, and returns its status.
   * Safe to call more than once.
   */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.signal(signal);
    let status = await this.waitExit();
    if (status === undefined) {
      this.signal("SIGKILL");
      status = await this.#child.status;
    }
    if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    return status;
  }

  /** Stops the process when a `using`-style scope ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Starts a back-end, runs `body` with it and always stops it. When `body`
 * fails, the back-end's log is appended to the error; when `body` succeeds,
 * the back-end must still be running and must exit with code 0 on SIGTERM.
 */
export async function withVhostd<T>(
  options: VhostdStartOptions,
  body: (vhostd: VhostdProcess) => Promise<T> | T,
): Promise<T> {
  const vhostd = await VhostdProcess.start(options);
  let result: T;
  try {
    result = await body(vhostd);
    if (vhostd.exitStatus !== undefined) {
      throw new Error(`vhostd exited during the test with code ${vhostd.exitStatus.code}`);
    }
  } catch (e) {
    const log = vhostd.log();
    await vhostd.stop("SIGKILL");
    if (e instanceof Error) e.message += `\n--- vhostd log ---\n${log}`;
    throw e;
  }
  const log = vhostd.log();
  const status = await vhostd.stop();
  // VHOSTD_TEST_LOG=1 shows every back-end log, not only those of failed tests.
  if (Deno.env.get("VHOSTD_TEST_LOG") === "1") console.error(log);
  if (status.code !== 0) {
    throw new Error(
      `vhostd exited with code ${status.code} on SIGTERM\n--- vhostd log ---\n${log}`,
    );
  }
  return result;
}
