/**
 * Live migration with vhost-user-vsock: QEMU 10 marks the device
 * unmigratable (hw/virtio/vhost-user-vsock.c, `vuv_vmstate` has
 * `.unmigratable = 1`), so a `migrate` is refused before any state moves.
 * This test pins that fact: should a QEMU allow it, it fails, and vhostd's
 * part (connections reset, QEMU's own transport-reset event on the
 * destination) needs an end-to-end test of its own.
 */

import assert from "node:assert/strict";
import { guestQemuArgs, requireGuestEnvironment, writeTestInitrd } from "./harness.ts";
import { QemuGuest, VhostdProcess } from "./migration_harness.ts";
import { QmpCommandError } from "./qmp.ts";

const MAIN_TS = new URL("../../main.ts", import.meta.url).pathname;

Deno.test("QEMU 10 refuses to migrate a VM with vhost-user-vsock-pci (unmigratable device)", async () => {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-vsock-mig-" });
  const socket = `${dir}/vhost.sock`;
  let vhostd: VhostdProcess | undefined;
  let guest: QemuGuest | undefined;
  try {
    vhostd = await VhostdProcess.startCommand({
      command: Deno.execPath(),
      args: [
        "run",
        "-A",
        MAIN_TS,
        "vsock",
        "--guest-cid",
        "3",
        "--uds-path",
        `${dir}/vsock`,
        "--socket-path",
        socket,
      ],
      socket,
      logPath: `${dir}/vhostd.log`,
    });
    const initrd = `${dir}/initrd`;
    await writeTestInitrd(initrd, "sleep 600");
    guest = await QemuGuest.start("source", [
      ...guestQemuArgs({
        initrd,
        chardevs: [
          "-chardev",
          `socket,id=vhostd0,path=${socket}`,
          "-device",
          "vhost-user-vsock-pci,chardev=vhostd0",
        ],
      }),
    ], `${dir}/qmp.sock`);
    await assert.rejects(
      guest.qmp.execute("migrate", { uri: `exec:cat > /dev/null` }),
      (e) =>
        e instanceof QmpCommandError && /non-migratable device .*vhost-user-vsock/.test(e.message),
    );
    await guest.qmp.execute("quit").catch(() => {});
  } finally {
    await guest?.dispose();
    await vhostd?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
