/**
 * `--metrics` for one served device: the counters and the endpoint that
 * shows them, started before the daemon (so a bad address fails before the
 * vhost-user socket exists) and closed after it.
 *
 * @module
 */

import type { VirtioDevice } from "../devices/device.ts";
import { DaemonMetrics } from "./daemon_metrics.ts";
import type { MetricsAddress } from "./metrics_address.ts";
import { type MetricsServer, startMetricsServer } from "./metrics_server.ts";

/** Metrics being served. */
export interface MetricsService {
  /** What the daemon counts into. */
  readonly metrics: DaemonMetrics;
  /** The endpoint. */
  readonly server: MetricsServer;
}

/**
 * Starts serving `device`'s metrics at `address`; undefined without an
 * address (nothing is counted then). UsageError when it cannot listen.
 */
export async function startDeviceMetrics(
  device: VirtioDevice,
  address: MetricsAddress | undefined,
): Promise<MetricsService | undefined> {
  if (address === undefined) return undefined;
  const metrics = new DaemonMetrics(device);
  const server = await startMetricsServer(address, () => metrics.render());
  return { metrics, server };
}
