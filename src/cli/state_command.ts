/**
 * `vhostd state save|load|inspect`: device state as files. `save` and
 * `load` are front-ends: they connect to a back-end that has no VMM
 * attached, and move its state through DEVICE_STATE. `inspect` reads any
 * state file.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  closeQuietly,
  fstat,
  lseek,
  O_CLOEXEC,
  O_CREAT,
  O_RDONLY,
  O_TRUNC,
  O_WRONLY,
  openFile,
  pipeBytesQueued,
  POLLERR,
  pollFd,
  POLLOUT,
  S_IFMT,
  S_IFREG,
  SEEK_SET,
  setPipeSize,
  SyscallError,
} from "../../ffi/mod.ts";
import { FdSink, FdSource } from "../migration/byte_stream.ts";
import { StateStreamError } from "../migration/errors.ts";
import { formatSummary, inspectState, summaryToJson } from "../migration/inspect.ts";
import {
  BackendRefused,
  DeviceStateUnsupported,
  loadDeviceState,
  negotiateDeviceState,
  saveDeviceState,
  VhostUserClient,
} from "../frontend/mod.ts";
import { UsageError } from "./usage_error.ts";
import { runStateDiff } from "./state_diff.ts";
import { Progress } from "./progress.ts";
import { deviceModule } from "../devices/device_list.ts";

/** Help text of `vhostd state`. */
export const STATE_HELP = `Usage:
  vhostd state save --socket-path PATH -o FILE   save a back-end's device state to FILE
  vhostd state load --socket-path PATH -i FILE   load FILE into a back-end
  vhostd state inspect FILE [--json]             show a state file
  vhostd state diff A B [--json]                 show what differs between two state files

-o - writes the stream to stdout and -i - reads it from stdin, for pipes:
  vhostd state save --socket-path a.sock -o - | ssh host vhostd state load --socket-path b.sock -i -

save and load connect to a back-end that has no VMM attached, as its
front-end, and use the vhost-user DEVICE_STATE interface. A load is
all-or-nothing: the back-end keeps what it had unless the whole file is
valid and fits its configuration (the back-end's log says why not); a
truncated or corrupt stream on stdin is refused like a bad file.
Exit codes: 0 done, 1 transfer failed, 2 bad arguments or bad input;
diff: 0 identical, 1 different, 2 bad input.
`;

const STDIN_FD = 0;
const STDOUT_FD = 1;

/** How long to keep trying to reach the back-end. */
const CONNECT_TIMEOUT_MS = 2_000;
/** Reply limit: long enough for CHECK_DEVICE_STATE after a large transfer is processed. */
const REPLY_TIMEOUT_MS = 60_000;

function connect(socketPath: string): VhostUserClient {
  try {
    const client = VhostUserClient.connect(socketPath, CONNECT_TIMEOUT_MS);
    client.timeoutMs = REPLY_TIMEOUT_MS;
    return client;
  } catch (e) {
    throw new UsageError(`cannot connect to ${socketPath}: ${e instanceof Error ? e.message : e}`);
  }
}

function openInput(path: string): number {
  try {
    return openFile(path, O_RDONLY | O_CLOEXEC);
  } catch (e) {
    throw new UsageError(`cannot open ${path}: ${e instanceof SyscallError ? e.code : e}`);
  }
}

/**
 * Checks a regular file completely before anything is sent (a bad file is
 * the user's input error), then rewinds it for the transfer.
 */
function checkStateFile(fd: number, name: string): void {
  const summary = inspectState(new FdSource(fd));
  if (!summary.header) throw new UsageError(`${name} is not a vhostd state file`);
  if (summary.error) throw new UsageError(`${name}: ${summary.error}`);
  lseek(fd, 0, SEEK_SET);
}

function transferError(e: unknown, what: string): never {
  if (e instanceof DeviceStateUnsupported) throw new UsageError(e.message);
  if (e instanceof BackendRefused) {
    throw new UsageError(`the back-end refused the ${what} (see its log for why): ${e.message}`);
  }
  throw e;
}

/** `-o -` / `-i -`: standard output or input. */
const STANDARD_STREAM = "-";

/** "1024.0 MiB of device state in 480 ms (2133 MiB/s)"; the benchmark reads these figures. */
function describeTransfer(bytes: number, ms: number): string {
  const mib = bytes / 2 ** 20;
  const amount = bytes < 2 ** 20 ? `${bytes} bytes` : `${mib.toFixed(1)} MiB`;
  const rate = ms > 0 ? ` (${(mib / (ms / 1000)).toFixed(0)} MiB/s)` : "";
  return `${amount} of device state in ${ms.toFixed(0)} ms${rate}`;
}

/** Runs `transfer` with progress on stderr; returns its result and how long it took. */
function timedTransfer<T>(
  label: string,
  transfer: (onProgress: (bytes: number) => void) => T,
): [T, number] {
  const progress = new Progress(label);
  const started = performance.now();
  try {
    return [transfer((b) => progress.update(b)), performance.now() - started];
  } finally {
    progress.done();
  }
}

/** How often to look whether stdout's reader has taken the last bytes. */
const DRAIN_POLL_MS = 2;

/**
 * Waits until the pipe on stdout is empty, or its reader is gone. The
 * back-end spliced its RAM disk's pages into the stream, and so did this
 * tool into stdout: until they are read, the pipe refers to the disk's
 * pages, and a write to the disk (by a VMM attaching once this tool lets
 * the back-end go) would change bytes already "saved". Nothing for a file.
 */
async function drainStdout(): Promise<void> {
  for (;;) {
    let queued: number;
    try {
      queued = pipeBytesQueued(STDOUT_FD);
    } catch {
      return; // not a pipe
    }
    if (queued === 0 || (pollFd(STDOUT_FD, POLLOUT, 0) & POLLERR) !== 0) return;
    await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
  }
}

/** Saves to stdout: no temporary file; a failed save leaves the reader a truncated stream. */
async function saveToStdout(socketPath: string): Promise<number> {
  if (Deno.stdout.isTerminal()) {
    throw new UsageError("refusing to write a binary state stream to a terminal (-o -)");
  }
  const client = connect(socketPath);
  growPipe(STDOUT_FD);
  try {
    negotiateDeviceState(client);
    const [result, ms] = timedTransfer(
      "saving",
      (onProgress) => saveDeviceState(client, new FdSink(STDOUT_FD), { onProgress }),
    );
    // Only then let the back-end go (see drainStdout).
    await drainStdout();
    console.error(`saved ${describeTransfer(result.bytes, ms)} to stdout`);
    return 0;
  } catch (e) {
    if (e instanceof StateStreamError) {
      // Exit code 1: the transfer failed; whoever reads stdout got a truncated stream.
      throw new Error(`writing the state to stdout failed: ${e.message}`);
    }
    transferError(e, "save");
  } finally {
    client.close();
  }
}

async function save(socketPath: string, output: string): Promise<number> {
  if (output === STANDARD_STREAM) return await saveToStdout(socketPath);
  const client = connect(socketPath);
  // Write to a temporary name first: a failed save never leaves a truncated file behind.
  const temp = `${output}.partial-${Deno.pid}`;
  let fd: number;
  try {
    fd = openFile(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644);
  } catch (e) {
    client.close();
    throw new UsageError(`cannot create ${output}: ${e instanceof SyscallError ? e.code : e}`);
  }
  try {
    negotiateDeviceState(client);
    const [result, ms] = timedTransfer(
      "saving",
      (onProgress) => saveDeviceState(client, new FdSink(fd), { onProgress }),
    );
    closeQuietly(fd);
    fd = -1;
    await Deno.rename(temp, output);
    console.error(`saved ${describeTransfer(result.bytes, ms)} to ${output}`);
    return 0;
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    transferError(e, "save");
  } finally {
    closeQuietly(fd);
    client.close();
  }
}

/** Capacity asked for a pipe on stdin or stdout: as large as the state pipe's. */
const STREAM_PIPE_SIZE = 1 << 20;

/**
 * Grows a pipe on stdin or stdout to 1 MiB (a shell pipe has 64 KiB):
 * each splice then moves 16 times more. Not a pipe, or over the limit of
 * /proc/sys/fs/pipe-max-size: left as it is.
 */
function growPipe(fd: number): void {
  try {
    setPipeSize(fd, STREAM_PIPE_SIZE);
  } catch {
    // not a pipe, or not allowed: the default capacity works too
  }
}

/** True when `fd` is a regular file (it can be checked completely before it is sent). */
function isRegularFile(fd: number): boolean {
  return (fstat(fd).mode & S_IFMT) === S_IFREG;
}

/**
 * Loads FILE, or stdin for `-i -`. A regular file is checked completely
 * first; a stream (stdin, a FIFO) cannot be read twice, so there the
 * back-end's all-or-nothing LOAD is the check: it verifies the whole stream
 * before applying anything and keeps its state when the stream is
 * truncated or corrupt.
 */
function load(socketPath: string, input: string): number {
  const name = input === STANDARD_STREAM ? "stdin" : input;
  const fd = input === STANDARD_STREAM ? STDIN_FD : openInput(input);
  try {
    if (isRegularFile(fd)) checkStateFile(fd, name);
    else growPipe(fd);
    return loadFrom(socketPath, fd, name);
  } finally {
    if (fd !== STDIN_FD) closeQuietly(fd);
  }
}

function loadFrom(socketPath: string, fd: number, name: string): number {
  const client = connect(socketPath);
  try {
    negotiateDeviceState(client);
    const [result, ms] = timedTransfer(
      "loading",
      (onProgress) => loadDeviceState(client, new FdSource(fd), { onProgress }),
    );
    console.error(`loaded ${describeTransfer(result.bytes, ms)} from ${name}`);
    return 0;
  } catch (e) {
    transferError(e, "state");
  } finally {
    client.close();
  }
}

function inspect(path: string, json: boolean): number {
  const fd = openInput(path);
  try {
    const summary = inspectState(new FdSource(fd));
    if (!summary.header) {
      throw new UsageError(`${path} is not a vhostd state file: ${summary.error}`);
    }
    if (json) {
      console.log(JSON.stringify(summaryToJson(summary), null, 2));
    } else {
      console.log(formatSummary(summary));
      const meta = summary.metadata as { state?: unknown } | undefined;
      const lines = deviceModule(summary.header.kind)?.describeState?.(meta?.state) ?? [];
      for (const line of lines) console.log(line);
    }
    return summary.error ? 2 : 0;
  } finally {
    closeQuietly(fd);
  }
}

/** Runs `vhostd state ...`; resolves with the exit code. */
export async function runState(args: string[]): Promise<number> {
  const [action, ...rest] = args;
  if (action === undefined || action === "--help" || action === "-h") {
    console.log(STATE_HELP);
    return action === undefined ? 2 : 0;
  }
  let values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: action === "inspect" || action === "diff",
      options: {
        "socket-path": { type: "string" },
        output: { type: "string", short: "o" },
        input: { type: "string", short: "i" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.split("\n")[0] : String(e));
  }
  if (values.help) {
    console.log(STATE_HELP);
    return 0;
  }
  const socketPath = values["socket-path"];
  switch (action) {
    case "save":
      if (!socketPath || !values.output) {
        throw new UsageError("state save needs --socket-path and -o FILE");
      }
      return await save(socketPath, values.output);
    case "load":
      if (!socketPath || !values.input) {
        throw new UsageError("state load needs --socket-path and -i FILE");
      }
      return load(socketPath, values.input);
    case "inspect":
      if (positionals.length !== 1) throw new UsageError("state inspect needs exactly one FILE");
      return inspect(positionals[0], values.json ?? false);
    case "diff":
      if (positionals.length !== 2) throw new UsageError("state diff needs two files: A B");
      return runStateDiff(positionals[0], positionals[1], values.json ?? false);
    default:
      throw new UsageError(`unknown state action "${action}" (save, load, inspect or diff)`);
  }
}
