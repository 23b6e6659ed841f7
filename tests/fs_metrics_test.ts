/**
 * `vhostd fs --metrics unix:PATH` inside the default namespace sandbox: the
 * daemon binds the socket before its root changes, so a path outside the
 * share still serves, and FUSE requests are counted per queue.
 */

import assert from "node:assert/strict";
import { FsFixture, makeTestDirs, withVhostdFs } from "./support/fs_fixture.ts";
import { scrape } from "./support/metrics_client.ts";
import { type ParsedFamily, sampleValue } from "./support/prometheus_text.ts";
import { namespacesWork } from "./support/namespaces.ts";

const NAMESPACES = namespacesWork();

function totals(f: Map<string, ParsedFamily>, name: string): number {
  return [0, 1].reduce((n, q) => n + sampleValue(f, name, { queue: String(q) }), 0);
}

Deno.test({
  name: `fs: --metrics unix:PATH outside the share works in the namespace sandbox${
    NAMESPACES ? "" : " (skipped: cannot create mount and PID namespaces here)"
  }`,
  ignore: !NAMESPACES,
  fn: async () => {
    const dirs = await makeTestDirs();
    const address = `unix:${dirs.root}/metrics.sock`;
    try {
      await withVhostdFs(["--metrics", address], async (vhostd) => {
        assert.match(vhostd.log(), /sandbox: namespace/);
        await Deno.writeTextFile(`${dirs.share}/a`, "x");
        const before = await scrape(address);
        assert.equal(sampleValue(before, "vhostd_info", { device: "fs" }), 1);
        using s = FsFixture.open(vhostd.socketPath);
        const connected = await scrape(address);
        s.driver.lookup(1n, "a");
        const after = await scrape(address);
        const delta = (name: string) => totals(after, name) - totals(connected, name);
        assert.equal(delta("vhostd_queue_requests_total"), 1);
        // fuse_out_header (16) and fuse_entry_out (128).
        assert.equal(delta("vhostd_queue_written_bytes_total"), 144);
        assert.equal(totals(after, "vhostd_queue_requests_in_flight"), 0);
        assert.equal(sampleValue(after, "vhostd_sessions_active"), 1);
      }, dirs);
    } finally {
      await Deno.remove(dirs.root, { recursive: true });
    }
  },
});
