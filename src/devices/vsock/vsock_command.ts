/**
 * `vhostd vsock`: serve a virtio-vsock device to QEMU's
 * vhost-user-vsock-pci, with the hybrid vsock convention of Firecracker and
 * rust-vmm's vhost-device-vsock for the host side.
 *
 * @module
 */

import {
  bindUnix,
  closeQuietly,
  listenSocket,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  socketUnix,
  SyscallError,
} from "../../../ffi/mod.ts";
import { log } from "../../log.ts";
import {
  absolutePath,
  answerInfoRequest,
  applyLogLevel,
  DAEMON_OPTIONS,
  type DaemonArgs,
  daemonArgs,
  DEVICE_STATE_HELP,
  listeningHelp,
  OTHER_HELP,
  parseOptions,
  serveDevice,
  wholeNumberOption,
} from "../../cli/daemon_options.ts";
import { UsageError } from "../../cli/usage_error.ts";
import { DEFAULT_BUF_ALLOC } from "./vsock_handler.ts";
import { VsockDevice } from "./vsock_device.ts";
import { MAX_GUEST_CID, MIN_GUEST_CID } from "./vsock_spec.ts";

/** Defaults of `vhostd vsock`. */
export const VSOCK_DEFAULTS = { socketPath: "vhostd-vsock.sock", queueSize: 256 } as const;

/** Help text of `vhostd vsock`. */
export const VSOCK_HELP = `Usage: vhostd vsock --guest-cid N --uds-path PATH [OPTIONS]

Serve a virtio-vsock device to a vhost-user front-end (QEMU's vhost-user-vsock-pci),
with the hybrid vsock convention of Firecracker and vhost-device-vsock:
  - a guest connecting to host port P (CID 2) reaches the Unix socket PATH_P,
    which a host program must be listening on;
  - a host program connects to PATH and writes "CONNECT P\\n" to reach guest
    port P; it reads "OK <host port>\\n" once the guest accepted, else the
    connection is closed.

Device:
  --guest-cid N          the guest's context id, ${MIN_GUEST_CID}..${MAX_GUEST_CID} (required)
  --uds-path PATH        the host side's main Unix socket (required; created,
                         a stale socket there is replaced, removed on exit)
  --queue-size N         largest queue size, power of two up to 32768; default ${VSOCK_DEFAULTS.queueSize}

${listeningHelp(VSOCK_DEFAULTS.socketPath)}

${DEVICE_STATE_HELP}

${OTHER_HELP}

Flow control: each connection advertises a ${DEFAULT_BUF_ALLOC / 1024} KiB receive buffer;
a host program that stops reading holds up only its own connection.
`;

/** What `--print-capabilities` prints. */
export function vsockCapabilities(): Record<string, unknown> {
  return { type: "vsock", features: [] };
}

/** Parsed `vhostd vsock` options. */
export interface VsockArgs extends DaemonArgs {
  guestCid: number;
  udsPath: string;
  queueSize: number;
}

/** Parses `vhostd vsock` arguments; throws UsageError with a one-line message. */
export function parseVsockArgs(args: string[]): VsockArgs {
  const values = parseOptions(args, {
    ...DAEMON_OPTIONS,
    "guest-cid": { type: "string" },
    "uds-path": { type: "string" },
    "queue-size": { type: "string" },
  });
  const common = daemonArgs(values, VSOCK_DEFAULTS.socketPath);
  const queueSize = wholeNumberOption("queue-size", values["queue-size"], 1, 32768) ??
    VSOCK_DEFAULTS.queueSize;
  if ((queueSize & (queueSize - 1)) !== 0) {
    throw new UsageError(`--queue-size must be a power of two, got ${queueSize}`);
  }
  const info = common.help || common.printCapabilities;
  const guestCid = wholeNumberOption(
    "guest-cid",
    values["guest-cid"],
    MIN_GUEST_CID,
    MAX_GUEST_CID,
  );
  const udsPath = values["uds-path"];
  if (!info && guestCid === undefined) throw new UsageError("--guest-cid is required");
  if (!info && (udsPath === undefined || udsPath === "")) {
    throw new UsageError("--uds-path is required");
  }
  return { ...common, guestCid: guestCid ?? 0, udsPath: udsPath ?? "", queueSize };
}

/**
 * Creates the main socket at `path` (non-blocking, listening). A socket
 * left there by an earlier run is replaced; anything else is a UsageError.
 */
export function createMainSocket(path: string): number {
  let stat: Deno.FileInfo | undefined;
  try {
    stat = Deno.lstatSync(path);
  } catch {
    stat = undefined;
  }
  if (stat) {
    if (!stat.isSocket) throw new UsageError(`--uds-path ${path} exists and is not a socket`);
    log.warn(`--uds-path ${path}: replacing the socket an earlier run left`);
    Deno.removeSync(path);
  }
  const fd = socketUnix(SOCK_STREAM, SOCK_CLOEXEC | SOCK_NONBLOCK);
  try {
    bindUnix(fd, path);
    listenSocket(fd, 128);
    return fd;
  } catch (e) {
    closeQuietly(fd);
    throw new UsageError(`--uds-path ${path}: ${e instanceof SyscallError ? e.message : e}`);
  }
}

/** Runs `vhostd vsock`; resolves with the exit code. */
export async function runVsock(args: string[]): Promise<number> {
  const opts = parseVsockArgs(args);
  const answered = answerInfoRequest(opts, VSOCK_HELP, vsockCapabilities);
  if (answered !== undefined) return answered;
  applyLogLevel(opts);
  const udsPath = absolutePath(opts.udsPath);
  const listenFd = createMainSocket(udsPath);
  const device = new VsockDevice({
    guestCid: opts.guestCid,
    udsPath,
    listenFd,
    queueSize: opts.queueSize,
  });
  return await serveDevice(device, opts, {
    qemuDevice: `vhost-user-vsock-pci,chardev=vhostd0`,
  });
}
