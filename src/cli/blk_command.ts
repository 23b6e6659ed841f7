/**
 * `vhostd blk`: serve a virtio-blk disk over vhost-user, following QEMU's
 * back-end program conventions (`--socket-path`, `--fd`,
 * `--print-capabilities`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BackingError, type BackingSpec, openBacking } from "../devices/blk/backing.ts";
import { BlkDevice, validateSerial } from "../devices/blk/blk_device.ts";
import { Daemon, ListenError } from "../backend/daemon.ts";
import { isLogLevel, log, setLogLevel } from "../log.ts";
import { MAX_QUEUE_SIZE } from "../virtqueue/layout.ts";
import { formatSize, parseSize } from "./size.ts";
import { UsageError } from "./usage_error.ts";

/** Defaults that make `deno task start` useful with no arguments. */
export const BLK_DEFAULTS = {
  socketPath: "vhostd-blk.sock",
  ramSize: 64 * 2 ** 20,
  numQueues: 1,
  queueSize: 256,
  serial: "vhostd",
} as const;

/** Help text of `vhostd blk`. */
export const BLK_HELP = `Usage: vhostd blk [OPTIONS]

Serve a virtio-blk disk to a vhost-user front-end (QEMU's vhost-user-blk-pci).

Backing (one of):
  --file PATH            raw disk image (its size is the disk size)
  --ram SIZE             RAM disk of SIZE bytes (K, M, G suffixes); default ${
  formatSize(BLK_DEFAULTS.ramSize)
}

Listening (one of):
  --socket-path PATH     Unix socket to create; default ./${BLK_DEFAULTS.socketPath}
  --fd N                 an already bound and listening Unix socket

Device:
  --read-only            refuse writes, discards and write-zeroes
  --num-queues N         request queues (1-64); default ${BLK_DEFAULTS.numQueues}
  --queue-size N         largest queue size, power of two up to 32768; default ${BLK_DEFAULTS.queueSize}
  --serial TEXT          GET_ID answer, up to 20 bytes; default "${BLK_DEFAULTS.serial}"
  --workers N            queue worker threads; default one per queue, at most the CPU count

Device state (live migration, vhostd state save/load):
  --dump-state DIR       keep a copy of every state sent or received in DIR
                         (<kind>-<UTC time>-<n>-<save|load>.vhostd-state, sortable)
  --own-state-pipe       answer SET_DEVICE_STATE_FD with a pipe of vhostd's own
                         (1 MiB buffer) instead of using the front-end's

Other:
  --log-level LEVEL      error, warn, info (default) or debug
  --print-capabilities   print the back-end's capabilities as JSON and exit
  -h, --help             show this help

Stop with SIGINT or SIGTERM: in-flight requests finish, the image is flushed,
the socket is removed.
`;

/** What `--print-capabilities` prints (vhost-user.rst, "Backend program conventions"). */
export function blkCapabilities(): Record<string, unknown> {
  return { type: "block", features: ["read-only", "blk-file"] };
}

/** Parsed `vhostd blk` options. */
export interface BlkArgs {
  backing: BackingSpec;
  socketPath?: string;
  listenFd?: number;
  numQueues: number;
  queueSize: number;
  serial: string;
  workers?: number;
  logLevel?: string;
  dumpStateDir?: string;
  ownStatePipe: boolean;
  printCapabilities: boolean;
  help: boolean;
}

function positiveInt(
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

/** Parses `vhostd blk` arguments; throws UsageError with a one-line message. */
export function parseBlkArgs(args: string[]): BlkArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        "socket-path": { type: "string" },
        fd: { type: "string" },
        file: { type: "string" },
        ram: { type: "string" },
        "read-only": { type: "boolean", default: false },
        "num-queues": { type: "string" },
        "queue-size": { type: "string" },
        serial: { type: "string" },
        workers: { type: "string" },
        "log-level": { type: "string" },
        "dump-state": { type: "string" },
        "own-state-pipe": { type: "boolean", default: false },
        "print-capabilities": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.split("\n")[0] : String(e));
  }
  const help = values.help ?? false;
  const printCapabilities = values["print-capabilities"] ?? false;
  if (values.file !== undefined && values.ram !== undefined) {
    throw new UsageError("--file and --ram cannot be used together");
  }
  if (values["socket-path"] !== undefined && values.fd !== undefined) {
    throw new UsageError("--socket-path and --fd cannot be used together");
  }
  const readOnly = values["read-only"] ?? false;
  let backing: BackingSpec;
  if (values.file !== undefined) {
    if (values.file === "") throw new UsageError("--file needs a path");
    backing = { kind: "file", path: values.file, readOnly };
  } else {
    const size = values.ram === undefined ? BLK_DEFAULTS.ramSize : parseSize(values.ram);
    if (size === undefined || size <= 0 || size % 512 !== 0) {
      throw new UsageError(
        `--ram needs a size that is a positive multiple of 512 bytes, got "${values.ram}"`,
      );
    }
    backing = { kind: "ram", size, readOnly };
  }
  const listenFd = positiveInt("fd", values.fd, 0, 2 ** 31 - 1);
  const queueSize = positiveInt("queue-size", values["queue-size"], 1, MAX_QUEUE_SIZE) ??
    BLK_DEFAULTS.queueSize;
  if ((queueSize & (queueSize - 1)) !== 0) {
    throw new UsageError(`--queue-size must be a power of two, got ${queueSize}`);
  }
  const serial = values.serial ?? BLK_DEFAULTS.serial;
  const serialError = validateSerial(serial);
  if (serialError) throw new UsageError(`--serial: ${serialError}`);
  if (values["log-level"] !== undefined && !isLogLevel(values["log-level"])) {
    throw new UsageError(
      `--log-level must be error, warn, info or debug, got "${values["log-level"]}"`,
    );
  }
  const dumpStateDir = values["dump-state"];
  if (dumpStateDir !== undefined) {
    let isDir = false;
    try {
      isDir = Deno.statSync(dumpStateDir).isDirectory;
    } catch {
      isDir = false;
    }
    if (!isDir) throw new UsageError(`--dump-state: ${dumpStateDir} is not a directory`);
  }
  return {
    dumpStateDir,
    ownStatePipe: values["own-state-pipe"] ?? false,
    backing,
    socketPath: listenFd === undefined
      ? values["socket-path"] ?? BLK_DEFAULTS.socketPath
      : undefined,
    listenFd,
    numQueues: positiveInt("num-queues", values["num-queues"], 1, 64) ?? BLK_DEFAULTS.numQueues,
    queueSize,
    serial,
    workers: positiveInt("workers", values.workers, 1, 64),
    logLevel: values["log-level"],
    printCapabilities,
    help,
  };
}

/** The QEMU options that attach a vhost-user-blk device served on `socketPath`. */
export function qemuCommandLine(socketPath: string, numQueues: number): string {
  const abs = socketPath.startsWith("/") ? socketPath : `${Deno.cwd()}/${socketPath}`;
  return [
    "qemu-system-x86_64 -machine q35,memory-backend=mem -m 1G",
    "  -object memory-backend-memfd,id=mem,size=1G,share=on",
    `  -chardev socket,id=vhostd0,path=${abs}`,
    `  -device vhost-user-blk-pci,chardev=vhostd0,num-queues=${numQueues}`,
    "  ...your kernel/disk options...",
  ].join(" \\\n");
}

/** Runs `vhostd blk`; resolves with the exit code. */
export async function runBlk(args: string[]): Promise<number> {
  const opts = parseBlkArgs(args);
  if (opts.help) {
    console.log(BLK_HELP);
    return 0;
  }
  if (opts.printCapabilities) {
    console.log(JSON.stringify(blkCapabilities()));
    return 0;
  }
  if (opts.logLevel && isLogLevel(opts.logLevel)) setLogLevel(opts.logLevel);
  let device: BlkDevice;
  try {
    device = new BlkDevice(openBacking(opts.backing), {
      numQueues: opts.numQueues,
      queueSize: opts.queueSize,
      serial: opts.serial,
    });
  } catch (e) {
    if (e instanceof BackingError) throw new UsageError(e.message);
    throw e;
  }
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({
      socketPath: opts.socketPath,
      listenFd: opts.listenFd,
      device,
      workers: opts.workers,
      backend: { dumpDir: opts.dumpStateDir, ownPipe: opts.ownStatePipe },
    });
  } catch (e) {
    device.close();
    if (e instanceof ListenError) throw new UsageError(e.message);
    throw e;
  }
  if (opts.socketPath) {
    log.info(`attach it to QEMU with:\n${qemuCommandLine(opts.socketPath, opts.numQueues)}`);
  }
  return await daemon.finished();
}
