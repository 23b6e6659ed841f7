import assert from "node:assert/strict";
import type { VirtioDevice } from "../devices/device.ts";
import { DaemonMetrics } from "./daemon_metrics.ts";
import { QueueStatsWriter } from "./queue_stats.ts";
import { parsePrometheusText, sampleValue } from "../../tests/support/prometheus_text.ts";

/** Just what the metrics read of a device. */
function device(extra: Partial<VirtioDevice> = {}): VirtioDevice {
  return { kind: "test", numQueues: 2, ...extra } as VirtioDevice;
}

Deno.test("a scrape shows every queue, sessions, transfers and the engine, all valid", () => {
  const metrics = new DaemonMetrics(device({ aio: "io_uring" }));
  const q1 = new QueueStatsWriter(metrics.queueStats, 1, 8);
  q1.started(3, true);
  q1.started(4, true);
  q1.completed(3, true, 513);
  q1.endRound();
  metrics.sessionStarted();
  metrics.sessionRefused();
  metrics.transferEnded({ direction: "save", ok: true, bytes: 4096, ms: 20 });
  metrics.transferEnded({ direction: "load", ok: false, bytes: 10, ms: 3000 });
  const f = parsePrometheusText(metrics.render());
  const q = (queue: string) => ({ queue });
  assert.equal(sampleValue(f, "vhostd_info", { device: "test" }), 1);
  assert.equal(sampleValue(f, "vhostd_io_engine_info", { engine: "io_uring" }), 1);
  assert.equal(sampleValue(f, "vhostd_queue_requests_total", q("0")), 0);
  assert.equal(sampleValue(f, "vhostd_queue_requests_total", q("1")), 1);
  assert.equal(sampleValue(f, "vhostd_queue_written_bytes_total", q("1")), 513);
  assert.equal(sampleValue(f, "vhostd_queue_requests_in_flight", q("1")), 1);
  assert.equal(sampleValue(f, "vhostd_queue_request_duration_seconds_count", q("1")), 1);
  assert.equal(sampleValue(f, "vhostd_sessions_accepted_total"), 1);
  assert.equal(sampleValue(f, "vhostd_sessions_active"), 1);
  assert.equal(sampleValue(f, "vhostd_sessions_refused_total"), 1);
  const t = (direction: string, result: string) => ({ direction, result });
  assert.equal(sampleValue(f, "vhostd_state_transfers_total", t("save", "ok")), 1);
  assert.equal(sampleValue(f, "vhostd_state_transfers_total", t("load", "failed")), 1);
  assert.equal(sampleValue(f, "vhostd_state_transfers_total", t("load", "ok")), 0);
  assert.equal(sampleValue(f, "vhostd_state_transfer_bytes_total", { direction: "save" }), 4096);
  const load = { direction: "load" };
  assert.equal(sampleValue(f, "vhostd_state_transfer_duration_seconds_sum", load), 3);
  assert.equal(
    sampleValue(f, "vhostd_state_transfer_duration_seconds_bucket", { ...load, le: "2.5" }),
    0,
  );
  assert.equal(
    sampleValue(f, "vhostd_state_transfer_duration_seconds_bucket", { ...load, le: "5" }),
    1,
  );
  metrics.sessionEnded();
  assert.equal(sampleValue(parsePrometheusText(metrics.render()), "vhostd_sessions_active"), 0);
});

Deno.test("a device without file I/O shows engine none; its own families follow", () => {
  const metrics = new DaemonMetrics(device({
    metrics: () => [{
      name: "vhostd_test_things_total",
      help: "Things",
      type: "counter",
      samples: [{ value: 5n }],
    }],
  }));
  const f = parsePrometheusText(metrics.render());
  assert.equal(sampleValue(f, "vhostd_io_engine_info", { engine: "none" }), 1);
  assert.equal(sampleValue(f, "vhostd_test_things_total"), 5);
  assert.equal([...f.keys()].at(-1), "vhostd_test_things_total");
});
