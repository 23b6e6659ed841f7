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
 *
 * When a migration ends is up to the test, not to how fast the guest or
 * the host runs. The guest runs a dirtier from boot to `STOP` that keeps
 * rewriting the same {@linkcode DIRTY_SIZE} of tmpfs, and every migration
 * starts with a switch-over threshold below one page (`downtime-limit` 1 ms
 * with `avail-switchover-bandwidth` {@linkcode HELD_SWITCHOVER_BANDWIDTH}, so
 * the measured bandwidth does not count). QEMU checks the threshold only
 * once a round has sent every page it had to, and switches over only if the
 * bitmap sync then finds no page at all dirtied during that round. A round
 * holding the dirtier's pages lasts DIRTY_SIZE / bandwidth (2 s and more at
 * the bandwidths used while held), and the dirtier rewrites them well within
 * that even in a TCG guest on a loaded host (over 100 MiB/s measured with
 * two busy loops on two cores): the guest would have to stand still for a
 * whole round. So a migration stays live until the test raises the
 * threshold above the guest's RAM size, and then switches over at QEMU's
 * next check. The test waits on QMP events (`MIGRATION_PASS`, `MIGRATION`)
 * and on complete console lines, never on a sleep.
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
/** Bytes of tmpfs the guest's dirtier rewrites over and over (non-zero, so each page costs bandwidth). */
const DIRTY_SIZE = 8 * MiB;
/** Migration bandwidth (bytes/s) for the first pass: it takes a few seconds. */
const LIVE_BANDWIDTH = 32 * MiB;
/**
 * Migration bandwidth (bytes/s) after the first pass while the guest fills
 * pages: a round of the dirtier's pages alone then lasts 8 s, and the
 * dirtier rewrites them many times over in that time even on a busy host.
 */
const HOLD_BANDWIDTH = 1 * MiB;
/** Migration bandwidth (bytes/s) of the migration whose destination dies. */
const SLOW_BANDWIDTH = 4 * MiB;
/**
 * `avail-switchover-bandwidth` while a migration is held: with
 * `downtime-limit` 1 ms the switch-over threshold is 1 MiB/s × 1 ms, about
 * 1 KiB, less than a page, whatever the measured bandwidth.
 */
const HELD_SWITCHOVER_BANDWIDTH = 1 * MiB;
/**
 * `avail-switchover-bandwidth` that lets a migration end: with
 * `downtime-limit` {@linkcode RELEASED_DOWNTIME_LIMIT_MS} the threshold is 1 GiB,
 * more than the guest's RAM, so the next check switches over.
 */
const RELEASED_SWITCHOVER_BANDWIDTH = 1024 * MiB;
const RELEASED_DOWNTIME_LIMIT_MS = 1000;
const BOOT_TIMEOUT_MS = 120_000;
const MIGRATION_TIMEOUT_MS = 180_000;
const GUEST_FINISH_TIMEOUT_MS = 180_000;

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
 *
 * From the start until `STOP` a background loop rewrites the same
 * {@linkcode DIRTY_SIZE} tmpfs file in place (`DIRTIER-RUNNING` once it has
 * done so once): QEMU finds its pages dirty at every sync, so a migration
 * with a threshold below one page cannot switch over while it runs. It
 * touches neither /dev/vda nor the page cache of the pre-filled region.
 */
const GUEST_SCRIPT = `
exec 3</dev/vda
while read -r line; do
  case "$line" in CACHE|STOP) : >"/tmp/ctl-$line" ;; esac
done </dev/ttyS0 &
yes "$(printf 'DIRTY%010d' 0)" | head -c ${DIRTY_SIZE} >/tmp/dirty-src
cp /tmp/dirty-src /tmp/dirty
(
  n=0
  while [ ! -e /tmp/ctl-STOP ]; do
    dd if=/tmp/dirty-src of=/tmp/dirty bs=64k conv=notrunc 2>/dev/null
    n=$((n + 1))
    if [ $n = 1 ]; then echo "DIRTIER-RUNNING"; fi
  done
  echo "DIRTIER-STOPPED $n"
) &
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
  for (const match of guest.serialLines.matchAll(/^CACHED (\d+) ([0-9a-f]{64})$/gm)) {
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

/** The largest `REC k` among the complete lines of `guest`'s console so far, or -1. */
function lastRecord(guest: QemuGuest): number {
  let last = -1;
  for (const match of guest.serialLines.matchAll(/^REC (\d+)$/gm)) {
    last = Math.max(last, Number(match[1]));
  }
  return last;
}

/**
 * Waits until a complete console line `KEY n` with `n >= at` appears on
 * `guest` after offset `from` (`REC 40` or any later record: a line that a
 * kernel message garbled does not stall the test).
 */
async function waitForCount(
  guest: QemuGuest,
  key: "REC" | "CACHE-READ",
  at: number,
  timeoutMs: number,
  from = 0,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const pattern = new RegExp(`^${key} (\\d+)$`, "m");
  let offset = from;
  while (true) {
    const match = await guest.waitForSerial(pattern, Math.max(1, deadline - Date.now()), offset);
    if (Number(match[1]) >= at) return;
    offset += match.index! + match[0].length;
  }
}

/**
 * Sets `source`'s migration up to be held (see the module comment): events
 * on, `bandwidth`, and a switch-over threshold below one page.
 */
async function prepareHeldMigration(source: QemuGuest, bandwidth: number): Promise<void> {
  await enableMigrationEvents(source);
  await source.qmp.execute("migrate-set-parameters", {
    "max-bandwidth": bandwidth,
    "downtime-limit": 1,
    "avail-switchover-bandwidth": HELD_SWITCHOVER_BANDWIDTH,
  });
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
  const verified = await guest.waitForSerial(/^VERIFY-OK (\d+)$/m, GUEST_FINISH_TIMEOUT_MS);
  await guest.waitForSerial(/^VHOSTD-TEST: EXIT 0$/m, GUEST_FINISH_TIMEOUT_MS);
  const status = await guest.waitForExit(30_000);
  assert.ok(status !== null, `${guest.name} QEMU did not power off`);
  assert.equal(status.code, 0, `${guest.name} QEMU exit status`);
  return Number(verified[1]);
}

Deno.test("live migration of a writing guest between two vhostd back-ends on one image", () =>
  withRig(async (rig) => {
    const [vhostdA, source] = await rig.startSide("source", false);
    const [vhostdB, destination] = await rig.startSide("destination", true);
    await destination.qmp.execute("migrate-incoming", { uri: `unix:${rig.migrationSocket}` });

    await source.waitForSerial(/^DIRTIER-RUNNING$/m, BOOT_TIMEOUT_MS);
    await waitForCount(source, "REC", RECORDS_BEFORE_MIGRATION - 1, BOOT_TIMEOUT_MS);
    // The switch-over threshold is below one page from the start, and the
    // dirtier dirties pages at every sync: the migration cannot end until
    // the test raises the threshold, however slowly either side runs.
    await prepareHeldMigration(source, LIVE_BANDWIDTH);
    const lastBeforeMigration = lastRecord(source);
    await source.qmp.execute("migrate", { uri: `unix:${rig.migrationSocket}` });
    // Pass 2 begins once the first full pass is over: from then on a page
    // vhostd fills is sent again only if its dirty log names it. The guest
    // now reads the pre-filled region into fresh page-cache pages and goes on
    // writing (at a lower bandwidth, so that rounds are long and the
    // dirtier outpaces them by far).
    await source.qmp.waitForEvent(
      "MIGRATION_PASS",
      (event) => Number(event.data?.pass) >= 2,
      MIGRATION_TIMEOUT_MS,
    );
    await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": HOLD_BANDWIDTH });
    const afterFirstPass = await source.qmp.execute<MigrationStatus>("query-migrate");
    assert.equal(
      afterFirstPass.status,
      "active",
      `migration is not live after its first pass: ${JSON.stringify(afterFirstPass)}`,
    );
    const lastAfterFirstPass = lastRecord(source);
    await source.type("CACHE\n");
    await waitForCount(source, "CACHE-READ", CACHED_BLOCKS, MIGRATION_TIMEOUT_MS);
    await waitForCount(
      source,
      "REC",
      lastRecord(source) + RECORDS_DURING_MIGRATION,
      MIGRATION_TIMEOUT_MS,
    );
    const beforeSwitchover = await source.qmp.execute<MigrationStatus>("query-migrate");
    assert.equal(
      beforeSwitchover.status,
      "active",
      `migration left its live phase while held: ${JSON.stringify(beforeSwitchover)}`,
    );
    // Release: a threshold larger than guest RAM switches over at the next check.
    await source.qmp.execute("migrate-set-parameters", {
      "max-bandwidth": LIVE_BANDWIDTH,
      "downtime-limit": RELEASED_DOWNTIME_LIMIT_MS,
      "avail-switchover-bandwidth": RELEASED_SWITCHOVER_BANDWIDTH,
    });
    const result = await waitForMigrationStatus(source, MIGRATION_ENDED, MIGRATION_TIMEOUT_MS);
    assert.equal(result.status, "completed", `migration ended: ${JSON.stringify(result)}`);
    await waitForRunState(source, "postmigrate", 30_000);
    await waitForRunState(destination, "running", 30_000);

    // The guest goes on writing on the destination, where its console now is.
    // The source is stopped; what it printed before is all in once its QEMU has quit.
    await source.qmp.execute("quit").catch(() => {}); // QEMU may close QMP before answering
    assert.ok((await source.waitForExit(30_000)) !== null, "source QEMU did not quit");
    await source.serialClosed;
    const lastOnSource = lastRecord(source);
    await waitForCount(
      destination,
      "REC",
      lastOnSource + RECORDS_AFTER_MIGRATION,
      MIGRATION_TIMEOUT_MS,
    );
    const count = await finishGuest(destination);
    assert.ok(count > lastOnSource + RECORDS_AFTER_MIGRATION, `only ${count} records written`);
    assert.equal(destination.serialLines.match(/^WROTE (\d+)$/m)?.[1], String(count));
    await checkCachedRegion(destination);

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

    await source.waitForSerial(/^DIRTIER-RUNNING$/m, BOOT_TIMEOUT_MS);
    await waitForCount(source, "REC", RECORDS_BEFORE_MIGRATION - 1, BOOT_TIMEOUT_MS);
    // Held (see the module comment): still copying RAM when the destination
    // dies, however long the guest takes to write its records.
    await prepareHeldMigration(source, SLOW_BANDWIDTH);
    await source.qmp.execute("migrate", { uri: `unix:${rig.migrationSocket}` });
    await waitForMigrationStatus(source, ["active", ...MIGRATION_ENDED], MIGRATION_TIMEOUT_MS);
    // Dirty logging is on once RAM is being copied; let the guest write under it a while.
    await vhostdA.waitForLog(/dirty-page logging started/, MIGRATION_TIMEOUT_MS);
    await waitForCount(
      source,
      "REC",
      lastRecord(source) + RECORDS_DURING_MIGRATION,
      MIGRATION_TIMEOUT_MS,
    );
    const beforeKill = await source.qmp.execute<MigrationStatus>("query-migrate");
    assert.equal(
      beforeKill.status,
      "active",
      `migration is not copying before the destination dies: ${JSON.stringify(beforeKill)}`,
    );

    destination.kill("SIGKILL");
    await destination.status;
    const failed = await waitForMigrationStatus(source, MIGRATION_ENDED, MIGRATION_TIMEOUT_MS);
    assert.equal(failed.status, "failed", `source migration status: ${JSON.stringify(failed)}`);

    // QEMU resumes the source by itself when the migration fails before switch-over.
    const runState = (await source.qmp.execute<{ status: string }>("query-status")).status;
    if (runState !== "running") await source.qmp.execute("cont");
    await waitForRunState(source, "running", 30_000);
    // Records counted from here on are written after the failure: the
    // console offset is taken first, so that no later line is missed.
    const consoleAtFailure = source.serialLines.length;
    const lastAtFailure = lastRecord(source);
    await waitForCount(
      source,
      "REC",
      lastAtFailure + RECORDS_AFTER_MIGRATION,
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
