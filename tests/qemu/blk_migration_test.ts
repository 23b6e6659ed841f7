/**
 * Live migration end to end against QEMU 10: a TCG guest whose disk is a
 * `vhost-user-blk-pci` device served by vhostd keeps writing numbered 4 KiB
 * records to /dev/vda (reading each one back) while QEMU migrates it to a
 * second QEMU whose device is served by a second vhostd on the same image.
 * vhost-user-blk moves no back-end state: QEMU migrates guest RAM, which
 * vhostd writes behind QEMU's back, so the destination is right only if
 * vhostd's dirty-page log (VHOST_F_LOG_ALL, SET_LOG_BASE, logged used rings)
 * names every page it wrote. A page-cache check makes a missing log show
 * (see GUEST_SCRIPT); with logging switched off in vhostd the first test
 * fails there.
 *
 * The second test kills the destination mid-migration: the source must see
 * the migration fail, keep running and keep being served by its vhostd.
 *
 * In both the guest writes until the host types `STOP` on its serial
 * console, then reads every record back and checks it; the host then stops
 * the back-ends and checks the image bytes.
 */

import assert from "node:assert/strict";
import { guestQemuArgs, requireGuestEnvironment, writeTestInitrd } from "./harness.ts";
import { QemuGuest, VhostdProcess } from "./migration_harness.ts";

const MiB = 1024 * 1024;
const IMAGE_SIZE = 64 * MiB;
const RECORD_SIZE = 4096;
/** Records the guest writes at most (keeps it inside the image if STOP never comes). */
const MAX_RECORDS = 8192;
/** First block of the region the host fills before boot and the guest only reads. */
const CACHED_START = MAX_RECORDS;
/** Blocks in that region (16 MiB). */
const CACHED_BLOCKS = 4096;
/** Blocks of it the guest reads into its page cache per round once told to (2 MiB). */
const CACHED_CHUNK = 512;
/** Blocks per `CACHED i HASH` line (1 MiB). */
const HASHED_CHUNK = 256;
/** Records written before the host starts the migration. */
const RECORDS_BEFORE_MIGRATION = 20;
/** Records the guest must write after the migration ended before the host stops it. */
const RECORDS_AFTER_MIGRATION = 15;
/** Records the source guest must write while dirty pages are being logged. */
const RECORDS_DURING_MIGRATION = 5;
/** Migration bandwidth (bytes/s) for the live phase: the first pass takes a few seconds. */
const LIVE_BANDWIDTH = 32 * MiB;
/** Migration bandwidth (bytes/s) that holds a migration after its first pass. */
const HOLD_BANDWIDTH = 256 * 1024;
/** Migration bandwidth (bytes/s) that keeps a migration copying for many seconds. */
const SLOW_BANDWIDTH = 4 * MiB;
const BOOT_TIMEOUT_MS = 45_000;
const MIGRATION_TIMEOUT_MS = 60_000;

/**
 * The guest's `/test.sh`. Record k is the 16-byte line `REC%012d\n` of k
 * repeated to fill 4 KiB, written at block k with O_DIRECT and read back at
 * once. Progress goes to the console as `REC k`. A background reader turns
 * each line the host types on the console (`CACHE`, `STOP`) into a file.
 *
 * After `CACHE`, each round also reads the next 2 MiB of the pre-filled
 * region through the page cache. So many pages at once come mostly from
 * memory the guest CPU has not touched for a while, and with
 * `init_on_alloc=0` the CPU does not clear them either: vhostd's write is
 * the only change, and only vhostd's dirty log tells QEMU to send such a
 * page again. After `STOP` the guest hashes the region from its cache
 * (before dropping caches) 1 MiB at a time: a stale page shows. The script
 * holds /dev/vda open throughout: Linux drops a block device's page cache
 * when its last opener closes it.
 */
const GUEST_SCRIPT = `
exec 3</dev/vda
while read -r line; do
  case "$line" in CACHE|STOP) : >"/tmp/ctl-$line" ;; esac
done </dev/ttyS0 &
k=0
cached=0
: >/tmp/all
while [ ! -e /tmp/ctl-STOP ] && [ $k -lt ${MAX_RECORDS} ]; do
  yes "$(printf 'REC%012d' $k)" | head -c ${RECORD_SIZE} >/tmp/r
  if ! dd if=/tmp/r of=/dev/vda bs=${RECORD_SIZE} seek=$k count=1 oflag=direct conv=fsync 2>/tmp/err; then
    echo "WRITE-FAILED $k"; cat /tmp/err; exit 1
  fi
  if ! dd if=/dev/vda of=/tmp/c bs=${RECORD_SIZE} skip=$k count=1 iflag=direct 2>/tmp/err; then
    echo "READ-FAILED $k"; cat /tmp/err; exit 1
  fi
  if ! cmp -s /tmp/r /tmp/c; then echo "CHECK-FAILED $k"; exit 1; fi
  cat /tmp/r >>/tmp/all
  if [ -e /tmp/ctl-CACHE ] && [ $cached -lt ${CACHED_BLOCKS} ]; then
    dd if=/dev/vda of=/dev/null bs=${RECORD_SIZE} skip=$((${CACHED_START} + cached)) \\
      count=${CACHED_CHUNK} 2>/dev/null
    cached=$((cached + ${CACHED_CHUNK}))
    echo "CACHE-READ $cached"
  fi
  echo "REC $k"
  k=$((k + 1))
done
echo "WROTE $k"
i=0
while [ $i -lt $((${CACHED_BLOCKS} / ${HASHED_CHUNK})) ]; do
  hash=$(dd if=/dev/vda bs=${RECORD_SIZE} skip=$((${CACHED_START} + i * ${HASHED_CHUNK})) \\
    count=${HASHED_CHUNK} 2>/dev/null | sha256sum)
  echo "CACHED $i \${hash%% *}"
  i=$((i + 1))
done
sync
echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/back bs=${RECORD_SIZE} count=$k iflag=direct 2>/tmp/err || { cat /tmp/err; exit 1; }
if cmp /tmp/all /tmp/back; then echo "VERIFY-OK $k"; else echo "VERIFY-FAILED"; exit 1; fi
`;

/** Block j of the pre-filled region: the 16-byte line `DATA%011d\n` of j, repeated. */
function cachedBlock(j: number): Uint8Array {
  const line = `DATA${String(j).padStart(11, "0")}\n`;
  return new TextEncoder().encode(line.repeat(RECORD_SIZE / line.length));
}

/** Blocks `first`..`first + count - 1` of the pre-filled region. */
function cachedRegion(first: number, count: number): Uint8Array {
  const region = new Uint8Array(count * RECORD_SIZE);
  for (let j = 0; j < count; j++) region.set(cachedBlock(first + j), j * RECORD_SIZE);
  return region;
}

/** Lower-case hex SHA-256 of `bytes`, as `sha256sum` prints it. */
async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes.slice().buffer as ArrayBuffer),
  );
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Record k as the guest writes it. */
function expectedRecord(k: number): Uint8Array {
  const line = `REC${String(k).padStart(12, "0")}\n`;
  return new TextEncoder().encode(line.repeat(RECORD_SIZE / line.length));
}

/**
 * Asserts that the image holds records 0..count-1, zeros up to the
 * pre-filled region, that region unchanged, and zeros after it.
 */
async function checkImage(image: string, count: number): Promise<void> {
  const bytes = await Deno.readFile(image);
  assert.equal(bytes.length, IMAGE_SIZE, "image size changed");
  for (let k = 0; k < count; k++) {
    const at = k * RECORD_SIZE;
    const expected = expectedRecord(k);
    const actual = bytes.subarray(at, at + RECORD_SIZE);
    assert.ok(
      actual.every((b, i) => b === expected[i]),
      `image block ${k} does not hold record ${k}: ${
        JSON.stringify(new TextDecoder().decode(actual.subarray(0, 32)))
      }...`,
    );
  }
  const gap = bytes.subarray(count * RECORD_SIZE, CACHED_START * RECORD_SIZE);
  assert.ok(gap.every((b) => b === 0), `bytes after record ${count - 1} were written`);
  const regionEnd = (CACHED_START + CACHED_BLOCKS) * RECORD_SIZE;
  const region = bytes.subarray(CACHED_START * RECORD_SIZE, regionEnd);
  for (let j = 0; j < CACHED_BLOCKS; j++) {
    const expected = cachedBlock(j);
    const actual = region.subarray(j * RECORD_SIZE, (j + 1) * RECORD_SIZE);
    assert.ok(actual.every((b, i) => b === expected[i]), `read-only region block ${j} changed`);
  }
  assert.ok(bytes.subarray(regionEnd).every((b) => b === 0), "bytes after the region were written");
}

/**
 * Checks the `CACHED i HASH` lines: the guest's view of the pre-filled
 * region (from its page cache where it was read before) matches the disk,
 * 1 MiB at a time.
 */
async function checkCachedRegion(guest: QemuGuest): Promise<void> {
  const hashes = new Map<number, string>();
  for (const match of guest.serial.matchAll(/^CACHED (\d+) ([0-9a-f]{64})$/gm)) {
    hashes.set(Number(match[1]), match[2]);
  }
  const chunks = CACHED_BLOCKS / HASHED_CHUNK;
  const differing: number[] = [];
  for (let i = 0; i < chunks; i++) {
    const hash = hashes.get(i);
    assert.ok(hash !== undefined, `${guest.name} console has no CACHED ${i} line`);
    if (hash !== await sha256Hex(cachedRegion(i * HASHED_CHUNK, HASHED_CHUNK))) differing.push(i);
  }
  assert.deepEqual(
    differing,
    [],
    `the guest's page cache of the pre-filled region differs from the disk in MiB ${differing}: ` +
      "pages vhostd filled during the migration were not sent again, so its dirty log missed them",
  );
}

/** The largest `REC k` on a console so far, or -1. */
function lastRecord(serial: string): number {
  let last = -1;
  for (const match of serial.matchAll(/^REC (\d+)$/gm)) last = Math.max(last, Number(match[1]));
  return last;
}

/** The part of `query-migrate`'s answer the tests read. */
interface MigrationStatus {
  status: string;
  "error-desc"?: string;
  "total-time"?: number;
  downtime?: number;
  ram?: { transferred: number; total: number; remaining: number; "dirty-sync-count": number };
}

/** Polls `query-migrate` on `guest` until `done` accepts the status. */
async function pollMigration(
  guest: QemuGuest,
  done: (status: MigrationStatus) => boolean,
  timeoutMs: number,
  intervalMs = 100,
): Promise<MigrationStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: MigrationStatus = { status: "none" };
  while (Date.now() < deadline) {
    last = await guest.qmp.execute<MigrationStatus>("query-migrate");
    if (done(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`migration did not get there in ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

/** Polls `query-status` until QEMU reports `want`. */
async function waitForRunState(guest: QemuGuest, want: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    last = (await guest.qmp.execute<{ status: string }>("query-status")).status;
    if (last === want) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${guest.name} QEMU is "${last}", expected "${want}"`);
}

/** One migration scenario's processes and files, torn down by {@linkcode dispose}. */
class MigrationRig {
  readonly dir: string;
  readonly image: string;
  readonly migrationSocket: string;
  readonly vhostds: VhostdProcess[] = [];
  readonly guests: QemuGuest[] = [];
  #initrd: string;

  private constructor(dir: string) {
    this.dir = dir;
    this.image = `${dir}/disk.img`;
    this.migrationSocket = `${dir}/migration.sock`;
    this.#initrd = `${dir}/initrd`;
  }

  /** A temp dir with the image and the guest's initrd. */
  static async create(): Promise<MigrationRig> {
    requireGuestEnvironment();
    const rig = new MigrationRig(await Deno.makeTempDir({ prefix: "vhostd-migration-" }));
    try {
      const file = await Deno.open(rig.image, { create: true, write: true });
      try {
        await file.truncate(IMAGE_SIZE);
        await file.seek(CACHED_START * RECORD_SIZE, Deno.SeekMode.Start);
        const region = cachedRegion(0, CACHED_BLOCKS);
        let written = 0;
        while (written < region.length) written += await file.write(region.subarray(written));
      } finally {
        file.close();
      }
      await writeTestInitrd(rig.#initrd, GUEST_SCRIPT);
    } catch (error) {
      await rig.dispose();
      throw error;
    }
    return rig;
  }

  /** Starts a vhostd on the image and a QEMU using it (`incoming`: wait for a migration). */
  async startSide(name: string, incoming: boolean): Promise<[VhostdProcess, QemuGuest]> {
    const vhostd = await VhostdProcess.start({
      image: this.image,
      socket: `${this.dir}/${name}-vhostd.sock`,
      logPath: `${this.dir}/${name}-vhostd.log`,
    });
    this.vhostds.push(vhostd);
    const args = guestQemuArgs({
      initrd: this.#initrd,
      chardevs: [
        "-chardev",
        `socket,id=c0,path=${vhostd.socket}`,
        "-device",
        "vhost-user-blk-pci,chardev=c0,num-queues=1",
      ],
      // Page-cache pages then hold only what vhostd put there (see GUEST_SCRIPT).
      kernelArgs: ["init_on_alloc=0"],
      extraArgs: incoming ? ["-incoming", "defer"] : [],
    });
    const guest = await QemuGuest.start(name, args, `${this.dir}/${name}-qmp.sock`);
    this.guests.push(guest);
    return [vhostd, guest];
  }

  /** Everything a failed run needs to be understood: consoles, QEMU stderr, vhostd logs. */
  async diagnostics(): Promise<string> {
    const parts: string[] = [];
    for (const guest of this.guests) {
      parts.push(
        `--- ${guest.name} console (tail) ---\n${guest.serial.slice(-2500)}`,
        `--- ${guest.name} QEMU stderr ---\n${guest.exited ? await guest.stderr : "(running)"}`,
      );
    }
    for (const vhostd of this.vhostds) {
      parts.push(`--- ${vhostd.logPath} ---\n${await vhostd.log()}`);
    }
    return parts.join("\n");
  }

  /** Kills whatever still runs and removes the temp dir. */
  async dispose(): Promise<void> {
    await Promise.all(this.guests.map((guest) => guest.dispose()));
    await Promise.all(this.vhostds.map((vhostd) => vhostd.dispose()));
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** Runs `body`, printing the rig's diagnostics if it throws, and always disposing. */
async function withRig(body: (rig: MigrationRig) => Promise<void>): Promise<void> {
  const rig = await MigrationRig.create();
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

/** Types STOP, waits for the guest's verification and power-off; returns the record count. */
async function finishGuest(guest: QemuGuest): Promise<number> {
  await guest.type("STOP\n");
  const verified = await guest.waitForSerial(/^VERIFY-OK (\d+)$/m, 60_000);
  await guest.waitForSerial(/^VHOSTD-TEST: EXIT 0$/m, 10_000);
  const status = await guest.waitForExit(15_000);
  assert.ok(status !== null, `${guest.name} QEMU did not power off`);
  assert.equal(status.code, 0, `${guest.name} QEMU exit status`);
  return Number(verified[1]);
}

Deno.test("live migration of a writing guest between two vhostd back-ends on one image", () =>
  withRig(async (rig) => {
    const [vhostdA, source] = await rig.startSide("source", false);
    const [vhostdB, destination] = await rig.startSide("destination", true);
    await destination.qmp.execute("migrate-incoming", { uri: `unix:${rig.migrationSocket}` });

    await source.waitForSerial(
      new RegExp(`^REC ${RECORDS_BEFORE_MIGRATION - 1}$`, "m"),
      BOOT_TIMEOUT_MS,
    );
    // A 1 ms downtime limit: QEMU switches over only once what is left to
    // send fits in 1 ms of measured bandwidth (a few pages).
    await source.qmp.execute("migrate-set-parameters", {
      "max-bandwidth": LIVE_BANDWIDTH,
      "downtime-limit": 1,
    });
    const lastBeforeMigration = lastRecord(source.serial);
    await source.qmp.execute("migrate", { uri: `unix:${rig.migrationSocket}` });
    // Once the first full pass is over, a page vhostd fills is sent again only
    // if its dirty log names it. Hold the migration there (at a trickle, 1 ms
    // of it is less than a page, so it cannot converge) while the guest reads
    // the pre-filled region into fresh page-cache pages and goes on writing.
    const afterFirstPass = await pollMigration(
      source,
      (s) =>
        s.status !== "setup" && (s.status !== "active" || (s.ram?.["dirty-sync-count"] ?? 0) >= 2),
      MIGRATION_TIMEOUT_MS,
      20,
    );
    await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": HOLD_BANDWIDTH });
    assert.equal(
      afterFirstPass.status,
      "active",
      `migration ended before it could be held: ${JSON.stringify(afterFirstPass)}`,
    );
    const lastAfterFirstPass = lastRecord(source.serial);
    await source.type("CACHE\n");
    await source.waitForSerial(
      new RegExp(`^CACHE-READ ${CACHED_BLOCKS}$`, "m"),
      MIGRATION_TIMEOUT_MS,
    );
    await source.waitForSerial(
      new RegExp(`^REC ${lastRecord(source.serial) + RECORDS_DURING_MIGRATION}$`, "m"),
      MIGRATION_TIMEOUT_MS,
    );
    const beforeSwitchover = await source.qmp.execute<MigrationStatus>("query-migrate");
    assert.equal(beforeSwitchover.status, "active", "migration switched over while held");
    await source.qmp.execute("migrate-set-parameters", {
      "max-bandwidth": LIVE_BANDWIDTH,
      "downtime-limit": 1000,
    });
    const result = await pollMigration(
      source,
      (s) => s.status === "completed" || s.status === "failed" || s.status === "cancelled",
      MIGRATION_TIMEOUT_MS,
    );
    assert.equal(result.status, "completed", `migration ended: ${JSON.stringify(result)}`);
    await waitForRunState(source, "postmigrate", 5_000);
    await waitForRunState(destination, "running", 10_000);

    // The guest goes on writing on the destination, where its console now is.
    const lastOnSource = lastRecord(source.serial);
    await destination.waitForSerial(
      new RegExp(`^REC ${lastOnSource + RECORDS_AFTER_MIGRATION}$`, "m"),
      MIGRATION_TIMEOUT_MS,
    );
    const count = await finishGuest(destination);
    assert.ok(count > lastOnSource + RECORDS_AFTER_MIGRATION, `only ${count} records written`);
    assert.equal(destination.serial.match(/^WROTE (\d+)$/m)?.[1], String(count));
    await checkCachedRegion(destination);

    await source.qmp.execute("quit").catch(() => {}); // QEMU may close QMP before answering
    assert.ok((await source.waitForExit(15_000)) !== null, "source QEMU did not quit");

    for (const vhostd of [vhostdA, vhostdB]) {
      const status = await vhostd.stop();
      assert.equal(status.code, 0, `${vhostd.logPath}: exit status ${status.code}`);
    }
    const logA = await vhostdA.log();
    const logB = await vhostdB.log();
    assert.match(logA, /dirty-page logging started/, "source vhostd never logged dirty pages");
    assert.match(logA, /<- SET_LOG_BASE/, "source vhostd got no SET_LOG_BASE");
    assert.match(logB, /ring 0 running/, "destination vhostd never ran the ring");
    await checkImage(rig.image, count);
    console.log(
      `migrated in ${result["total-time"]} ms (downtime ${result.downtime} ms, ` +
        `${result.ram?.transferred} bytes, ${result.ram?.["dirty-sync-count"]} dirty syncs); ` +
        `records ${lastBeforeMigration + 1} before it, ${lastAfterFirstPass + 1} after the ` +
        `first pass, ${lastOnSource + 1} on the source, ` +
        `${count} in all`,
    );
  }));

Deno.test("a migration whose destination dies leaves the source guest writing through vhostd", () =>
  withRig(async (rig) => {
    const [vhostdA, source] = await rig.startSide("source", false);
    const [vhostdB, destination] = await rig.startSide("destination", true);
    await destination.qmp.execute("migrate-incoming", { uri: `unix:${rig.migrationSocket}` });

    await source.waitForSerial(
      new RegExp(`^REC ${RECORDS_BEFORE_MIGRATION - 1}$`, "m"),
      BOOT_TIMEOUT_MS,
    );
    // Slow, so that the migration is surely still copying RAM when the destination dies.
    await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": SLOW_BANDWIDTH });
    await source.qmp.execute("migrate", { uri: `unix:${rig.migrationSocket}` });
    const active = await pollMigration(
      source,
      (s) => s.status !== "setup" && s.status !== "none",
      MIGRATION_TIMEOUT_MS,
    );
    assert.equal(active.status, "active", `migration is not copying: ${JSON.stringify(active)}`);
    // Dirty logging is on once RAM is being copied; let the guest write under it a while.
    await source.waitForSerial(
      new RegExp(`^REC ${lastRecord(source.serial) + RECORDS_DURING_MIGRATION}$`, "m"),
      MIGRATION_TIMEOUT_MS,
    );
    const beforeKill = await source.qmp.execute<MigrationStatus>("query-migrate");
    assert.equal(beforeKill.status, "active", "migration ended before the destination was killed");
    await vhostdA.waitForLog(/dirty-page logging started/, 10_000);

    destination.kill("SIGKILL");
    await destination.status;
    const failed = await pollMigration(
      source,
      (s) => s.status !== "active" && s.status !== "setup",
      MIGRATION_TIMEOUT_MS,
    );
    assert.equal(failed.status, "failed", `source migration status: ${JSON.stringify(failed)}`);

    // QEMU resumes the source by itself when the migration fails before switch-over.
    const runState = (await source.qmp.execute<{ status: string }>("query-status")).status;
    if (runState !== "running") await source.qmp.execute("cont");
    await waitForRunState(source, "running", 5_000);
    const lastAtFailure = lastRecord(source.serial);
    const consoleAtFailure = source.serial.length;
    await source.waitForSerial(
      new RegExp(`^REC ${lastAtFailure + RECORDS_AFTER_MIGRATION}$`, "m"),
      MIGRATION_TIMEOUT_MS,
      consoleAtFailure,
    );

    // The destination's back-end lost its front-end; it must still shut down cleanly.
    const statusB = await vhostdB.stop();
    assert.equal(statusB.code, 0, `destination vhostd exit status ${statusB.code}`);

    const count = await finishGuest(source);
    await checkCachedRegion(source);
    assert.ok(count > lastAtFailure + RECORDS_AFTER_MIGRATION, `only ${count} records written`);
    const statusA = await vhostdA.stop();
    assert.equal(statusA.code, 0, `source vhostd exit status ${statusA.code}`);
    const logA = await vhostdA.log();
    const loggingStarted = logA.indexOf("dirty-page logging started");
    assert.ok(loggingStarted >= 0, "source vhostd never logged dirty pages");
    // QEMU switches logging off again with a SET_FEATURES lacking VHOST_F_LOG_ALL.
    assert.match(
      logA.slice(loggingStarted),
      /<- SET_FEATURES/,
      "source vhostd got no SET_FEATURES after logging started",
    );
    await checkImage(rig.image, count);
    console.log(
      `migration failed after ${beforeKill.ram?.transferred} bytes: ${failed["error-desc"]}; ` +
        `records ${lastAtFailure + 1} at the failure, ${count} in all`,
    );
  }));
