/**
 * Runs vhostd under Debian's `systemd-socket-activate` (the socket
 * activation of a `.socket` unit, without systemd running): it creates the
 * listening socket, waits for the first connection, then execs vhostd with
 * the socket at fd 3 and LISTEN_FDS/LISTEN_PID set. Also a notification
 * socket of the test's own (what systemd's NOTIFY_SOCKET is).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  bindUnix,
  closeQuietly,
  connectUnix,
  pollFd,
  POLLIN,
  receiveBytes,
  SOCK_DGRAM,
  socketUnix,
} from "../../ffi/mod.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
/** Debian's socket activation tool (package systemd). */
export const SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate";
/** How long a notification may take before the test gives up (vhostd starting on a busy machine). */
const NOTIFY_TIMEOUT_MS = 60_000;

/** Whether systemd-socket-activate is installed. */
export function socketActivateAvailable(): boolean {
  try {
    return Deno.statSync(SOCKET_ACTIVATE).isFile;
  } catch {
    return false;
  }
}

/** A datagram socket the test binds, passed to vhostd as NOTIFY_SOCKET. */
export class NotifyListener implements Disposable {
  readonly path: string;
  readonly #fd: number;

  constructor(path: string) {
    this.path = path;
    this.#fd = socketUnix(SOCK_DGRAM);
    bindUnix(this.#fd, path);
  }

  /** The next notification's `KEY=value` fields; throws when none comes. */
  next(): Map<string, string> {
    if (pollFd(this.#fd, POLLIN, NOTIFY_TIMEOUT_MS) === 0) {
      throw new Error(`no notification on ${this.path} in ${NOTIFY_TIMEOUT_MS} ms`);
    }
    const buf = new Uint8Array(4096);
    const text = new TextDecoder().decode(buf.subarray(0, receiveBytes(this.#fd, buf)));
    const lines = text.split("\n").filter((l) => l !== "");
    return new Map(lines.map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
  }

  [Symbol.dispose](): void {
    closeQuietly(this.#fd);
  }
}

/** vhostd started by systemd-socket-activate. */
export class ActivatedVhostd {
  /** The socket systemd-socket-activate listens on. */
  readonly socketPath: string;
  /** systemd-socket-activate's pid, which becomes vhostd's (it execs). */
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #output: Promise<string>;

  private constructor(child: Deno.ChildProcess, socketPath: string, output: Promise<string>) {
    this.#child = child;
    this.socketPath = socketPath;
    this.pid = child.pid;
    this.#output = output;
  }

  /**
   * Starts `systemd-socket-activate -l SOCKET vhostd ARGS` and resolves once
   * the socket listens (the tool says so on stderr), with `env` passed on.
   */
  static async start(
    socketPath: string,
    args: string[],
    env: Record<string, string>,
  ): Promise<ActivatedVhostd> {
    const setenv = Object.entries(env).flatMap(([k, v]) => ["-E", `${k}=${v}`]);
    const child = new Deno.Command(SOCKET_ACTIVATE, {
      args: ["-l", socketPath, ...setenv, Deno.execPath(), "run", "-A", MAIN, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    child.stdout.pipeTo(new WritableStream());
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!seen.includes("Listening on")) {
      const { value, done } = await reader.read();
      if (done) {
        await child.status;
        throw new Error(`systemd-socket-activate exited before listening:\n${seen}`);
      }
      seen += value;
    }
    const rest = (async () => {
      let all = seen;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return all;
        all += value;
      }
    })();
    return new ActivatedVhostd(child, socketPath, rest);
  }

  /** Connects and hangs up at once: the connection that makes the tool exec vhostd. */
  trigger(): void {
    const fd = socketUnix();
    try {
      connectUnix(fd, this.socketPath);
    } finally {
      closeQuietly(fd);
    }
  }

  /** Sends `signal` and resolves with the exit status and everything written to stderr. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<{ code: number; output: string }> {
    try {
      this.#child.kill(signal);
    } catch {
      // Already gone.
    }
    const status = await this.#child.status;
    return { code: status.code, output: await this.#output };
  }
}
