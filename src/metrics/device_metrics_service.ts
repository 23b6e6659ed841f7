/**
 * `--metrics` for one served device: the endpoint and the counters it shows.
 * The endpoint is opened before the daemon (so a bad address fails before
 * the vhost-user socket exists) and closed after it; a sandboxed daemon
 * opens it even earlier, before its root changes, so that a `unix:` path
 * outside the sandbox's root still works.
 *
 * @module
 */

import type { VirtioDevice } from "../devices/device.ts";
import { DaemonMetrics } from "./daemon_metrics.ts";
import type { MetricsAddress } from "./metrics_address.ts";
import { type MetricsServer, startMetricsServer } from "./metrics_server.ts";

/** A listening `--metrics` endpoint; it shows nothing until a device's metrics are attached. */
export class MetricsEndpoint {
  /** The HTTP server. */
  readonly server: MetricsServer;
  readonly #shown: { metrics?: DaemonMetrics };

  private constructor(server: MetricsServer, shown: { metrics?: DaemonMetrics }) {
    this.server = server;
    this.#shown = shown;
  }

  /** Listens at `address`; UsageError (one line) when it cannot. */
  static async open(address: MetricsAddress): Promise<MetricsEndpoint> {
    const shown: { metrics?: DaemonMetrics } = {};
    const server = await startMetricsServer(address, () => shown.metrics?.render() ?? "");
    return new MetricsEndpoint(server, shown);
  }

  /** Shows `metrics` from now on. */
  attach(metrics: DaemonMetrics): void {
    this.#shown.metrics = metrics;
  }

  /** Stops listening. */
  close(): Promise<void> {
    return this.server.close();
  }
}

/** Metrics being served. */
export interface MetricsService {
  /** What the daemon counts into. */
  readonly metrics: DaemonMetrics;
  /** The endpoint showing them. */
  readonly endpoint: MetricsEndpoint;
}

/**
 * Serves `device`'s metrics on `endpoint`, or on a new endpoint at
 * `address`; undefined with neither (nothing is counted then). UsageError
 * when the endpoint cannot listen.
 */
export async function startDeviceMetrics(
  device: VirtioDevice,
  address: MetricsAddress | undefined,
  endpoint?: MetricsEndpoint,
): Promise<MetricsService | undefined> {
  if (endpoint === undefined && address === undefined) return undefined;
  const open = endpoint ?? await MetricsEndpoint.open(address!);
  const metrics = new DaemonMetrics(device);
  open.attach(metrics);
  return { metrics, endpoint: open };
}
