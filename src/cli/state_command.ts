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
  O_CLOEXEC,
  O_CREAT,
  O_RDONLY,
  O_TRUNC,
  O_WRONLY,
  openFile,
  SyscallError,
} from "../../ffi/mod.ts";
import { FdSink, FdSource } from "../migration/byte_stream.ts";
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
import { Progress } from "./progress.ts";
import { deviceModule } from "../devices/device_list.ts";

/** Help text of `vhostd state`. */
export const STATE_HELP = `Usage:
  vhostd state save --socket-path PATH -o FILE   save a back-end's device state to FILE
  vhostd state load --socket-path PATH -i FILE   load FILE into a back-end
  vhostd state inspect FILE [--json]             show a state file

save and load connect to a back-end that has no VMM attached, as its
front-end, and use the vhost-user DEVICE_STATE interface. A load is
all-or-nothing: the back-end keeps what it had unless the whole file is
valid and fits its configuration (the back-end's log says why not).
Exit codes: 0 done, 1 transfer failed, 2 bad arguments or bad input.
`;

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

/** Checks a file completely before anything is sent: a bad file is the user's input error. */
function checkStateFile(path: string): string {
  const fd = openInput(path);
  try {
    const summary = inspectState(new FdSource(fd));
    if (!summary.header) throw new UsageError(`${path} is not a vhostd state file`);
    if (summary.error) throw new UsageError(`${path}: ${summary.error}`);
    return summary.header.kind;
  } finally {
    closeQuietly(fd);
  }
}

function transferError(e: unknown, what: string): never {
  if (e instanceof DeviceStateUnsupported) throw new UsageError(e.message);
  if (e instanceof BackendRefused) {
    throw new UsageError(`the back-end refused the ${what} (see its log for why): ${e.message}`);
  }
  throw e;
}

async function save(socketPath: string, output: string): Promise<number> {
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
  const progress = new Progress("saving");
  try {
    negotiateDeviceState(client);
    const result = saveDeviceState(client, new FdSink(fd), {
      onProgress: (b) => progress.update(b),
    });
    closeQuietly(fd);
    fd = -1;
    await Deno.rename(temp, output);
    progress.done();
    console.error(`saved ${(result.bytes / 2 ** 20).toFixed(1)} MiB of device state to ${output}`);
    return 0;
  } catch (e) {
    progress.done();
    await Deno.remove(temp).catch(() => {});
    transferError(e, "save");
  } finally {
    closeQuietly(fd);
    client.close();
  }
}

function load(socketPath: string, input: string): number {
  checkStateFile(input);
  const fd = openInput(input);
  const client = connect(socketPath);
  const progress = new Progress("loading");
  try {
    negotiateDeviceState(client);
    const result = loadDeviceState(client, new FdSource(fd), {
      onProgress: (b) => progress.update(b),
    });
    progress.done();
    console.error(
      `loaded ${(result.bytes / 2 ** 20).toFixed(1)} MiB of device state from ${input}`,
    );
    return 0;
  } catch (e) {
    progress.done();
    transferError(e, "state");
  } finally {
    closeQuietly(fd);
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
      allowPositionals: action === "inspect",
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
    default:
      throw new UsageError(`unknown state action "${action}" (save, load or inspect)`);
  }
}
