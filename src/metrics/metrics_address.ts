/**
 * `--metrics ADDR`: where the Prometheus endpoint listens. Only addresses
 * this host alone can reach are accepted, a loopback TCP address or a Unix
 * socket, so serving metrics never opens vhostd to the network.
 *
 * @module
 */

import { UsageError } from "../cli/usage_error.ts";

/** A checked `--metrics` address. */
export type MetricsAddress =
  | { transport: "tcp"; hostname: string; port: number }
  | { transport: "unix"; path: string };

/** parseArgs specification of `--metrics`. */
export const METRICS_OPTIONS = { metrics: { type: "string" } } as const;

/** Help line of `--metrics`. */
export const METRICS_HELP =
  `  --metrics ADDR         serve Prometheus metrics at http://ADDR/metrics: a loopback
                         address (127.0.0.1:9100, [::1]:9100; port 0 picks a free one
                         and logs it) or a Unix socket (unix:/run/vhostd-metrics.sock)`;

/** The loopback addresses vhostd listens on (the usual two, not the rest of 127.0.0.0/8). */
function isLoopback(hostname: string): boolean {
  return hostname === "127.0.0.1" || hostname === "::1";
}

/** Parses `--metrics`; UsageError with one line for anything but a loopback address or `unix:PATH`. */
export function parseMetricsAddress(text: string): MetricsAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    if (path === "") throw new UsageError("--metrics unix: needs a socket path (unix:/run/x.sock)");
    return { transport: "unix", path };
  }
  const match = /^(?:\[([^\]]*)\]|([^:\[\]]*)):(\d{1,5})$/.exec(text);
  if (!match) {
    throw new UsageError(
      `--metrics must be HOST:PORT on loopback (127.0.0.1:9100, [::1]:9100) or unix:PATH, ` +
        `got "${text}"`,
    );
  }
  const named = match[2];
  const hostname = match[1] ?? (named === "localhost" ? "127.0.0.1" : named);
  const port = Number(match[3]);
  if (port > 65535) throw new UsageError(`--metrics: port ${port} is out of range (0-65535)`);
  if (!isLoopback(hostname)) {
    throw new UsageError(
      `--metrics: ${match[1] !== undefined ? `[${hostname}]` : hostname} is not a loopback ` +
        `address; metrics are served only on 127.0.0.1, [::1] or a unix: socket`,
    );
  }
  return { transport: "tcp", hostname, port };
}

/** `--metrics`, checked, or undefined when absent. */
export function metricsOption(text: string | undefined): MetricsAddress | undefined {
  return text === undefined ? undefined : parseMetricsAddress(text);
}
