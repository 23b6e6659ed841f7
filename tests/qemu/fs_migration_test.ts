/**
 * Live migration of a virtio-fs guest against QEMU 10, between two QEMU
 * processes whose `vhost-user-fs-pci` devices are served by two `vhostd fs`
 * processes on the same shared directory. QEMU 10 moves the back-end's
 * state (inodes the guest knows, its open files) through DEVICE_STATE:
 * SAVE on the source vhostd, LOAD on the destination's.
 *
 * The guest (see `migrationScript`) holds `held.bin` open for reading and
 * `appended.txt` open for appending across the migration, and afterwards
 * reads and writes through those fds, reads and lists other files and
 * creates one. The host checks what the guest printed and the files.
 *
 * Then the host deletes `held.bin` while the guest holds it open, before
 * migrating: the destination cannot find it again by its name, and vhostd's
 * `--migration-on-error` decides: `abort` fails the LOAD, so the migration
 * fails and the source guest runs on, still reading the open file through
 * its own vhostd; `guest-error` completes the migration and only that file
 * fails, with EIO, on the destination.
 */

import assert from "node:assert/strict";
import { guestQemuArgs, requireGuestEnvironment, writeTestInitrd } from "./harness.ts";
import {
  enableMigrationEvents,
  MIGRATION_ENDED,
  type MigrationStatus,
  QemuGuest,
  VhostdProcess,
  waitForMigrationStatus,
  waitForRunState,
} from "./migration_harness.ts";
import { fsBackendUnderTest, startFsBackend, stopBackend, vhostUserFsArgs } from "./fs_backend.ts";
import {
  APPENDED_TEXT,
  CREATED_AFTER_TEXT,
  heldFileBytes,
  LISTED_ENTRIES,
  manyEntryName,
  MIGRATED_COMMAND,
  migrationScript,
  OTHER_FILE_TEXT,
  prepareMigrationDir,
  sha256Hex,
  sortedNamesHash,
} from "./fs_guest_scripts.ts";

const BOOT_TIMEOUT_MS = 120_000;
const MIGRATION_TIMEOUT_MS = 120_000;
const GUEST_FINISH_TIMEOUT_MS = 120_000;
/** Migration bandwidth (bytes/s): guest RAM is mostly zero pages, this keeps it short. */
const BANDWIDTH = 1024 * 1024 * 1024;

/** One scenario's shared directory, processes and files, torn down by {@linkcode dispose}. */
class FsMigrationRig {
  readonly dir: string;
  readonly shared: string;
  readonly migrationUri: string;
  readonly backends: VhostdProcess[] = [];
  readonly guests: QemuGuest[] = [];
  readonly #initrd: string;
  readonly #vhostdArgs: string[];

  private constructor(dir: string, vhostdArgs: string[]) {
    this.dir = dir;
    this.shared = `${dir}/shared`;
    this.migrationUri = `unix:${dir}/migration.sock`;
    this.#initrd = `${dir}/initrd`;
    this.#vhostdArgs = vhostdArgs;
  }

  /** A temp dir with the prepared shared directory and the guest's initrd. */
  static async create(vhostdArgs: string[]): Promise<FsMigrationRig> {
    requireGuestEnvironment();
    const rig = new FsMigrationRig(
      await Deno.makeTempDir({ prefix: "vhostd-fs-migration-" }),
      vhostdArgs,
    );
    try {
      await Deno.mkdir(rig.shared);
      await prepareMigrationDir(rig.shared);
      await writeTestInitrd(rig.#initrd, migrationScript());
    } catch (error) {
      await rig.dispose();
      throw error;
    }
    return rig;
  }

  /** Starts a back-end on the shared directory and a QEMU using it (`incoming`: wait for a migration). */
  async startSide(name: string, incoming: boolean): Promise<[VhostdProcess, QemuGuest]> {
    const backend = await startFsBackend(fsBackendUnderTest(), {
      sharedDir: this.shared,
      socket: `${this.dir}/${name}-fs.sock`,
      logPath: `${this.dir}/${name}-backend.log`,
      vhostdArgs: this.#vhostdArgs,
    });
    this.backends.push(backend);
    const args = guestQemuArgs({
      initrd: this.#initrd,
      chardevs: vhostUserFsArgs(backend.socket),
      extraArgs: incoming ? ["-incoming", "defer"] : [],
    });
    const guest = await QemuGuest.start(name, args, `${this.dir}/${name}-qmp.sock`);
    this.guests.push(guest);
    return [backend, guest];
  }

  /**
   * Both sides, the destination waiting on the migration socket and the
   * source guest at `HELD-OPEN`; migration parameters set on both.
   */
  async startBothSides(): Promise<{
    sourceBackend: VhostdProcess;
    source: QemuGuest;
    destinationBackend: VhostdProcess;
    destination: QemuGuest;
  }> {
    const [sourceBackend, source] = await this.startSide("source", false);
    const [destinationBackend, destination] = await this.startSide("destination", true);
    // With a return path the source learns whether the destination loaded
    // the state, instead of calling the migration done once it was sent.
    for (const guest of [source, destination]) {
      await guest.qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "return-path", state: true }],
      });
      await enableMigrationEvents(guest);
    }
    await destination.qmp.execute("migrate-incoming", { uri: this.migrationUri });
    await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": BANDWIDTH });
    await source.waitForSerial(/^HELD-OPEN$/m, BOOT_TIMEOUT_MS);
    return { sourceBackend, source, destinationBackend, destination };
  }

  /** Migrates source to destination and waits for the outcome as the source sees it. */
  async migrate(source: QemuGuest): Promise<MigrationStatus> {
    await source.qmp.execute("migrate", { uri: this.migrationUri });
    return await waitForMigrationStatus(source, MIGRATION_ENDED, MIGRATION_TIMEOUT_MS);
  }

  /** Consoles, QEMU stderr and back-end logs, for a failed run. */
  async diagnostics(): Promise<string> {
    const parts: string[] = [];
    for (const guest of this.guests) {
      parts.push(
        `--- ${guest.name} console (tail) ---\n${guest.serial.slice(-3000)}`,
        `--- ${guest.name} QEMU stderr ---\n${guest.exited ? await guest.stderr : "(running)"}`,
      );
    }
    for (const backend of this.backends) {
      parts.push(`--- ${backend.logPath} (tail) ---\n${(await backend.log()).slice(-5000)}`);
    }
    return parts.join("\n");
  }

  /** Kills whatever still runs and removes the temp dir. */
  async dispose(): Promise<void> {
    await Promise.all(this.guests.map((guest) => guest.dispose()));
    await Promise.all(this.backends.map((backend) => backend.dispose()));
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** Runs `body` on a new rig, printing its diagnostics if it throws, and always disposing it. */
async function withRig(
  vhostdArgs: string[],
  body: (rig: FsMigrationRig) => Promise<void>,
): Promise<void> {
  const rig = await FsMigrationRig.create(vhostdArgs);
  try {
    await body(rig);
  } catch (error) {
    // Stopped first, so that their stderr is complete in the report.
    for (const guest of rig.guests) guest.kill("SIGKILL");
    await Promise.all(rig.guests.map((guest) => guest.status));
    console.error(await rig.diagnostics());
    throw error;
  } finally {
    await rig.dispose();
  }
}

/**
 * Types {@linkcode MIGRATED_COMMAND} on `guest`'s console and waits for the
 * script to finish and QEMU to power off; returns the script's output.
 */
async function finishGuest(guest: QemuGuest): Promise<string> {
  const from = guest.serialLines.length;
  await guest.type(`${MIGRATED_COMMAND}\n`);
  await guest.waitForSerial(/^RESUMED$/m, GUEST_FINISH_TIMEOUT_MS, from);
  const exit = await guest.waitForSerial(/^VHOSTD-TEST: EXIT (\d+)$/m, GUEST_FINISH_TIMEOUT_MS);
  const status = await guest.waitForExit(30_000);
  assert.ok(status !== null, `${guest.name} QEMU did not power off`);
  assert.equal(status.code, 0, `${guest.name} QEMU exit status`);
  await guest.serialClosed; // what QEMU printed last is read in too
  // A destination's console starts mid-script: the BEGIN marker went to the source's.
  const begin = guest.serialLines.indexOf("VHOSTD-TEST: BEGIN");
  const output = begin < 0 ? guest.serialLines : guest.serialLines.slice(begin);
  assert.match(output, /^FAILURES 0$/m, `${guest.name} guest script did not run to its end`);
  assert.doesNotMatch(output, /^FAIL /m, `${guest.name} guest checks failed`);
  assert.equal(exit[1], "0", `${guest.name} guest script exit status`);
  return output;
}

/** The guest's `KEY value` line; fails when there is none. */
function printed(output: string, key: string): string {
  const match = output.match(new RegExp(`^${key} (.+)$`, "m"));
  assert.ok(match !== null, `the guest printed no ${key} line`);
  return match[1];
}

/** Checks what a guest that finished its script did to the shared directory. */
async function checkSharedDir(rig: FsMigrationRig, output: string): Promise<void> {
  assert.equal(await Deno.readTextFile(`${rig.shared}/appended.txt`), APPENDED_TEXT);
  assert.equal(await Deno.readTextFile(`${rig.shared}/created-after.txt`), CREATED_AFTER_TEXT);
  assert.equal(await Deno.readTextFile(`${rig.shared}/other.txt`), OTHER_FILE_TEXT);
  assert.equal(
    printed(output, "LISTED-HASH"),
    await sortedNamesHash(Array.from({ length: LISTED_ENTRIES }, (_, i) => manyEntryName(i))),
    "the guest's listing of listed/ after the migration differs from the host's names",
  );
}

/** Stops a back-end that should still run and asserts a clean exit. */
async function stopCleanly(backend: VhostdProcess): Promise<void> {
  const status = await stopBackend(backend);
  assert.equal(status.code, 0, `${backend.logPath}: exit status ${status.code}`);
}

/** Ends the source QEMU after a completed migration (it sits in `postmigrate`). */
async function quitSource(source: QemuGuest): Promise<void> {
  await source.qmp.execute("quit").catch(() => {}); // QEMU may close QMP before answering
  assert.ok((await source.waitForExit(30_000)) !== null, "source QEMU did not quit");
}

/** A guest holding files open migrates between two back-ends started with `vhostdArgs`. */
function migrateHoldingFiles(vhostdArgs: string[]): Promise<void> {
  return withRig(vhostdArgs, async (rig) => {
    const { sourceBackend, source, destinationBackend, destination } = await rig
      .startBothSides();
    const result = await rig.migrate(source);
    assert.equal(result.status, "completed", `migration: ${JSON.stringify(result)}`);
    await waitForRunState(source, "postmigrate", 30_000);
    await waitForRunState(destination, "running", 30_000);

    const output = await finishGuest(destination);
    assert.equal(
      printed(output, "HELD-READ"),
      await sha256Hex(heldFileBytes()),
      "the file held open across the migration read back other bytes",
    );
    await checkSharedDir(rig, output);
    await quitSource(source);
    for (const backend of [sourceBackend, destinationBackend]) await stopCleanly(backend);
    if (fsBackendUnderTest() === "vhostd") {
      assert.match(await sourceBackend.log(), /device state save done/);
      const destinationLog = await destinationBackend.log();
      assert.match(destinationLog, /device state load done/);
      assert.doesNotMatch(destinationLog, /fs restore:/, "the destination lost something");
    }
    console.log(`migrated in ${result["total-time"]} ms (downtime ${result.downtime} ms)`);
  });
}

Deno.test("live migration of a virtio-fs guest holding files open between two vhostd back-ends", () =>
  migrateHoldingFiles([]));

Deno.test("live migration holding files open with --inode-file-handles prefer on both sides", () =>
  migrateHoldingFiles(["--inode-file-handles", "prefer"]));

Deno.test("live migration holding files open with --migration-mode file-handles", () =>
  migrateHoldingFiles(["--migration-mode", "file-handles"]));

Deno.test("--migration-on-error abort: a held file the destination cannot find fails the migration, the source runs on", () =>
  withRig(["--migration-on-error", "abort"], async (rig) => {
    const { sourceBackend, source, destinationBackend, destination } = await rig
      .startBothSides();
    // The guest holds it open; on the host only its name goes.
    await Deno.remove(`${rig.shared}/held.bin`);
    const result = await rig.migrate(source);
    assert.equal(result.status, "failed", `migration: ${JSON.stringify(result)}`);
    await waitForRunState(source, "running", 30_000);

    const destinationStatus = await destination.waitForExit(60_000);
    assert.ok(destinationStatus !== null, "the destination QEMU did not give up");
    assert.notEqual(destinationStatus.code, 0, "the destination QEMU exited as if all was well");
    const destinationLog = await destinationBackend.waitForLog(/device state load/, 30_000);
    assert.match(destinationLog, /held\.bin|unlinked|cannot be (found|restored)/i);

    const output = await finishGuest(source);
    assert.equal(
      printed(output, "HELD-READ"),
      await sha256Hex(heldFileBytes()),
      "after the failed migration the source guest read other bytes from its open file",
    );
    await checkSharedDir(rig, output);
    for (const backend of [sourceBackend, destinationBackend]) await stopCleanly(backend);
    console.log(`migration failed as it should: ${result["error-desc"]}`);
  }));

Deno.test("--migration-on-error guest-error: the migration completes, the lost file gives EIO, others work", () =>
  withRig(["--migration-on-error", "guest-error"], async (rig) => {
    const { sourceBackend, source, destinationBackend, destination } = await rig
      .startBothSides();
    await Deno.remove(`${rig.shared}/held.bin`);
    const result = await rig.migrate(source);
    assert.equal(result.status, "completed", `migration: ${JSON.stringify(result)}`);
    await waitForRunState(source, "postmigrate", 30_000);
    await waitForRunState(destination, "running", 30_000);

    const output = await finishGuest(destination);
    assert.match(printed(output, "HELD-ERROR"), /Input\/output error/);
    assert.doesNotMatch(output, /^HELD-READ /m);
    await checkSharedDir(rig, output);
    await quitSource(source);
    for (const backend of [sourceBackend, destinationBackend]) await stopCleanly(backend);
    assert.match(await destinationBackend.log(), /device state load done/);
    console.log(`migrated in ${result["total-time"]} ms with the lost file: EIO in the guest`);
  }));
