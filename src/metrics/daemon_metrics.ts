/**
 * Everything `--metrics` reports about one daemon: per-queue request
 * statistics (kept by the queue Workers in shared memory), front-end
 * sessions and state transfers (counted on the main thread by small hooks
 * in the daemon), the device's own counters, and what it runs (version,
 * device kind, I/O engine). `render()` is one scrape.
 *
 * @module
 */

import type { VirtioDevice } from "../devices/device.ts";
import { VERSION } from "../version.ts";
import {
  type HistogramSample,
  type MetricFamily,
  renderExposition,
  type ScalarSample,
} from "./exposition.ts";
import { Histogram, TRANSFER_BOUNDS_SECONDS } from "./histogram.ts";
import { queueStatsBytes, readQueueStats } from "./queue_stats.ts";

/** A state transfer as the daemon saw it end. */
export interface TransferRecord {
  /** Which way the state went. */
  direction: "save" | "load";
  /** Whether it succeeded (for a LOAD: the state was applied). */
  ok: boolean;
  /** Bytes that went through the pipe. */
  bytes: number;
  /** How long it took, in milliseconds. */
  ms: number;
}

const DIRECTIONS = ["save", "load"] as const;

interface TransferCounts {
  ok: number;
  failed: number;
  bytes: number;
  duration: Histogram;
}

/** The metrics of one daemon. */
export class DaemonMetrics {
  /** Shared memory the queue Workers count into (one block per queue). */
  readonly queueStats: SharedArrayBuffer;
  readonly #device: VirtioDevice;
  #accepted = 0;
  #refused = 0;
  #active = 0;
  readonly #transfers = new Map<string, TransferCounts>(
    DIRECTIONS.map((d) => [d, {
      ok: 0,
      failed: 0,
      bytes: 0,
      duration: new Histogram(TRANSFER_BOUNDS_SECONDS),
    }]),
  );

  /** Metrics of `device`, with zeroed statistics for each of its queues. */
  constructor(device: VirtioDevice) {
    this.#device = device;
    this.queueStats = new SharedArrayBuffer(queueStatsBytes(device.numQueues));
  }

  /** A front-end connection was accepted and is now served. */
  sessionStarted(): void {
    this.#accepted++;
    this.#active++;
  }

  /** The served front-end's session ended. */
  sessionEnded(): void {
    this.#active = Math.max(0, this.#active - 1);
  }

  /** A front-end connection was refused (another is served, or the daemon is stopping). */
  sessionRefused(): void {
    this.#refused++;
  }

  /** A state transfer ended (checked, or abandoned with its session). */
  transferEnded(record: TransferRecord): void {
    const t = this.#transfers.get(record.direction)!;
    if (record.ok) t.ok++;
    else t.failed++;
    t.bytes += record.bytes;
    t.duration.observe(record.ms / 1000);
  }

  /** Every family, in exposition order. */
  families(): MetricFamily[] {
    const device = this.#device;
    const queues = Array.from({ length: device.numQueues }, (_, q) => ({
      labels: { queue: String(q) },
      stats: readQueueStats(this.queueStats, q),
    }));
    const perQueue = (value: (s: (typeof queues)[number]["stats"]) => number): ScalarSample[] =>
      queues.map(({ labels, stats }) => ({ labels, value: value(stats) }));
    const errorSamples: ScalarSample[] = queues.flatMap(({ labels, stats }) => [
      { labels: { ...labels, kind: "device_exception" }, value: stats.deviceExceptions },
      { labels: { ...labels, kind: "stray_completion" }, value: stats.strayCompletions },
      { labels: { ...labels, kind: "ring_broken" }, value: stats.ringBreaks },
    ]);
    const latency: HistogramSample[] = queues.map(({ labels, stats }) => ({
      labels,
      bounds: stats.latencyBounds,
      counts: stats.latencyCounts,
      sum: stats.latencySum,
    }));
    const transfers = [...this.#transfers];
    return [
      {
        name: "vhostd_info",
        help: "vhostd version and the device kind it serves (always 1)",
        type: "gauge",
        samples: [{ labels: { version: VERSION, device: device.kind }, value: 1 }],
      },
      {
        name: "vhostd_io_engine_info",
        help: "File I/O engine of the queue workers (always 1; none: the device does no file I/O)",
        type: "gauge",
        samples: [{ labels: { engine: device.aio ?? "none" }, value: 1 }],
      },
      {
        name: "vhostd_queue_requests_total",
        help: "Requests completed (used elements returned to the driver), per queue",
        type: "counter",
        samples: perQueue((s) => s.completed),
      },
      {
        name: "vhostd_queue_written_bytes_total",
        help: "Bytes written into guest buffers (the used elements' len), per queue",
        type: "counter",
        samples: perQueue((s) => s.writtenBytes),
      },
      {
        name: "vhostd_queue_requests_in_flight",
        help: "Requests taken from the ring and not completed yet, per queue",
        type: "gauge",
        samples: perQueue((s) => s.inFlight),
      },
      {
        name: "vhostd_queue_errors_total",
        help: "Framework-level failures per queue: the device threw for a request " +
          "(device_exception), a completion for a request not in flight (stray_completion), " +
          "the ring broke and stopped being served (ring_broken)",
        type: "counter",
        samples: errorSamples,
      },
      {
        name: "vhostd_queue_request_duration_seconds",
        help: "Time from taking a request off the ring to returning it, per queue",
        type: "histogram",
        samples: latency,
      },
      {
        name: "vhostd_sessions_accepted_total",
        help: "Front-end connections accepted and served",
        type: "counter",
        samples: [{ value: this.#accepted }],
      },
      {
        name: "vhostd_sessions_refused_total",
        help: "Front-end connections refused (another one was served, or vhostd was stopping)",
        type: "counter",
        samples: [{ value: this.#refused }],
      },
      {
        name: "vhostd_sessions_active",
        help: "Front-end connections being served now (0 or 1)",
        type: "gauge",
        samples: [{ value: this.#active }],
      },
      {
        name: "vhostd_state_transfers_total",
        help: "Device state transfers (DEVICE_STATE) that ended, by direction and result",
        type: "counter",
        samples: transfers.flatMap(([direction, t]) => [
          { labels: { direction, result: "ok" }, value: t.ok },
          { labels: { direction, result: "failed" }, value: t.failed },
        ]),
      },
      {
        name: "vhostd_state_transfer_bytes_total",
        help: "Bytes of device state sent (save) or received (load) through the state pipe",
        type: "counter",
        samples: transfers.map(([direction, t]) => ({ labels: { direction }, value: t.bytes })),
      },
      {
        name: "vhostd_state_transfer_duration_seconds",
        help: "Time device state transfers spent streaming through the state pipe",
        type: "histogram",
        samples: transfers.map(([direction, t]) => ({
          labels: { direction },
          bounds: t.duration.bounds,
          counts: t.duration.counts,
          sum: t.duration.sum,
        })),
      },
      ...(device.metrics?.() ?? []),
    ];
  }

  /** One scrape in the text exposition format. */
  render(): string {
    return renderExposition(this.families());
  }
}
