/**
 * Live migration with vhost-user-vsock and vhost-user-rng: QEMU 10 marks both
 * devices unmigratable (hw/virtio/vhost-user-vsock.c's `vuv_vmstate` and
 * hw/virtio/vhost-user-rng.c's `vu_rng_vmstate` have `.unmigratable = 1`), so
 * a `migrate` is refused before any state moves. These tests pin that fact:
 * should a QEMU allow it, they fail, and vhostd's part (vsock connections
 * reset and QEMU's own transport-reset event on the destination; the rng
 * budget moved) needs an end-to-end test of its own. Until then their state
 * moves only through `vhostd state save/load`.
 */

import assert from "node:assert/strict";
import { guestQemuArgs, requireGuestEnvironment, writeTestInitrd } from "./harness.ts";
import { QemuGuest, VhostdProcess } from "./migration_harness.ts";
import { QmpCommandError } from "./qmp.ts";

/** Starts `vhostd KIND ARGS` and a guest with `qemuDevice`, and expects `migrate` to be refused. */
async function expectMigrationRefused(
  kind: string,
  args: (dir: string) => string[],
  qemuDevice: string,
  refusal: RegExp,
): Promise<void> {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: `vhostd-${kind}-mig-` });
  const socket = `${dir}/vhost.sock`;
  let vhostd: VhostdProcess | undefined;
  let guest: QemuGuest | undefined;
  try {
    vhostd = await VhostdProcess.startKind(kind, args(dir), dir);
    const initrd = `${dir}/initrd`;
    await writeTestInitrd(initrd, "sleep 600");
    guest = await QemuGuest.start("source", [
      ...guestQemuArgs({
        initrd,
        chardevs: ["-chardev", `socket,id=vhostd0,path=${socket}`, "-device", qemuDevice],
      }),
    ], `${dir}/qmp.sock`);
    await assert.rejects(
      guest.qmp.execute("migrate", { uri: `exec:cat > /dev/null` }),
      (e) => e instanceof QmpCommandError && refusal.test(e.message),
    );
    await guest.qmp.execute("quit").catch(() => {});
  } finally {
    await guest?.dispose();
    await vhostd?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("QEMU 10 refuses to migrate a VM with vhost-user-vsock-pci (unmigratable device)", () =>
  expectMigrationRefused(
    "vsock",
    (dir) => ["--guest-cid", "3", "--uds-path", `${dir}/vsock`],
    "vhost-user-vsock-pci,chardev=vhostd0",
    /non-migratable device .*vhost-user-vsock/,
  ));

Deno.test("QEMU 10 refuses to migrate a VM with vhost-user-rng-pci (unmigratable device)", () =>
  expectMigrationRefused(
    "rng",
    () => [],
    "vhost-user-rng-pci,chardev=vhostd0",
    /non-migratable device .*vhost-user-rng/,
  ));
