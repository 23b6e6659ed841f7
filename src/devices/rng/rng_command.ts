/**
 * `vhostd rng`: serve a virtio-rng device (QEMU's vhost-user-rng-pci) with
 * entropy from getrandom, optionally rate limited like rust-vmm's
 * vhost-device-rng (`--max-bytes N --period MS`).
 *
 * @module
 */

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
import { UsageError } from "../../cli/usage_error.ts";
import { RngDevice, type RngRateLimit } from "./rng_device.ts";

/** Default socket and period. */
export const RNG_DEFAULTS = { socketPath: "vhostd-rng.sock", periodMs: 1000 } as const;

/** Largest `--max-bytes` and `--period` accepted. */
const MAX_LIMIT = 2 ** 31 - 1;

/** Help text of `vhostd rng`. */
export const RNG_HELP = `Usage: vhostd rng [OPTIONS]

Serve a virtio-rng entropy device to a vhost-user front-end (QEMU's
vhost-user-rng-pci). Bytes come from the kernel's getrandom.

${listeningHelp(RNG_DEFAULTS.socketPath)}

Rate limit (off unless --max-bytes is given):
  --max-bytes N          at most N bytes per period; a request the budget cannot
                         cover waits for the next period (it is not answered short)
  --period MS            length of the period in milliseconds; default ${RNG_DEFAULTS.periodMs}

${DEVICE_STATE_HELP}

${OTHER_HELP}
`;

/** What `--print-capabilities` prints. */
export function rngCapabilities(): Record<string, unknown> {
  return { type: "rng", features: [] };
}

/** Parsed `vhostd rng` options. */
export interface RngArgs extends DaemonArgs {
  /** The rate limit, when `--max-bytes` was given. */
  rateLimit?: RngRateLimit;
}

/** Parses `vhostd rng` arguments; throws UsageError with a one-line message. */
export function parseRngArgs(args: string[]): RngArgs {
  const values = parseOptions(args, {
    ...DAEMON_OPTIONS,
    "max-bytes": { type: "string" },
    period: { type: "string" },
  });
  const common = daemonArgs(values, RNG_DEFAULTS.socketPath);
  const maxBytes = wholeNumberOption("max-bytes", values["max-bytes"], 1, MAX_LIMIT);
  const periodMs = wholeNumberOption("period", values.period, 1, MAX_LIMIT);
  if (periodMs !== undefined && maxBytes === undefined) {
    throw new UsageError("--period needs --max-bytes (the bytes allowed per period)");
  }
  const rateLimit = maxBytes === undefined
    ? undefined
    : { maxBytes, periodMs: periodMs ?? RNG_DEFAULTS.periodMs };
  return { ...common, rateLimit };
}

/** Runs `vhostd rng`; resolves with the exit code. */
export async function runRng(args: string[]): Promise<number> {
  const opts = parseRngArgs(args);
  const answered = answerInfoRequest(opts, RNG_HELP, rngCapabilities);
  if (answered !== undefined) return answered;
  applyLogLevel(opts);
  return await serveDevice(new RngDevice(opts.rateLimit), opts, {
    qemuDevice: "vhost-user-rng-pci,chardev=vhostd0",
  });
}
