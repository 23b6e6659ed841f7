/**
 * What every device command (`vhostd blk`, `vhostd fs`) shares: the
 * listening, device-state and logging options, their checks and help text,
 * and serving a device until the daemon stops.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { Daemon, ListenError } from "../backend/daemon.ts";
import type { VirtioDevice } from "../devices/device.ts";
import { isLogLevel, log, type LogLevel, setLogLevel } from "../log.ts";
import { STAGE_CHANNEL_ENV } from "../sandbox/stage_channel.ts";
import { NOTIFY_SOCKET_ENV, ServiceNotifier } from "../systemd/service_notifier.ts";
import {
  ACTIVATED_LISTENER_ENV,
  SocketActivationError,
  socketActivationRequested,
  takeActivatedSocket,
} from "../systemd/socket_activation.ts";
import { UsageError } from "./usage_error.ts";
import {
  METRICS_HELP,
  METRICS_OPTIONS,
  type MetricsAddress,
  metricsOption,
} from "../metrics/metrics_address.ts";
import { type MetricsEndpoint, startDeviceMetrics } from "../metrics/device_metrics_service.ts";

/** parseArgs specifications of the options every device command takes. */
export const DAEMON_OPTIONS = {
  "socket-path": { type: "string" },
  fd: { type: "string" },
  "log-level": { type: "string" },
  "dump-state": { type: "string" },
  "own-state-pipe": { type: "boolean", default: false },
  "print-capabilities": { type: "boolean", default: false },
  "poll-max-us": { type: "string" },
  help: { type: "boolean", short: "h", default: false },
  ...METRICS_OPTIONS,
} as const;

/** Help text of the device-state options. */
export const DEVICE_STATE_HELP = `Device state (live migration, vhostd state save/load):
  --dump-state DIR       keep a copy of every state sent or received in DIR
                         (<kind>-<UTC time>-<n>-<save|load>.vhostd-state, sortable)
  --own-state-pipe       answer SET_DEVICE_STATE_FD with a pipe of vhostd's own
                         (1 MiB buffer) instead of using the front-end's`;

/** Help text of the listening options, with the command's default socket path. */
export function listeningHelp(defaultSocketPath: string): string {
  return `Listening (one of):
  --socket-path PATH     Unix socket to create; default ./${defaultSocketPath}
  --fd N                 an already bound and listening Unix socket
  (neither)              under systemd socket activation (LISTEN_FDS=1, LISTEN_PID):
                         the socket at fd 3; with NOTIFY_SOCKET set, READY=1 is sent
                         once serving and STOPPING=1 at shutdown`;
}

/** Help text of the options every command ends with. */
export const OTHER_HELP = `Other:
${METRICS_HELP}
  --poll-max-us N        longest a queue Worker busy-polls before it sleeps, in µs
                         (0: never; default 128 while it waits for the driver,
                         32 while requests wait for the host)
  --log-level LEVEL      error, warn, info (default) or debug
  --print-capabilities   print the back-end's capabilities as JSON and exit
  -h, --help             show this help`;

type OptionSpecs = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses `args` strictly (no positionals, no unknown options) with
 * `options`; a mistake is a UsageError with parseArgs' first line.
 */
export function parseOptions<const O extends OptionSpecs>(args: string[], options: O) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.split("\n")[0] : String(e));
  }
}

/** The longest `--poll-max-us`: a second of spinning is a busy CPU, not polling. */
const MAX_POLL_US = 1_000_000;

/** A whole number option from `min` to `max`, or undefined when absent; UsageError otherwise. */
export function wholeNumberOption(
  name: string,
  text: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, got "${text}"`);
  }
  return Number(text);
}

/** The shared options, checked. */
export interface DaemonArgs {
  /** Socket to create (absent with `--fd`). */
  socketPath?: string;
  /** Listening socket to use. */
  listenFd?: number;
  /** Log level. */
  logLevel?: LogLevel;
  /** Where to keep copies of device states. */
  dumpStateDir?: string;
  /** Hand the front-end vhostd's own state pipe. */
  ownStatePipe: boolean;
  /** Print the capabilities and exit. */
  printCapabilities: boolean;
  /** Print the help and exit. */
  help: boolean;
  /** systemd's notification socket, connected (NOTIFY_SOCKET was set). */
  notifier?: ServiceNotifier;
  /**
   * This process is a sandboxed daemon started by vhostd's launcher: systemd
   * watches the launcher, so notifications carry no MAINPID of this one.
   */
  launchedBySandbox?: boolean;
  /** Where to serve Prometheus metrics (`--metrics`). */
  metrics?: MetricsAddress;
  /** Longest busy-poll window in µs (`--poll-max-us`); absent: the defaults. */
  pollMaxUs?: number;
}

/** The values parseArgs gives for {@linkcode DAEMON_OPTIONS}. */
export interface DaemonOptionValues {
  /** --socket-path */
  "socket-path"?: string;
  /** --fd */
  fd?: string;
  /** --log-level */
  "log-level"?: string;
  /** --dump-state */
  "dump-state"?: string;
  /** --own-state-pipe */
  "own-state-pipe"?: boolean;
  /** --print-capabilities */
  "print-capabilities"?: boolean;
  /** --help */
  help?: boolean;
  /** --metrics */
  metrics?: string;
  /** --poll-max-us */
  "poll-max-us"?: string;
}

/**
 * Checks the shared options; UsageError with a one-line message for a
 * mistake. Unless only help or capabilities are asked for, it also takes
 * what systemd passed: the socket-activated listener (fd 3, its variables
 * removed) and a connection to NOTIFY_SOCKET.
 */
export function daemonArgs(values: DaemonOptionValues, defaultSocketPath: string): DaemonArgs {
  if (values["socket-path"] !== undefined && values.fd !== undefined) {
    throw new UsageError("--socket-path and --fd cannot be used together");
  }
  let listenFd = wholeNumberOption("fd", values.fd, 0, 2 ** 31 - 1);
  const pollMaxUs = wholeNumberOption("poll-max-us", values["poll-max-us"], 0, MAX_POLL_US);
  const logLevel = values["log-level"];
  if (logLevel !== undefined && !isLogLevel(logLevel)) {
    throw new UsageError(`--log-level must be error, warn, info or debug, got "${logLevel}"`);
  }
  const dumpStateDir = values["dump-state"];
  if (dumpStateDir !== undefined && !isDirectory(dumpStateDir)) {
    throw new UsageError(`--dump-state: ${dumpStateDir} is not a directory`);
  }
  const printCapabilities = values["print-capabilities"] ?? false;
  const help = values.help ?? false;
  const launchedBySandbox = Deno.env.get(STAGE_CHANNEL_ENV) !== undefined;
  let socketActivated = false;
  let notifier: ServiceNotifier | undefined;
  if (!help && !printCapabilities) {
    const explicit = values["socket-path"] !== undefined || values.fd !== undefined;
    if (socketActivationRequested()) {
      if (explicit) {
        throw new UsageError(
          "--socket-path and --fd cannot be used under socket activation (LISTEN_FDS is set)",
        );
      }
      listenFd = takeActivated();
      Deno.env.set(ACTIVATED_LISTENER_ENV, "1");
      socketActivated = true;
    } else if (launchedBySandbox && Deno.env.get(ACTIVATED_LISTENER_ENV) === "1") {
      // The launcher took the activated socket and hands this daemon its copy.
      Deno.env.delete(ACTIVATED_LISTENER_ENV);
      socketActivated = true;
    }
    // Connected now: a sandboxed daemon no longer sees the socket's path once confined.
    notifier = ServiceNotifier.fromEnvironment(false);
  }
  return {
    socketPath: listenFd === undefined && !socketActivated
      ? values["socket-path"] ?? defaultSocketPath
      : undefined,
    listenFd,
    logLevel,
    dumpStateDir,
    ownStatePipe: values["own-state-pipe"] ?? false,
    printCapabilities,
    help,
    notifier,
    launchedBySandbox,
    metrics: metricsOption(values.metrics),
    pollMaxUs,
  };
}

function takeActivated(): number {
  try {
    return takeActivatedSocket().fd;
  } catch (e) {
    if (e instanceof SocketActivationError) throw new UsageError(e.message);
    throw e;
  }
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Applies `--log-level`, if given. */
export function applyLogLevel(args: DaemonArgs): void {
  if (args.logLevel) setLogLevel(args.logLevel);
}

/** How {@linkcode serveDevice} runs. */
export interface ServeOptions {
  /** Number of queue Workers (default: the daemon's choice). */
  workers?: number;
  /** QEMU `-device` value that attaches the device to chardev `vhostd0` (logged as a hint). */
  qemuDevice?: string;
  /** `--metrics` endpoint opened already (a sandboxed daemon opens it before its root changes). */
  metricsEndpoint?: MetricsEndpoint;
}

/**
 * Serves `device` (owned from now on) until the daemon stops; resolves
 * with the exit code. A socket that cannot be set up is a UsageError.
 */
export async function serveDevice(
  device: VirtioDevice,
  args: DaemonArgs,
  options: ServeOptions = {},
): Promise<number> {
  // The programs this daemon may start (none so far) must not notify in its name.
  Deno.env.delete(NOTIFY_SOCKET_ENV);
  const notifier = args.notifier;
  let daemon: Daemon;
  const metrics = await startDeviceMetrics(device, args.metrics, options.metricsEndpoint).catch(
    (e) => {
      device.close();
      throw e;
    },
  );
  try {
    daemon = await Daemon.start({
      socketPath: args.socketPath,
      listenFd: args.listenFd,
      device,
      workers: options.workers,
      backend: { dumpDir: args.dumpStateDir, ownPipe: args.ownStatePipe },
      onStopping: notifier && (() => notifier.stopping()),
      metrics: metrics?.metrics,
      pollMaxUs: args.pollMaxUs,
    });
  } catch (e) {
    await metrics?.endpoint.close();
    device.close();
    notifier?.close();
    if (e instanceof ListenError) throw new UsageError(e.message);
    throw e;
  }
  notifier?.ready(args.launchedBySandbox ? undefined : Deno.pid);
  if (args.socketPath && options.qemuDevice) {
    log.info(`attach it to QEMU with:\n${qemuCommandLine(args.socketPath, options.qemuDevice)}`);
  }
  try {
    return await daemon.finished();
  } finally {
    await metrics?.endpoint.close();
    notifier?.close();
  }
}

/** `path` as an absolute path (QEMU runs elsewhere). */
export function absolutePath(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** The QEMU options that attach the device `deviceArg` (on chardev `vhostd0`) served on `socketPath`. */
export function qemuCommandLine(socketPath: string, deviceArg: string): string {
  return [
    "qemu-system-x86_64 -machine q35,memory-backend=mem -m 1G",
    "  -object memory-backend-memfd,id=mem,size=1G,share=on",
    `  -chardev socket,id=vhostd0,path=${absolutePath(socketPath)}`,
    `  -device ${deviceArg}`,
    "  ...your kernel/disk options...",
  ].join(" \\\n");
}

/**
 * Answers `--help` and `--print-capabilities` (back-end program conventions);
 * returns the exit code when one was asked for, else undefined.
 */
export function answerInfoRequest(
  args: { help: boolean; printCapabilities: boolean },
  help: string,
  capabilities: () => Record<string, unknown>,
): number | undefined {
  if (args.help) {
    console.log(help);
    return 0;
  }
  if (args.printCapabilities) {
    console.log(JSON.stringify(capabilities()));
    return 0;
  }
  return undefined;
}
