/**
 * `--metrics` of a real vhostd process: I/O through the TypeScript
 * front-end shows up exactly in the scrape (requests, written bytes,
 * latency counts, blk's own counters), in-flight returns to 0, sessions and
 * state transfers are counted, TCP port 0 is logged, and a bad address is
 * one line with exit code 2.
 */

import assert from "node:assert/strict";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { VhostUserClient } from "../src/frontend/mod.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { scrape } from "./support/metrics_client.ts";
import type { ParsedFamily } from "./support/prometheus_text.ts";
import { sampleValue } from "./support/prometheus_text.ts";
import { negotiateForState, runVhostdCli, saveToBytes } from "./support/state_tools.ts";
import { withVhostd } from "./support/vhostd_process.ts";

/** How long a session may take to be seen ended after the front-end closed. */
const SESSION_END_MS = 15_000;

async function withMetricsDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-metrics-" });
  try {
    return await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Scrapes until `done` holds for the answer (the daemon ends a session on its own time). */
async function scrapeUntil(
  address: string,
  done: (f: Map<string, ParsedFamily>) => boolean,
): Promise<Map<string, ParsedFamily>> {
  const deadline = performance.now() + SESSION_END_MS;
  for (;;) {
    const f = await scrape(address);
    if (done(f)) return f;
    if (performance.now() > deadline) throw new Error("the scrape never showed the change");
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("blk: requests, bytes and latencies per queue are exactly what was done", async () => {
  await withMetricsDir(async (dir) => {
    const address = `unix:${dir}/metrics.sock`;
    await withVhostd(
      { args: ["--ram", "8M", "--num-queues", "2", "--metrics", address] },
      async ({ socketPath }) => {
        const before = await scrape(address);
        assert.equal(sampleValue(before, "vhostd_info", { device: "blk" }), 1);
        assert.equal(sampleValue(before, "vhostd_io_engine_info", { engine: "sync" }), 1);
        assert.equal(sampleValue(before, "vhostd_sessions_accepted_total"), 0);
        assert.equal(sampleValue(before, "vhostd_queue_requests_total", { queue: "1" }), 0);

        const written = [0, 0];
        const requests = [0, 0];
        {
          using s = BlkFixture.open(socketPath, { numQueues: 2 });
          const count = (queue: number, used: number) => {
            written[queue] += used;
            requests[queue]++;
          };
          for (let i = 0; i < 3; i++) {
            const w = s.driver.write(0, i * 8, pattern(4096, i));
            assert.equal(w.status, BlkStatus.OK);
            count(0, w.written);
          }
          for (let i = 0; i < 2; i++) {
            const r = s.driver.read(0, i * 8, 8192);
            assert.equal(r.status, BlkStatus.OK);
            count(0, r.written);
          }
          const id = s.driver.getId(0);
          assert.equal(id.status, BlkStatus.OK);
          count(0, id.written);
          const small = s.driver.read(1, 100, 512);
          assert.equal(small.status, BlkStatus.OK);
          count(1, small.written);
          // An unsupported request type is blk's error, not the framework's.
          const bad = s.driver.waitFor(1, s.driver.submit(1, { op: "raw", type: 0xdead }));
          assert.equal(bad.status, BlkStatus.UNSUPP);
          count(1, bad.written);

          const during = await scrape(address);
          assert.equal(sampleValue(during, "vhostd_sessions_accepted_total"), 1);
          assert.equal(sampleValue(during, "vhostd_sessions_active"), 1);
          for (const queue of [0, 1]) {
            const q = { queue: String(queue) };
            const name = (n: string) => `vhostd_queue_${n}`;
            assert.equal(sampleValue(during, name("requests_total"), q), requests[queue]);
            assert.equal(sampleValue(during, name("written_bytes_total"), q), written[queue]);
            assert.equal(sampleValue(during, name("requests_in_flight"), q), 0);
            assert.equal(
              sampleValue(during, name("request_duration_seconds_count"), q),
              requests[queue],
            );
            assert.equal(
              sampleValue(during, name("errors_total"), { ...q, kind: "ring_broken" }),
              0,
            );
          }
          assert.equal(sampleValue(during, "vhostd_blk_requests_total", { op: "write" }), 3);
          assert.equal(sampleValue(during, "vhostd_blk_requests_total", { op: "read" }), 3);
          assert.equal(sampleValue(during, "vhostd_blk_requests_total", { op: "get_id" }), 1);
          assert.equal(
            sampleValue(during, "vhostd_blk_bytes_total", { direction: "read" }),
            2 * 8192 + 512,
          );
          assert.equal(
            sampleValue(during, "vhostd_blk_bytes_total", { direction: "write" }),
            3 * 4096,
          );
          assert.equal(
            sampleValue(during, "vhostd_blk_errors_total", { status: "unsupported" }),
            1,
          );
          assert.equal(sampleValue(during, "vhostd_blk_errors_total", { status: "ioerr" }), 0);
        }
        // The session ends once vhostd has read the front-end's hang-up.
        const after = await scrapeUntil(
          address,
          (f) => sampleValue(f, "vhostd_sessions_active") === 0,
        );
        assert.equal(sampleValue(after, "vhostd_sessions_accepted_total"), 1);
        assert.equal(sampleValue(after, "vhostd_queue_requests_in_flight", { queue: "0" }), 0);
      },
    );
  });
});

Deno.test("sessions: a second front-end after the first is counted, a refused one too", async () => {
  await withMetricsDir(async (dir) => {
    const address = `unix:${dir}/metrics.sock`;
    await withVhostd({ args: ["--ram", "1M", "--metrics", address] }, async ({ socketPath }) => {
      BlkFixture.open(socketPath).close();
      {
        // Opening the next session has vhostd read the first one's hang-up first.
        using _second = BlkFixture.open(socketPath);
        const f = await scrape(address);
        assert.equal(sampleValue(f, "vhostd_sessions_accepted_total"), 2);
        assert.equal(sampleValue(f, "vhostd_sessions_active"), 1);
        // A third front-end while the second is served is refused.
        const third = VhostUserClient.connect(socketPath);
        try {
          await scrapeUntil(address, (f) => sampleValue(f, "vhostd_sessions_refused_total") === 1);
        } finally {
          third.close();
        }
      }
      const f = await scrapeUntil(address, (f) => sampleValue(f, "vhostd_sessions_active") === 0);
      assert.equal(sampleValue(f, "vhostd_sessions_accepted_total"), 2);
    });
  });
});

Deno.test("state transfers: a SAVE is counted with its bytes and duration", async () => {
  await withMetricsDir(async (dir) => {
    const address = `unix:${dir}/metrics.sock`;
    await withVhostd({ args: ["--ram", "1M", "--metrics", address] }, async ({ socketPath }) => {
      const client = VhostUserClient.connect(socketPath);
      let stream: Uint8Array;
      try {
        negotiateForState(client);
        stream = saveToBytes(client);
      } finally {
        client.close();
      }
      const f = await scrape(address);
      const save = { direction: "save" };
      assert.equal(sampleValue(f, "vhostd_state_transfers_total", { ...save, result: "ok" }), 1);
      assert.equal(
        sampleValue(f, "vhostd_state_transfers_total", { ...save, result: "failed" }),
        0,
      );
      assert.equal(sampleValue(f, "vhostd_state_transfer_bytes_total", save), stream.length);
      assert.equal(sampleValue(f, "vhostd_state_transfer_duration_seconds_count", save), 1);
      assert.equal(
        sampleValue(f, "vhostd_state_transfers_total", { direction: "load", result: "ok" }),
        0,
      );
    });
  });
});

Deno.test("TCP port 0: the port vhostd got is logged and serves the metrics", async () => {
  await withVhostd({ args: ["--ram", "1M", "--metrics", "127.0.0.1:0"] }, async (vhostd) => {
    const m = /metrics on http:\/\/(127\.0\.0\.1:\d+)\/metrics/.exec(vhostd.log());
    assert.ok(m, vhostd.log());
    assert.notEqual(m[1], "127.0.0.1:0");
    const f = await scrape(m[1]);
    assert.equal(sampleValue(f, "vhostd_sessions_accepted_total"), 0);
    const wrongPath = await fetch(`http://${m[1]}/other`);
    assert.equal(wrongPath.status, 404);
    await wrongPath.body?.cancel();
  });
});

Deno.test("a bad --metrics address is one line and exit code 2, on every device command", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-metrics-" });
  try {
    const cases: [string[], RegExp][] = [
      [["blk", "--ram", "1M", "--metrics", "0.0.0.0:9100"], /0\.0\.0\.0 is not a loopback/],
      [["rng", "--metrics", "192.168.0.1:9100"], /is not a loopback/],
      [["fs", "--shared-dir", dir, "--metrics", "9100"], /must be HOST:PORT/],
      [["blk", "--ram", "1M", "--metrics", `unix:${dir}/no/such/dir.sock`], /cannot listen/],
    ];
    for (const [args, message] of cases) {
      const socket = `${dir}/vhostd.sock`;
      const r = await runVhostdCli([...args, "--socket-path", socket]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      const lines = r.stderr.trim().split("\n").filter((l) => !l.includes(" info: "));
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /^vhostd: --metrics/);
      assert.match(lines[0], message);
      assert.throws(() => Deno.lstatSync(socket), Deno.errors.NotFound, "no vhost-user socket");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
