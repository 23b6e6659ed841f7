/**
 * Processes for live-migration end-to-end tests: vhostd back-ends whose logs
 * go to files, and QEMU guests started by the test itself (a source and a
 * destination) with their serial console captured, their stdin open for
 * typing into the guest, and a QMP connection.
 *
 * Every `dispose()` is safe on every path: it kills what still runs, waits
 * for it to exit and closes what it opened.
 *
 * @module
 */

import { QmpClient } from "./qmp.ts";

const QEMU_BINARY = "qemu-system-x86_64";
const MAIN_TS = new URL("../../main.ts", import.meta.url).pathname;
const POLL_MS = 50;

/**
 * A vhostd process (`blk` serving an image file, or `fs` sharing a directory),
 * or another back-end program, its stderr logged to a file.
 */
export class VhostdProcess {
  /** The Unix socket it listens on. */
  readonly socket: string;
  /** Where its stderr (the log) goes. */
  readonly logPath: string;
  readonly #child: Deno.ChildProcess;
  readonly #logWritten: Promise<void>;
  #exited = false;
  readonly #status: Promise<Deno.CommandStatus>;

  private constructor(
    socket: string,
    logPath: string,
    child: Deno.ChildProcess,
    logWritten: Promise<void>,
  ) {
    this.socket = socket;
    this.logPath = logPath;
    this.#child = child;
    this.#logWritten = logWritten;
    this.#status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
  }

  /** Process id of the program started (for vhostd fs in a sandbox: its launcher). */
  get pid(): number {
    return this.#child.pid;
  }

  /**
   * Starts `vhostd blk --file IMAGE --socket-path SOCKET --log-level debug
   * EXTRA_ARGS` and waits until the socket exists.
   *
   * @throws {Error} when vhostd exits or creates no socket within `timeoutMs`
   */
  static start(
    opts: {
      image: string;
      socket: string;
      logPath: string;
      extraArgs?: string[];
      timeoutMs?: number;
    },
  ): Promise<VhostdProcess> {
    return VhostdProcess.startCommand({
      command: Deno.execPath(),
      args: [
        "run",
        "-A",
        MAIN_TS,
        "blk",
        "--file",
        opts.image,
        "--socket-path",
        opts.socket,
        "--log-level",
        "debug",
        ...(opts.extraArgs ?? []),
      ],
      socket: opts.socket,
      logPath: opts.logPath,
      timeoutMs: opts.timeoutMs,
    });
  }

  /**
   * Starts `vhostd fs --shared-dir DIR --socket-path SOCKET --log-level LEVEL
   * EXTRA_ARGS` (e.g. `--read-only`, `--migration-on-error guest-error`;
   * LEVEL defaults to debug) and waits until the socket exists.
   *
   * @throws {Error} when vhostd exits or creates no socket within `timeoutMs`
   */
  static startFs(
    opts: {
      sharedDir: string;
      socket: string;
      logPath: string;
      extraArgs?: string[];
      logLevel?: "error" | "warn" | "info" | "debug";
      timeoutMs?: number;
      /** RLIMIT_NOFILE of vhostd (soft and hard, through the shell's `ulimit -n`). */
      fdLimit?: number;
    },
  ): Promise<VhostdProcess> {
    // `exec` keeps the pid: signals reach vhostd itself.
    const limited = opts.fdLimit === undefined
      ? []
      : ["-c", 'ulimit -n "$0" && exec "$@"', String(opts.fdLimit), Deno.execPath()];
    return VhostdProcess.startCommand({
      command: limited.length === 0 ? Deno.execPath() : "sh",
      args: [
        ...limited,
        "run",
        "-A",
        MAIN_TS,
        "fs",
        "--shared-dir",
        opts.sharedDir,
        "--socket-path",
        opts.socket,
        "--log-level",
        opts.logLevel ?? "debug",
        ...(opts.extraArgs ?? []),
      ],
      socket: opts.socket,
      logPath: opts.logPath,
      timeoutMs: opts.timeoutMs,
    });
  }

  /**
   * Starts any back-end program (`command ARGS`, e.g. another vhost-user
   * daemon to compare with) that listens on `socket`, its stderr logged to
   * `logPath`, and waits until the socket exists.
   *
   * @throws {Error} when the program exits or creates no socket within `timeoutMs`
   */
  /**
   * Starts `vhostd KIND ARGS --socket-path DIR/vhost.sock` (log in
   * DIR/vhostd.log) and waits until the socket exists.
   */
  static startKind(kind: string, args: string[], dir: string): Promise<VhostdProcess> {
    const socket = `${dir}/vhost.sock`;
    return VhostdProcess.startCommand({
      command: Deno.execPath(),
      args: ["run", "-A", MAIN_TS, kind, ...args, "--socket-path", socket],
      socket,
      logPath: `${dir}/vhostd.log`,
    });
  }

  static async startCommand(
    opts: { command: string; args: string[]; socket: string; logPath: string; timeoutMs?: number },
  ): Promise<VhostdProcess> {
    const logFile = await Deno.open(opts.logPath, { write: true, create: true, truncate: true });
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(opts.command, {
        args: opts.args,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      logFile.close();
      throw error;
    }
    const logWritten = copyToFile(child.stderr, logFile);
    const vhostd = new VhostdProcess(opts.socket, opts.logPath, child, logWritten);
    try {
      await vhostd.#waitForSocket(opts.timeoutMs ?? 15_000);
    } catch (error) {
      await vhostd.dispose();
      throw error;
    }
    return vhostd;
  }

  /** Resolves with the exit status once the process has ended. */
  get status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /** Sends `signal` if the process still runs. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch {
      // it exited between the check and the kill
    }
  }

  /** SIGTERM (vhostd's clean shutdown) and waits for the exit status and the last log line. */
  async stop(): Promise<Deno.CommandStatus> {
    this.kill("SIGTERM");
    const status = await this.#status;
    await this.#logWritten;
    return status;
  }

  /** The log written so far. */
  async log(): Promise<string> {
    try {
      return await Deno.readTextFile(this.logPath);
    } catch (error) {
      return `(no log: ${error})`;
    }
  }

  /**
   * Waits until the log matches `pattern` (the log reaches the file a little
   * after vhostd writes it).
   *
   * @throws {Error} with the log when it does not match within `timeoutMs`
   */
  async waitForLog(pattern: RegExp, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const text = await this.log();
      if (pattern.test(text)) return text;
      if (Date.now() > deadline) {
        throw new Error(`${this.logPath} did not match ${pattern} in ${timeoutMs} ms:\n${text}`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  /** Kills the process if it still runs and waits for it and its log. */
  async dispose(): Promise<void> {
    this.kill("SIGKILL");
    await this.#status;
    await this.#logWritten;
  }

  async #waitForSocket(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.#exited) {
        throw new Error(`vhostd exited before listening:\n${await this.log()}`);
      }
      try {
        if (Deno.statSync(this.socket).isSocket) return;
      } catch {
        // not there yet
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    throw new Error(`vhostd did not create ${this.socket} in ${timeoutMs} ms`);
  }
}

/**
 * Copies `stream` into `file` chunk by chunk (so the file is readable while
 * the process runs; `pipeTo(file.writable)` showed nothing until the end)
 * and closes the file when the stream ends.
 */
async function copyToFile(stream: ReadableStream<Uint8Array>, file: Deno.FsFile): Promise<void> {
  try {
    for await (const chunk of stream) {
      let written = 0;
      while (written < chunk.length) written += await file.write(chunk.subarray(written));
    }
  } catch {
    // The process went away mid-write or the disk is full: keep what was written.
  } finally {
    file.close();
  }
}

/** A QEMU process with a captured serial console (stdout), writable stdin and QMP. */
export class QemuGuest {
  /** Name used in error messages, e.g. `source`. */
  readonly name: string;
  /** The QMP session, in command mode. */
  readonly qmp: QmpClient;
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #serialDone: Promise<void>;
  readonly #stderr: Promise<string>;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #serialListeners = new Set<() => void>();
  #serial = "";
  #serialComplete = false;
  #pendingCr = "";
  #exited = false;

  private constructor(
    name: string,
    child: Deno.ChildProcess,
    qmp: QmpClient,
    serialDone: Promise<void>,
    stderr: Promise<string>,
    stdin: WritableStreamDefaultWriter<Uint8Array>,
  ) {
    this.name = name;
    this.#child = child;
    this.qmp = qmp;
    this.#serialDone = serialDone.then(() => {
      this.#serialComplete = true;
      this.#notify();
    });
    this.#stderr = stderr;
    this.#stdin = stdin;
    this.#status = child.status.then((status) => {
      this.#exited = true;
      this.#notify();
      return status;
    });
  }

  /**
   * Starts `qemu-system-x86_64 ARGS -qmp unix:QMP_SOCKET,server=on,wait=off`
   * (ARGS must put the serial console on stdio) and connects to QMP.
   *
   * @throws {Error} when QEMU cannot be started or QMP does not answer
   */
  static async start(name: string, args: string[], qmpSocket: string): Promise<QemuGuest> {
    const child = new Deno.Command(QEMU_BINARY, {
      args: [...args, "-qmp", `unix:${qmpSocket},server=on,wait=off`],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text().catch((error) => `(stderr lost: ${error})`);
    const stdin = child.stdin.getWriter();
    // Serial output is read from the start; it goes to the guest object once that exists.
    const sink: { guest?: QemuGuest; early: string[] } = { early: [] };
    const decoder = new TextDecoder();
    const serialDone = (async () => {
      try {
        for await (const chunk of child.stdout) {
          const text = decoder.decode(chunk, { stream: true });
          if (sink.guest === undefined) sink.early.push(text);
          else sink.guest.#appendSerial(text);
        }
      } catch {
        // QEMU went away mid-read: what was read is kept.
      }
    })();
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(qmpSocket, 15_000);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
      await serialDone;
      await stdin.close().catch(() => {});
      throw new Error(`${name} QEMU: ${error}\n${await stderr}`);
    }
    const guest = new QemuGuest(name, child, qmp, serialDone, stderr, stdin);
    guest.#appendSerial(sink.early.join(""));
    sink.guest = guest;
    return guest;
  }

  /**
   * Serial console output so far, CRLF turned into LF. The last line may be
   * incomplete (QEMU passes the UART on a byte or a few at a time): read
   * values from {@linkcode serialLines} instead.
   */
  get serial(): string {
    return this.#serial;
  }

  /**
   * The complete lines of the serial console so far (everything up to and
   * including the last LF). A line still arriving is left out, so that
   * `REC 4` is never read from a `REC 49` whose `9` is still in the pipe.
   * Once QEMU has exited and its output is all read, the whole console.
   */
  get serialLines(): string {
    if (this.#serialComplete) return this.#serial;
    return this.#serial.slice(0, this.#serial.lastIndexOf("\n") + 1);
  }

  /** True once QEMU has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /**
   * Resolves once QEMU's console output has been read to its end (some time
   * after QEMU exits); {@linkcode serialLines} is then the whole console.
   */
  get serialClosed(): Promise<void> {
    return this.#serialDone;
  }

  /** QEMU's exit status. */
  get status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /** What QEMU wrote to stderr (complete once it has exited). */
  get stderr(): Promise<string> {
    return this.#stderr;
  }

  /**
   * Waits until the complete lines of the serial output (see
   * {@linkcode serialLines}), from offset `from` on, match `pattern`. A
   * pattern such as `/^VERIFY-OK (\d+)$/m` therefore sees whole lines only:
   * `$` never matches at the end of a line that is still arriving.
   *
   * @throws {Error} with the end of the console log when QEMU exits first or `timeoutMs` runs out
   */
  async waitForSerial(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const match = this.serialLines.slice(from).match(pattern);
      if (match !== null) return match;
      if (this.#exited) {
        await this.#serialDone;
        const last = this.#serial.slice(from).match(pattern);
        if (last !== null) return last;
        throw new Error(
          `${this.name} QEMU exited before ${pattern} appeared on its console:\n` +
            `${this.#serial.slice(-3000)}\n${await this.#stderr}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `${pattern} did not appear on the ${this.name} console in ${timeoutMs} ms:\n` +
            this.#serial.slice(-3000),
        );
      }
      await new Promise<void>((resolve) => {
        const listener = () => {
          clearTimeout(timer);
          this.#serialListeners.delete(listener);
          resolve();
        };
        const timer = setTimeout(listener, left);
        this.#serialListeners.add(listener);
      });
    }
  }

  /** Types `text` on the guest's serial console (QEMU's stdin). */
  async type(text: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(text));
  }

  /** Sends `signal` to QEMU if it still runs. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch {
      // exited between the check and the kill
    }
  }

  /** Waits up to `timeoutMs` for QEMU to exit on its own; returns null if it did not. */
  async waitForExit(timeoutMs: number): Promise<Deno.CommandStatus | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) =>
      timer = setTimeout(() => resolve(null), timeoutMs)
    );
    try {
      return await Promise.race([this.#status, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills QEMU if it still runs, waits for it, closes QMP and its pipes. */
  async dispose(): Promise<void> {
    this.kill("SIGKILL");
    await this.#status;
    this.qmp.close();
    await this.qmp.closed;
    await this.#serialDone;
    await this.#stdin.close().catch(() => {});
    await this.#stderr;
  }

  #appendSerial(chunk: string): void {
    // A CRLF pair may be split across chunks: hold a trailing CR back.
    let text = this.#pendingCr + chunk;
    this.#pendingCr = text.endsWith("\r") ? "\r" : "";
    if (this.#pendingCr !== "") text = text.slice(0, -1);
    if (text === "") return;
    this.#serial += text.replaceAll("\r\n", "\n");
    this.#notify();
  }

  #notify(): void {
    for (const listener of [...this.#serialListeners]) listener();
  }
}

/** The part of `query-migrate`'s answer the migration tests read. */
export interface MigrationStatus {
  status: string;
  "error-desc"?: string;
  "total-time"?: number;
  downtime?: number;
  ram?: { transferred: number; total: number; remaining: number; "dirty-sync-count": number };
}

/** Migration states after which nothing more happens. */
export const MIGRATION_ENDED = ["completed", "failed", "cancelled"];

/**
 * Turns on QEMU's migration events (`MIGRATION` at every status change,
 * `MIGRATION_PASS` at every dirty-bitmap sync) on `guest`, so that a test
 * waits for them instead of polling `query-migrate` against a migration
 * that moves on meanwhile. Call before `migrate` / `migrate-incoming`.
 */
export async function enableMigrationEvents(guest: QemuGuest): Promise<void> {
  await guest.qmp.execute("migrate-set-capabilities", {
    capabilities: [{ capability: "events", state: true }],
  });
}

/**
 * Waits for the `MIGRATION` event (see {@linkcode enableMigrationEvents})
 * whose status is one of `statuses`, including one that came before the
 * call, and returns `query-migrate` after it.
 *
 * @throws {Error} with the migration's status when none comes in `timeoutMs`
 */
export async function waitForMigrationStatus(
  guest: QemuGuest,
  statuses: readonly string[],
  timeoutMs: number,
): Promise<MigrationStatus> {
  try {
    await guest.qmp.waitForEvent(
      "MIGRATION",
      (event) => statuses.includes(String(event.data?.status)),
      timeoutMs,
    );
  } catch (error) {
    const now = await guest.qmp.execute<MigrationStatus>("query-migrate").catch(() => undefined);
    throw new Error(
      `${guest.name}: migration did not reach ${statuses.join("/")} in ${timeoutMs} ms ` +
        `(${error}); query-migrate: ${JSON.stringify(now)}`,
    );
  }
  return await guest.qmp.execute<MigrationStatus>("query-migrate");
}

/**
 * Waits until QEMU's run state is `want` (`running`, `postmigrate`, ...).
 * It polls `query-status`, which is safe here: every state waited for is
 * one QEMU stays in until told otherwise.
 *
 * @throws {Error} with the last state when it is not reached in `timeoutMs`
 */
export async function waitForRunState(
  guest: QemuGuest,
  want: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (true) {
    last = (await guest.qmp.execute<{ status: string }>("query-status")).status;
    if (last === want) return;
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`${guest.name} QEMU is "${last}", expected "${want}" within ${timeoutMs} ms`);
}
