/**
 * End to end against QEMU 10 with the fs sandbox: one `vhostd fs` (default
 * sandbox, namespace mode) serves two guests in turn; each mounts the share,
 * reads what the host and the previous guest wrote and writes a file of its
 * own. While a guest runs, the daemon's root on the host is not the host's
 * root and holds the share, and every thread carries the seccomp filter.
 */

import assert from "node:assert/strict";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import { VhostdProcess } from "./migration_harness.ts";
import { stopBackend, vhostUserFsArgs } from "./fs_backend.ts";
import { servingProcess } from "../support/process_tree.ts";
import { threadCapabilities } from "../../src/sandbox/mod.ts";
import { namespacesWork } from "../support/namespaces.ts";

const NAMESPACES = namespacesWork();

function identity(path: string): string {
  const info = Deno.statSync(path);
  return `${info.dev}:${info.ino}`;
}

/** Guest `n`: reads the host's file and guest n-1's, writes its own, unmounts. */
function guestScript(n: number): string {
  return `
set -e
mount -t virtiofs vhostd /mnt
echo "HOST $(cat /mnt/from-host)"
${n > 1 ? `echo "PREVIOUS $(cat /mnt/guest-${n - 1})"` : ""}
echo "guest ${n}" > /mnt/guest-${n}
ls /mnt/.. > /dev/null
umount /mnt
echo "DONE ${n}"
`;
}

Deno.test({
  name: `virtio-fs sandbox: one sandboxed vhostd serves two guests in turn${
    NAMESPACES ? "" : " (skipped: cannot create mount and PID namespaces here)"
  }`,
  ignore: !NAMESPACES,
  fn: async () => {
    requireGuestEnvironment();
    const dir = await Deno.makeTempDir({ prefix: "vhostd-fs-sandbox-e2e-" });
    const shared = `${dir}/shared`;
    await Deno.mkdir(shared);
    await Deno.writeTextFile(`${shared}/from-host`, "hello");
    let backend: VhostdProcess | undefined;
    try {
      backend = await VhostdProcess.startFs({
        sharedDir: shared,
        socket: `${dir}/fs.sock`,
        logPath: `${dir}/backend.log`,
      });
      const daemon = servingProcess(backend.pid);
      assert.notEqual(daemon, backend.pid, "no sandboxed daemon under the launcher");
      for (const n of [1, 2]) {
        const guest = runGuest({
          script: guestScript(n),
          chardevs: vhostUserFsArgs(backend.socket),
          timeoutMs: 100_000,
        });
        // While the guest runs: the daemon is confined, on every thread.
        assert.notEqual(identity(`/proc/${daemon}/root`), identity("/"));
        assert.equal(
          identity(`/proc/${daemon}/root${await Deno.realPath(shared)}`),
          identity(shared),
        );
        for (const thread of threadCapabilities(daemon)) assert.equal(thread.seccomp, 2);
        const result = await guest;
        assert.equal(
          result.timedOut,
          false,
          `guest ${n} timed out:\n${result.output.slice(-3000)}`,
        );
        assert.equal(result.exitCode, 0, `guest ${n} failed:\n${result.output.slice(-3000)}`);
        assert.match(result.scriptOutput, /^HOST hello$/m);
        if (n > 1) assert.match(result.scriptOutput, new RegExp(`^PREVIOUS guest ${n - 1}$`, "m"));
        assert.match(result.scriptOutput, new RegExp(`^DONE ${n}$`, "m"));
        assert.equal(await Deno.readTextFile(`${shared}/guest-${n}`), `guest ${n}\n`);
      }
      const log = await backend.log();
      assert.match(log, /sandbox: namespace/);
      assert.match(log, /session 2/, "the second guest was not a new session");
      const status = await stopBackend(backend);
      assert.equal(status.code, 0, `vhostd exit status; log:\n${log.slice(-3000)}`);
    } catch (error) {
      console.error(`--- vhostd log (tail) ---\n${(await backend?.log())?.slice(-6000)}`);
      throw error;
    } finally {
      await backend?.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
