/**
 * Session and process life cycle of a real vhostd process: front-ends that
 * come and go, fds over many sessions, shutdown on signals.
 */

import assert from "node:assert/strict";
import { assertFdsBackTo } from "./support/fd_checks.ts";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { BackendDisconnected, VhostUserClient } from "../src/frontend/mod.ts";
import { encodeMessage, FrontendRequest, VHOST_USER_VERSION } from "../src/protocol/mod.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("a second front-end connects after the first leaves and finds its data", async () => {
  await withVhostd({ args: ["--ram", "2M"] }, ({ socketPath }) => {
    const data = pattern(16384, 3);
    {
      using first = BlkFixture.open(socketPath);
      assert.equal(first.driver.write(0, 100, data).status, BlkStatus.OK);
    }
    // Reconnect at once, as QEMU's reconnect does.
    using second = BlkFixture.open(socketPath);
    const r = second.driver.read(0, 100, 16384);
    assert.equal(r.status, BlkStatus.OK);
    assert.deepEqual(r.data, data);
  });
});

Deno.test("a front-end that leaves right after sending does not lock out the next", async () => {
  await withVhostd({ args: ["--ram", "2M"] }, ({ socketPath }) => {
    for (let i = 0; i < 10; i++) {
      // Both connections can be pending when the daemon next accepts: the first one's
      // message and goodbye must be handled before the second is judged.
      const leaving = VhostUserClient.connect(socketPath);
      leaving.sendRaw(encodeMessage(FrontendRequest.GET_FEATURES, VHOST_USER_VERSION));
      leaving.close();
      const next = VhostUserClient.connect(socketPath);
      try {
        assert.ok(next.getFeatures() > 0n, `round ${i}`);
      } finally {
        next.close();
      }
    }
  });
});

Deno.test("a front-end arriving while another is connected is turned away", async () => {
  await withVhostd({ args: ["--ram", "2M"] }, ({ socketPath }) => {
    using first = BlkFixture.open(socketPath);
    const intruder = VhostUserClient.connect(socketPath);
    try {
      assert.throws(() => intruder.getFeatures(), BackendDisconnected);
    } finally {
      intruder.close();
    }
    assert.equal(first.driver.write(0, 0, pattern(512, 1)).status, BlkStatus.OK);
    assert.deepEqual(first.driver.read(0, 0, 512).data, pattern(512, 1));
  });
});

Deno.test("no fd is leaked over 100 connect/negotiate/IO/disconnect cycles", async () => {
  await withVhostd({ args: ["--ram", "2M", "--num-queues", "2"] }, async (vhostd) => {
    const cycle = (i: number) => {
      using s = BlkFixture.open(vhostd.socketPath, {
        numQueues: 2,
        queueSize: 16,
        memorySize: 1 << 20,
      });
      const data = pattern(4096, i);
      assert.equal(s.driver.write(i % 2, i * 8, data).status, BlkStatus.OK);
      assert.deepEqual(s.driver.read(1 - (i % 2), i * 8, 4096).data, data);
    };
    // Warm-up: whatever the daemon opens once, on first use, is not a leak.
    cycle(0);
    const before = await vhostd.settledFdCount();
    const targetsBefore = vhostd.fdTargets();
    for (let i = 1; i <= 100; i++) cycle(i);
    const after = await vhostd.fdCountDownTo(before);
    assertFdsBackTo(
      after,
      before,
      `fds before:\n${targetsBefore.join("\n")}\nafter:\n${vhostd.fdTargets().join("\n")}`,
    );
  });
});

Deno.test("SIGTERM while a front-end is connected: exit 0, socket removed", async () => {
  const vhostd = await VhostdProcess.start({ args: ["--ram", "2M"] });
  try {
    using s = BlkFixture.open(vhostd.socketPath);
    assert.equal(s.driver.write(0, 0, pattern(4096, 1)).status, BlkStatus.OK);
    vhostd.signal("SIGTERM");
    const status = await vhostd.waitExit();
    assert.ok(status !== undefined, "vhostd did not exit after SIGTERM");
    assert.equal(status.code, 0, vhostd.log());
    assert.ok(!exists(vhostd.socketPath), "socket removed");
    assert.throws(() => s.client.getFeatures(), BackendDisconnected);
  } finally {
    await vhostd.stop("SIGKILL");
  }
});

Deno.test("SIGINT as soon as the socket appears: exit 0, socket removed", async () => {
  const vhostd = await VhostdProcess.start({ args: ["--ram", "2M"] });
  try {
    vhostd.signal("SIGINT");
    const status = await vhostd.waitExit();
    assert.ok(status !== undefined, "vhostd did not exit after SIGINT");
    assert.equal(status.code, 0, `exit status ${JSON.stringify(status)}\n${vhostd.log()}`);
    assert.ok(!exists(vhostd.socketPath), "socket removed");
  } finally {
    await vhostd.stop("SIGKILL");
  }
});
