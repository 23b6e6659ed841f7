/**
 * `vhostd blk`: serve a virtio-blk disk over vhost-user, following QEMU's
 * back-end program conventions (`--socket-path`, `--fd`,
 * `--print-capabilities`).
 *
 * @module
 */

import {
  type Backing,
  BackingError,
  type BackingSpec,
  type CacheMode,
  closeBacking,
  isMemoryBacked,
  openBacking,
  specIsMemoryBacked,
} from "./backing.ts";
import { BlkDevice, MAX_BLK_QUEUES, validateSerial } from "./blk_device.ts";
import type { FileIoEngineKind } from "../../io/file_io_engine.ts";
import { probeIoUring } from "../../io/open_engine.ts";
import { chooseEngine, type EngineChoice, logEngineChoice } from "../../cli/engine_choice.ts";
import { log } from "../../log.ts";
import { MAX_QUEUE_SIZE } from "../../virtqueue/layout.ts";
import {
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
import { formatSize, parseSize } from "../../cli/size.ts";
import { UsageError } from "../../cli/usage_error.ts";

/** Defaults that make `deno task start` useful with no arguments. */
export const BLK_DEFAULTS = {
  socketPath: "vhostd-blk.sock",
  ramSize: 64 * 2 ** 20,
  /**
   * Request queues offered. QEMU's vhost-user-blk-pci asks for one per vCPU
   * unless told otherwise and refuses a back-end that offers fewer, so the
   * default covers guests of up to 64 vCPUs; the guest uses the queues it
   * enables, and rings it never starts cost no Worker and no I/O memory.
   */
  numQueues: 64,
  queueSize: 256,
  serial: "vhostd",
} as const;

/** Help text of `vhostd blk`. */
export const BLK_HELP = `Usage: vhostd blk [OPTIONS]

Serve a virtio-blk disk to a vhost-user front-end (QEMU's vhost-user-blk-pci).

Backing (one of):
  --file PATH            raw disk image (its size is the disk size); also
                         --blk-file PATH (QEMU's back-end program conventions)
  --ram SIZE             RAM disk of SIZE bytes (K, M, G suffixes); default ${
  formatSize(BLK_DEFAULTS.ramSize)
}

${listeningHelp(BLK_DEFAULTS.socketPath)}

Device:
  --read-only            refuse writes, discards and write-zeroes
  --num-queues N         most request queues offered (1-${MAX_BLK_QUEUES}); default ${BLK_DEFAULTS.numQueues}:
                         QEMU's default (one per vCPU) works up to that many vCPUs,
                         and the queues the guest enables are served
  --queue-size N         largest queue size, power of two up to 32768; default ${BLK_DEFAULTS.queueSize}
  --serial TEXT          GET_ID answer, up to 20 bytes; default "${BLK_DEFAULTS.serial}"
  --workers N            queue worker threads; default one with io_uring (it serves every
                         queue), else one per queue, at most one per CPU and 4

I/O:
  --aio io_uring|sync    file I/O engine of the queue workers; default io_uring where it
                         works (else sync, with the reason logged once)
  --cache writeback|none host page cache: writeback (default) or none (O_DIRECT on the
                         image, like qemu-storage-daemon cache.direct=on; a RAM disk
                         ignores it with a warning)

${DEVICE_STATE_HELP}

${OTHER_HELP}

Stop with SIGINT or SIGTERM: in-flight requests finish, the image is flushed,
the socket is removed.
`;

/**
 * What `--print-capabilities` prints (vhost-user.rst, "Backend program
 * conventions"): every block feature docs/interop/vhost-user.json defines
 * (`--read-only`, `--blk-file`), both supported, and the file I/O engine the
 * daemon would use (an addition the schema leaves to the back-end).
 */
export function blkCapabilities(aio: FileIoEngineKind): Record<string, unknown> {
  return { type: "block", features: ["read-only", "blk-file"], aio };
}

/** Parsed `vhostd blk` options. */
export interface BlkArgs extends DaemonArgs {
  backing: BackingSpec;
  numQueues: number;
  queueSize: number;
  serial: string;
  workers?: number;
  /** `--aio`, when given (otherwise io_uring where it works). */
  aio?: FileIoEngineKind;
  /** `--cache`. */
  cache: CacheMode;
}

/** Parses `vhostd blk` arguments; throws UsageError with a one-line message. */
export function parseBlkArgs(args: string[]): BlkArgs {
  const values = parseOptions(args, {
    ...DAEMON_OPTIONS,
    file: { type: "string" },
    "blk-file": { type: "string" },
    ram: { type: "string" },
    "read-only": { type: "boolean", default: false },
    "num-queues": { type: "string" },
    "queue-size": { type: "string" },
    serial: { type: "string" },
    workers: { type: "string" },
    aio: { type: "string" },
    cache: { type: "string" },
  });
  if (values.file !== undefined && values["blk-file"] !== undefined) {
    throw new UsageError("--file and --blk-file cannot be used together (they are one option)");
  }
  const file = values.file ?? values["blk-file"];
  if (file !== undefined && values.ram !== undefined) {
    throw new UsageError("--file and --ram cannot be used together");
  }
  const common = daemonArgs(values, BLK_DEFAULTS.socketPath);
  const aio = values.aio;
  if (aio !== undefined && aio !== "io_uring" && aio !== "sync") {
    throw new UsageError(`--aio must be io_uring or sync, got "${aio}"`);
  }
  const cache = values.cache ?? "writeback";
  if (cache !== "writeback" && cache !== "none") {
    throw new UsageError(`--cache must be writeback or none, got "${cache}"`);
  }
  const readOnly = values["read-only"] ?? false;
  let backing: BackingSpec;
  if (file !== undefined) {
    if (file === "") throw new UsageError("--file needs a path");
    backing = { kind: "file", path: file, readOnly, cache };
  } else {
    const size = values.ram === undefined ? BLK_DEFAULTS.ramSize : parseSize(values.ram);
    if (size === undefined || size <= 0 || size % 512 !== 0) {
      throw new UsageError(
        `--ram needs a size that is a positive multiple of 512 bytes, got "${values.ram}"`,
      );
    }
    backing = { kind: "ram", size, readOnly };
  }
  const queueSize = wholeNumberOption("queue-size", values["queue-size"], 1, MAX_QUEUE_SIZE) ??
    BLK_DEFAULTS.queueSize;
  if ((queueSize & (queueSize - 1)) !== 0) {
    throw new UsageError(`--queue-size must be a power of two, got ${queueSize}`);
  }
  const serial = values.serial ?? BLK_DEFAULTS.serial;
  const serialError = validateSerial(serial);
  if (serialError) throw new UsageError(`--serial: ${serialError}`);
  return {
    ...common,
    backing,
    numQueues: wholeNumberOption("num-queues", values["num-queues"], 1, MAX_BLK_QUEUES) ??
      BLK_DEFAULTS.numQueues,
    queueSize,
    serial,
    workers: wholeNumberOption("workers", values.workers, 1, 64),
    aio,
    cache,
  };
}

/** Runs `vhostd blk`; resolves with the exit code. */
export async function runBlk(args: string[]): Promise<number> {
  const opts = parseBlkArgs(args);
  const answered = answerInfoRequest(
    opts,
    BLK_HELP,
    () =>
      blkCapabilities(
        chooseEngine(opts.aio, probeIoUring, specIsMemoryBacked(opts.backing)).kind,
      ),
  );
  if (answered !== undefined) return answered;
  applyLogLevel(opts);
  if (opts.backing.kind === "ram" && opts.cache === "none") {
    log.warn("--cache none does not apply to a RAM disk (it is memory already): ignored");
  }
  let backing: Backing;
  try {
    backing = openBacking(opts.backing);
  } catch (e) {
    if (e instanceof BackingError) throw new UsageError(e.message);
    throw e;
  }
  let engine: EngineChoice;
  try {
    engine = chooseEngine(opts.aio, probeIoUring, isMemoryBacked(backing));
  } catch (e) {
    closeBacking(backing);
    throw e;
  }
  logEngineChoice(engine, "the disk");
  const device = new BlkDevice(backing, {
    numQueues: opts.numQueues,
    queueSize: opts.queueSize,
    serial: opts.serial,
    aio: engine.kind,
  });
  return await serveDevice(device, opts, {
    workers: opts.workers,
    qemuDevice: "vhost-user-blk-pci,chardev=vhostd0",
  });
}
