/**
 * `vhostd fs` on the command line: capabilities and help, one-line errors
 * with exit code 2 for bad arguments and unusable shared directories, and
 * the device a front-end sees (queue count, tag, read-only configuration).
 */

import assert from "node:assert/strict";
import { FS_CONFIG_SIZE, FsConfigOffset } from "../src/devices/fs/fs_spec.ts";
import { FuseOpcode } from "../src/devices/fs/fuse/mod.ts";
import { BackendRefused, VhostUserClient } from "../src/frontend/mod.ts";
import { FsFixture, makeTestDirs, withVhostdFs } from "./support/fs_fixture.ts";
import { runVhostdCli } from "./support/state_tools.ts";

Deno.test("fs CLI: --print-capabilities and --help", async () => {
  const caps = await runVhostdCli(["fs", "--print-capabilities"]);
  assert.equal(caps.code, 0, caps.stderr);
  const parsed = JSON.parse(caps.stdout);
  assert.equal(parsed.type, "fs");
  assert.ok(Array.isArray(parsed.features));
  assert.ok(parsed.features.includes("migrate-precopy"));
  const help = await runVhostdCli(["fs", "--help"]);
  assert.equal(help.code, 0);
  const options = ["--shared-dir", "--tag", "--read-only", "--migration-on-error", "--fd"];
  for (const option of [...options, "--inode-file-handles", "--migration-mode"]) {
    assert.ok(help.stdout.includes(option), option);
  }
  const main = await runVhostdCli(["--help"]);
  assert.match(main.stdout, /vhostd fs/);
});

Deno.test("fs CLI: bad arguments and unusable directories are one line and exit code 2", async () => {
  const dirs = await makeTestDirs();
  try {
    Deno.writeTextFileSync(`${dirs.root}/a-file`, "x");
    const sock = ["--socket-path", `${dirs.root}/never.sock`];
    const cases: [string[], RegExp][] = [
      [[...sock], /--shared-dir is required/],
      [["--shared-dir", `${dirs.root}/missing`, ...sock], /missing does not exist/],
      [["--shared-dir", `${dirs.root}/a-file`, ...sock], /is not a directory/],
      [["--shared-dir", dirs.share, "--tag", "t".repeat(37), ...sock], /--tag: .*36 bytes/],
      [["--shared-dir", dirs.share, "--tag", "é".repeat(19), ...sock], /--tag: .*36 bytes/],
      [["--shared-dir", dirs.share, "--tag", "", ...sock], /--tag: tag must not be empty/],
      [["--shared-dir", dirs.share, "--num-request-queues", "0", ...sock], /1 to 64/],
      [["--shared-dir", dirs.share, "--migration-on-error", "maybe", ...sock], /abort or guest/],
      [["--shared-dir", dirs.share, "--fd", "3", ...sock], /cannot be used together/],
      [["--shared-dir", dirs.share, "--log-level", "loud", ...sock], /--log-level/],
      [["--shared-dir", dirs.share, "--dump-state", `${dirs.root}/a-file`, ...sock], /not a dir/],
      [["--shared-dir", dirs.share, "--bogus", ...sock], /bogus/],
      [
        ["--shared-dir", dirs.share, "--poll-max-us", "fast", ...sock],
        /--poll-max-us must be a whole number from 0 to 1000000, got "fast"/,
      ],
      [["--shared-dir", dirs.share, "--poll-max-us", "1000001", ...sock], /--poll-max-us/],
      [
        ["--shared-dir", dirs.share, "--inode-file-handles", "sometimes", ...sock],
        /--inode-file-handles must be never, prefer or mandatory, got "sometimes"/,
      ],
      [
        ["--shared-dir", dirs.share, "--migration-mode", "teleport", ...sock],
        /--migration-mode must be find-paths or file-handles, got "teleport"/,
      ],
      // procfs makes no file handles.
      [
        ["--shared-dir", "/proc", "--inode-file-handles", "mandatory", ...sock],
        /--shared-dir: .*mandatory.*file handle/,
      ],
      [["--shared-dir", dirs.share, "positional", ...sock], /positional/],
    ];
    for (const [args, message] of cases) {
      const r = await runVhostdCli(["fs", ...args]);
      const what = args.join(" ");
      assert.equal(r.code, 2, `${what}: exit ${r.code}, stderr ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, `${what}: ${r.stderr}`);
      assert.match(r.stderr, message, what);
      assert.match(r.stderr, /^vhostd: /);
    }
    assert.deepEqual([...Deno.readDirSync(dirs.root)].map((e) => e.name).sort(), [
      "a-file",
      "outside",
      "share",
    ], "no socket was left behind");
  } finally {
    await Deno.remove(dirs.root, { recursive: true });
  }
});

Deno.test("fs CLI: the device has 1 + N queues, the tag, and a read-only configuration", async () => {
  const tag = "t".repeat(36);
  await withVhostdFs(["--tag", tag, "--num-request-queues", "3"], (vhostd) => {
    using fx = FsFixture.open(vhostd.socketPath, { numRequestQueues: 3 });
    assert.equal(fx.client.getQueueNum(), 4);
    assert.deepEqual(fx.driver.config, { tag, numRequestQueues: 3 });
    const config = fx.client.getConfig(0, FS_CONFIG_SIZE);
    // Rewriting the same bytes is accepted; any change is refused and changes nothing.
    fx.client.setConfig(0, config);
    const changed = config.slice(FsConfigOffset.numRequestQueues, FS_CONFIG_SIZE);
    changed[0] = 9;
    assert.throws(
      () => fx.client.setConfig(FsConfigOffset.numRequestQueues, changed),
      BackendRefused,
    );
    assert.throws(() => fx.client.setConfig(0, new TextEncoder().encode("other")), BackendRefused);
    assert.deepEqual(fx.client.getConfig(0, FS_CONFIG_SIZE), config);
    // The device still works after the refusals.
    assert.equal(fx.driver.getattr(1n).attr.mode & 0o170000, 0o040000);
  });
  // A front-end may ask for more request queues than the device has: refused at set-up.
  await withVhostdFs(["--num-request-queues", "1"], (vhostd) => {
    const client = VhostUserClient.connect(vhostd.socketPath);
    try {
      assert.throws(() => FsFixture.open(vhostd.socketPath, { client, numRequestQueues: 2 }));
    } finally {
      client.close();
    }
  });
});

Deno.test("fs CLI: --poll-max-us 0 (Workers never spin) and 1000 serve every queue", async () => {
  for (const window of ["0", "1000"]) {
    await withVhostdFs(["--num-request-queues", "2", "--poll-max-us", window], (vhostd) => {
      using fx = FsFixture.open(vhostd.socketPath, { numRequestQueues: 2 });
      // Each reply is waited for: the next request finds the Worker asleep (0) or spinning.
      for (let round = 0; round < 20; round++) {
        for (let queue = 1; queue <= 2; queue++) {
          const reply = fx.driver.request(FuseOpcode.GETATTR, { fh: 0n, getattrFlags: 0 }, {
            queue,
          });
          assert.equal(reply.error, 0, `--poll-max-us ${window}, queue ${queue}, round ${round}`);
        }
      }
    });
  }
});

Deno.test("fs CLI: with no queue option the device offers 64 request queues; four in use serve", async () => {
  await withVhostdFs([], (vhostd) => {
    using fx = FsFixture.open(vhostd.socketPath, { numRequestQueues: 4 });
    assert.equal(fx.client.getQueueNum(), 1 + 64);
    assert.deepEqual(fx.driver.config, { tag: "vhostd", numRequestQueues: 64 });
    for (let queue = 1; queue <= 4; queue++) {
      assert.equal(
        fx.driver.request(FuseOpcode.GETATTR, { fh: 0n, getattrFlags: 0 }, { queue }).error,
        0,
        `queue ${queue}`,
      );
    }
  });
});
