/**
 * `vhostd rng` and the state tools, as separate processes: a save holds the
 * rate-limit budget and inspects readably; it loads into another rng
 * back-end; a state of a newer version or with foreign features is refused
 * and changes nothing.
 */

import assert from "node:assert/strict";
import { BackendRefused, VhostUserClient } from "../src/frontend/mod.ts";
import {
  craftStream,
  loadFromBytes,
  negotiateForState,
  runVhostdCli,
} from "./support/state_tools.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const cli = (...args: string[]) => runVhostdCli(["state", ...args]);

Deno.test("vhostd rng: state save, inspect and load through DEVICE_STATE", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-rng-state-" });
  try {
    await withVhostd(
      { command: "rng", args: ["--max-bytes", "4096", "--period", "60000"] },
      async (source) => {
        const file = `${dir}/rng.state`;
        const saved = await cli("save", "--socket-path", source.socketPath, "-o", file);
        assert.equal(saved.code, 0, saved.stderr);
        const inspected = await cli("inspect", file);
        assert.equal(inspected.code, 0, inspected.stderr);
        assert.match(inspected.stdout, /rng state version 1: .*4096 byte\(s\) left/);
        const json = JSON.parse((await cli("inspect", file, "--json")).stdout);
        assert.equal(json.header.kind, "rng");

        await withVhostd({ command: "rng", args: [] }, async (target) => {
          const loaded = await cli("load", "--socket-path", target.socketPath, "-i", file);
          assert.equal(loaded.code, 0, loaded.stderr);
        });
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vhostd rng: a newer state version or foreign features are refused", async () => {
  await withVhostd({ command: "rng", args: [] }, (vhostd) => {
    const identity = { device: "virtio-rng" };
    const bad = [
      { version: 2, features: "0x0", budgetRemaining: null },
      { version: 1, features: "0x1", budgetRemaining: null },
      { version: 1, features: "0x0", budgetRemaining: -1 },
    ];
    for (const state of bad) {
      const client = VhostUserClient.connect(vhostd.socketPath);
      try {
        negotiateForState(client);
        assert.throws(
          () => loadFromBytes(client, craftStream("rng", identity, state)),
          BackendRefused,
          JSON.stringify(state),
        );
      } finally {
        client.close();
      }
    }
    // A good state still loads afterwards: the refusals changed nothing for later sessions.
    const client = VhostUserClient.connect(vhostd.socketPath);
    try {
      negotiateForState(client);
      loadFromBytes(
        client,
        craftStream("rng", identity, { version: 1, features: "0x0", budgetRemaining: null }),
      );
    } finally {
      client.close();
    }
  });
});
