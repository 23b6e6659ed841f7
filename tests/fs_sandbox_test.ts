/**
 * `vhostd fs --sandbox`: what the serving process can reach and hold, read
 * from the host through /proc: its root (a read-only tmpfs with only the
 * share, /proc and the program), its mount and PID namespaces, the
 * capabilities and seccomp mode of EVERY thread (capabilities are per
 * thread), its open directories; that it keeps serving new front-ends;
 * that it dies with its launcher; and the `none` mode and bad requests.
 */

import assert from "node:assert/strict";
import { capabilityMask, keptCapabilities, threadCapabilities } from "../src/sandbox/mod.ts";
import { FsFixture, makeTestDirs, withVhostdFs } from "./support/fs_fixture.ts";
import { runVhostdCli, saveToBytes } from "./support/state_tools.ts";
import { VhostdProcess } from "./support/vhostd_process.ts";
import { namespacesWork } from "./support/namespaces.ts";

const NAMESPACES = namespacesWork();
const SKIP_REASON = " (skipped: cannot create mount and PID namespaces here)";
if (!NAMESPACES) console.log(`fs sandbox namespace tests SKIPPED ${SKIP_REASON}`);

function identity(path: string): string {
  const info = Deno.statSync(path);
  return `${info.dev}:${info.ino}`;
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Mount points of process `pid` (field 5 of /proc/PID/mountinfo) with their options. */
function mountsOf(pid: number): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const line of Deno.readTextFileSync(`/proc/${pid}/mountinfo`).trim().split("\n")) {
    const fields = line.split(" ");
    mounts.set(fields[4], fields[5]);
  }
  return mounts;
}

const programDirs = ["../src", "../ffi"].map((dir) =>
  Deno.realPathSync(new URL(dir, import.meta.url).pathname)
);

Deno.test({
  name: `fs sandbox: by default the daemon's root holds only the share, /proc and the program${
    NAMESPACES ? "" : SKIP_REASON
  }`,
  ignore: !NAMESPACES,
  fn: async () => {
    await withVhostdFs([], (vhostd, dirs) => {
      Deno.writeTextFileSync(`${dirs.outside}/secret`, "host only");
      const share = Deno.realPathSync(dirs.share);
      const pid = vhostd.daemonPid();
      assert.notEqual(pid, vhostd.pid, "no sandboxed daemon under the launcher");
      assert.match(vhostd.log(), /sandbox: namespace/);
      const root = `/proc/${pid}/root`;
      // Its own namespaces: other mounts, and it is PID 1 of a PID namespace that holds
      // nothing else (so its /proc shows no host process).
      for (const ns of ["mnt", "pid"]) {
        assert.notEqual(
          Deno.readLinkSync(`/proc/${pid}/ns/${ns}`),
          Deno.readLinkSync(`/proc/self/ns/${ns}`),
          `${ns} namespace is the host's`,
        );
      }
      const nspid = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^NSpid:\s*(.*)$/m)![1];
      assert.equal(nspid.split(/\s+/).at(-1), "1");
      // Its /proc has only process directories (subset=pid), and only its own.
      const procEntries = [...Deno.readDirSync(`${root}/proc`)].map((e) => e.name).sort();
      assert.deepEqual(procEntries, ["1", "self", "thread-self"]);
      // The share is the host's directory; nothing else of the host is there.
      assert.equal(identity(`${root}${share}`), identity(share));
      assert.notEqual(identity(root), identity("/"));
      assert.equal(identity(`/proc/${pid}/cwd`), identity(root), "working directory");
      for (const hostPath of [`${dirs.outside}/secret`, "/etc/passwd", Deno.execPath(), "/tmp"]) {
        if (share.startsWith(`${hostPath}/`)) continue;
        assert.equal(exists(`${root}${hostPath}`), false, `${hostPath} is reachable`);
      }
      const mounts = mountsOf(pid);
      assert.deepEqual(
        [...mounts.keys()].sort(),
        ["/", "/proc", share, ...programDirs].sort(),
      );
      assert.match(mounts.get("/")!, /^ro,/, "the tmpfs root is writable");
      for (const dir of programDirs) assert.match(mounts.get(dir)!, /^ro,/, `${dir} is writable`);
      assert.match(mounts.get(share)!, /^rw,/);
      assert.match(mounts.get("/proc")!, /^rw,nosuid,nodev,noexec,/);
      // No open directory leads anywhere but into the share, and no open file into the
      // host's Deno cache (a V8 code cache other Deno programs would trust).
      const hostDenoDir = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
      for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
        const fdPath = `/proc/${pid}/fd/${entry.name}`;
        let link: string;
        try {
          link = Deno.readLinkSync(fdPath);
        } catch {
          continue; // closed meanwhile
        }
        assert.ok(!link.startsWith(`${hostDenoDir}/`), `fd ${entry.name}: ${link}`);
        let info: Deno.FileInfo;
        try {
          info = Deno.statSync(fdPath);
        } catch {
          continue; // closed meanwhile
        }
        if (!info.isDirectory) continue;
        const target = Deno.readLinkSync(fdPath);
        assert.ok(
          target === share || target.startsWith(`${share}/`),
          `fd ${entry.name}: ${target}`,
        );
      }
      // It serves front-ends one after the other, after the switch as before.
      Deno.writeTextFileSync(`${dirs.share}/hello`, "hello");
      for (let session = 0; session < 2; session++) {
        using fs = FsFixture.open(vhostd.socketPath);
        assert.ok(fs.driver.lookup(1n, "hello").nodeid > 1n, `session ${session}`);
      }
    });
  },
});

Deno.test({
  name: `fs sandbox: every thread keeps only virtiofsd's capabilities and has the seccomp filter${
    NAMESPACES ? "" : SKIP_REASON
  }`,
  ignore: !NAMESPACES,
  fn: async () => {
    await withVhostdFs(["--sandbox", "namespace"], (vhostd) => {
      // A session first, so the queue Workers' threads exist.
      using fs = FsFixture.open(vhostd.socketPath);
      assert.ok(fs.driver.lookup(1n, ".").nodeid >= 1n);
      const threads = threadCapabilities(vhostd.daemonPid());
      assert.ok(threads.length > 4, `only ${threads.length} threads`);
      const kept = capabilityMask(keptCapabilities());
      for (const thread of threads) {
        const where = `thread ${thread.tid}`;
        assert.equal(thread.effective.toString(16), kept.toString(16), `${where} CapEff`);
        assert.equal(thread.permitted.toString(16), kept.toString(16), `${where} CapPrm`);
        assert.equal(thread.bounding.toString(16), kept.toString(16), `${where} CapBnd`);
        assert.equal(thread.seccomp, 2, `${where} Seccomp`);
        assert.equal(thread.noNewPrivs, true, `${where} NoNewPrivs`);
      }
    });
  },
});

Deno.test({
  name: `fs sandbox: the daemon dies with its launcher, even by SIGKILL${
    NAMESPACES ? "" : SKIP_REASON
  }`,
  ignore: !NAMESPACES,
  fn: async () => {
    const dirs = await makeTestDirs();
    try {
      const vhostd = await VhostdProcess.start({
        command: "fs",
        args: ["--shared-dir", dirs.share],
        dir: dirs.root,
      });
      const daemon = vhostd.daemonPid();
      assert.notEqual(daemon, vhostd.pid);
      const status = await vhostd.stop("SIGKILL");
      assert.equal(status.signal, "SIGKILL");
      // The chain's parent-death signals take the daemon down; wait for its /proc entry to go.
      while (exists(`/proc/${daemon}/status`)) {
        const state = Deno.readTextFileSync(`/proc/${daemon}/status`).match(/^State:\s*(\S)/m);
        if (state?.[1] === "Z") break; // dead, only not reaped yet
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      await Deno.remove(dirs.root, { recursive: true });
    }
  },
});

Deno.test({
  name: `fs sandbox: a SAVE inside the sandbox works and --dump-state still reaches its directory${
    NAMESPACES ? "" : SKIP_REASON
  }`,
  ignore: !NAMESPACES,
  fn: async () => {
    const dirs = await makeTestDirs();
    const dumps = `${dirs.root}/dumps`;
    Deno.mkdirSync(dumps);
    try {
      await withVhostdFs(["--dump-state", dumps], (vhostd) => {
        assert.match(vhostd.log(), /sandbox: namespace/);
        using fs = FsFixture.open(vhostd.socketPath);
        fs.driver.mkdir(1n, "made-in-the-sandbox");
        fs.driver.stopAll();
        const state = saveToBytes(fs.client);
        assert.ok(state.length > 0);
        const copies = [...Deno.readDirSync(dumps)].map((e) => e.name);
        assert.equal(copies.length, 1, `dumps: ${copies.join(", ")}`);
        assert.match(copies[0], /^fs-.*-save\.vhostd-state$/);
        assert.deepEqual(Deno.readFileSync(`${dumps}/${copies[0]}`), state);
      }, dirs);
    } finally {
      await Deno.remove(dirs.root, { recursive: true });
    }
  },
});

Deno.test("fs sandbox: --sandbox none serves from the host's root, without a filter", async () => {
  await withVhostdFs(["--sandbox", "none"], (vhostd) => {
    const pid = vhostd.daemonPid();
    assert.equal(pid, vhostd.pid);
    assert.match(vhostd.log(), /sandbox: none/);
    assert.equal(identity(`/proc/${pid}/root`), identity("/"));
    assert.equal(threadCapabilities(pid)[0].seccomp, 0);
    using fs = FsFixture.open(vhostd.socketPath);
    assert.ok(fs.driver.lookup(1n, ".").nodeid >= 1n);
  });
});

Deno.test("fs sandbox: a bad or unavailable --sandbox is one line and exit code 2", async () => {
  const dirs = await makeTestDirs();
  try {
    const base = ["fs", "--shared-dir", dirs.share, "--socket-path", `${dirs.root}/never.sock`];
    const bad = await runVhostdCli([...base, "--sandbox", "jail"]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /^vhostd: --sandbox must be namespace, chroot or none, got "jail"\n$/);
    // Under deno run the chroot (the share itself) would hide the Worker modules.
    const chroot = await runVhostdCli([...base, "--sandbox", "chroot"]);
    assert.equal(chroot.code, 2, chroot.stderr);
    assert.match(chroot.stderr, /^vhostd: --sandbox chroot is not available: .*compiled binary/);
    assert.equal(chroot.stderr.trim().split("\n").length, 1, chroot.stderr);
    assert.equal(exists(`${dirs.root}/never.sock`), false);
  } finally {
    await Deno.remove(dirs.root, { recursive: true });
  }
});
