/**
 * vhostd under systemd's conventions, without systemd running: socket
 * activation through Debian's `systemd-socket-activate` (the socket at fd 3,
 * LISTEN_FDS/LISTEN_PID), readiness and stopping on a NOTIFY_SOCKET the test
 * binds itself, and clear refusals of activation variables that are wrong.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { BlkStatus } from "../src/devices/blk/blk_spec.ts";
import { BlkFixture, pattern } from "./support/blk_fixture.ts";
import { FsFixture } from "./support/fs_fixture.ts";
import {
  ActivatedVhostd,
  NotifyListener,
  SOCKET_ACTIVATE,
  socketActivateAvailable,
} from "./support/socket_activate.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));

function skipWithoutTool(): boolean {
  if (socketActivateAvailable()) return false;
  console.log(`${SOCKET_ACTIVATE} missing (Debian package systemd): test skipped`);
  return true;
}

Deno.test("socket activation: vhostd blk serves the socket it was given; READY=1, then STOPPING=1", async () => {
  if (skipWithoutTool()) return;
  const dir = await Deno.makeTempDir({ prefix: "vhostd-systemd-" });
  try {
    using notify = new NotifyListener(`${dir}/notify.sock`);
    const vhostd = await ActivatedVhostd.start(`${dir}/blk.sock`, ["blk", "--ram", "4M"], {
      NOTIFY_SOCKET: notify.path,
    });
    let stopped: { code: number; output: string } | undefined;
    try {
      vhostd.trigger();
      const ready = notify.next();
      assert.equal(ready.get("READY"), "1");
      assert.equal(ready.get("MAINPID"), String(vhostd.pid), "the exec'd vhostd is the main pid");
      {
        using s = BlkFixture.open(vhostd.socketPath, { numQueues: 2 });
        for (const q of [0, 1]) {
          assert.equal(s.driver.write(q, 8 * q, pattern(4096, q)).status, BlkStatus.OK);
          assert.deepEqual(s.driver.read(1 - q, 8 * q, 4096).data, pattern(4096, q));
        }
      }
      stopped = await vhostd.stop("SIGTERM");
      assert.equal(notify.next().get("STOPPING"), "1");
    } finally {
      stopped ??= await vhostd.stop("SIGKILL");
    }
    assert.equal(stopped.code, 0, stopped.output);
    assert.match(stopped.output, /front-end connected \(session 2\)/, "the trigger was session 1");
    assert.ok(
      Deno.lstatSync(`${dir}/blk.sock`).isSocket,
      "the socket belongs to the service manager: vhostd leaves it in place",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("socket activation: vhostd fs in its default sandbox serves the activated socket", async () => {
  if (skipWithoutTool()) return;
  const dir = await Deno.makeTempDir({ prefix: "vhostd-systemd-" });
  try {
    await Deno.mkdir(`${dir}/share`);
    await Deno.writeTextFile(`${dir}/share/hello.txt`, "hello\n");
    using notify = new NotifyListener(`${dir}/notify.sock`);
    let ready = new Map<string, string>();
    const vhostd = await ActivatedVhostd.start(
      `${dir}/fs.sock`,
      ["fs", "--shared-dir", `${dir}/share`],
      { NOTIFY_SOCKET: notify.path },
    );
    let stopped: { code: number; output: string } | undefined;
    try {
      vhostd.trigger();
      ready = notify.next();
      assert.equal(ready.get("READY"), "1");
      {
        using fx = FsFixture.open(vhostd.socketPath);
        const entry = fx.driver.lookup(1n, "hello.txt");
        assert.equal(entry.attr.size, 6n);
      }
      stopped = await vhostd.stop("SIGTERM");
      assert.equal(notify.next().get("STOPPING"), "1");
    } finally {
      stopped ??= await vhostd.stop("SIGKILL");
    }
    assert.equal(stopped.code, 0, stopped.output);
    assert.doesNotMatch(stopped.output, /vhostd-fs\.sock/, "no socket path of its own");
    if (/sandbox: (namespace|chroot)/.test(stopped.output)) {
      // systemd watches the launcher, not the sandboxed daemon that notified.
      assert.equal(ready.get("MAINPID"), undefined);
    } else {
      assert.equal(ready.get("MAINPID"), String(vhostd.pid));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs `vhostd ARGS` from `sh -c SCRIPT` (which sets the variables and execs "$@"). */
async function refusedRun(script: string, args: string[]): Promise<{ code: number; err: string }> {
  const out = await new Deno.Command("sh", {
    args: ["-c", script, "sh", Deno.execPath(), "run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, err: new TextDecoder().decode(out.stderr) };
}

Deno.test("socket activation variables that are wrong are refused with exit code 2", async () => {
  const blk = ["blk", "--ram", "1M"];
  const other = await refusedRun('LISTEN_PID=1 LISTEN_FDS=1 exec "$@"', blk);
  assert.equal(other.code, 2, other.err);
  assert.match(other.err, /^vhostd: LISTEN_PID is 1, not this process \(\d+\)/);
  const two = await refusedRun('LISTEN_PID=$$ LISTEN_FDS=2 exec "$@"', blk);
  assert.equal(two.code, 2, two.err);
  assert.match(two.err, /LISTEN_FDS is 2: vhostd serves exactly one socket/);
  const notSocket = await refusedRun('LISTEN_PID=$$ LISTEN_FDS=1 exec "$@" 3</dev/null', blk);
  assert.equal(notSocket.code, 2, notSocket.err);
  assert.match(notSocket.err, /socket activation: fd 3 is not a socket/);
  const both = await refusedRun('LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', [...blk, "--fd", "5"]);
  assert.equal(both.code, 2, both.err);
  assert.match(both.err, /cannot be used under socket activation/);
});

const SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze";

/** The unit files the README shows: each ```ini block starting `# /etc/systemd/system/NAME`. */
function readmeUnits(): Map<string, string> {
  const readme = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
  const units = new Map<string, string>();
  for (const block of readme.matchAll(/```ini\n# \/etc\/systemd\/system\/(\S+)\n([^`]*)```/g)) {
    units.set(block[1], block[2]);
  }
  return units;
}

Deno.test("the README's systemd units pass systemd-analyze verify", async () => {
  try {
    Deno.statSync(SYSTEMD_ANALYZE);
  } catch {
    console.log(`${SYSTEMD_ANALYZE} missing (Debian package systemd): test skipped`);
    return;
  }
  const units = readmeUnits();
  assert.deepEqual([...units.keys()].sort(), [
    "vhostd-blk@.service",
    "vhostd-blk@.socket",
    "vhostd-fs@.service",
    "vhostd-fs@.socket",
  ]);
  const dir = await Deno.makeTempDir({ prefix: "vhostd-units-" });
  try {
    // verify wants ExecStart's binary to exist: a stand-in, the units otherwise verbatim.
    const binary = `${dir}/vhostd`;
    await Deno.writeTextFile(binary, "#!/bin/sh\n", { mode: 0o755 });
    for (const [name, text] of units) {
      await Deno.writeTextFile(`${dir}/${name}`, text.replaceAll("/usr/local/bin/vhostd", binary));
    }
    const instances = ["vhostd-blk@vm1.socket", "vhostd-blk@vm1.service"]
      .concat(["vhostd-fs@share1.socket", "vhostd-fs@share1.service"]);
    const out = await new Deno.Command(SYSTEMD_ANALYZE, {
      args: ["verify", ...instances.map((i) => `./${i}`)],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const report = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    // Lines about the host's own units (an older systemd than some of them) are not ours.
    const ours = report.split("\n").filter((line) => line.includes("vhostd"));
    assert.deepEqual(ours, [], report);
    assert.equal(out.code, 0, report);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
