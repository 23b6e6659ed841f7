/**
 * Back-end crash and reconnect end to end against QEMU 10: a TCG guest whose
 * disk is a `vhost-user-blk-pci` device (chardev `reconnect-ms=500`) served
 * by vhostd from an image file keeps several O_DIRECT writers going on
 * disjoint parts of /dev/vda while the host kills vhostd with SIGKILL, waits
 * for it to be gone and starts a new vhostd on the same socket path (the
 * dead process's socket file is still there: vhostd replaces a socket nobody
 * listens on), three times. QEMU reconnects, and the new vhostd must carry
 * out exactly the requests the dead one left unfinished: none may be lost (a
 * writer would hang), none completed twice (the guest's driver would get a
 * bogus used entry), and every record must end up on the disk.
 *
 * The guest caps requests at 4 KiB (`max_sectors_kb`), so each writer's
 * 128 KiB O_DIRECT `dd` is 32 requests submitted at once, and the records
 * are made before writing starts, so the writers do nothing but I/O. On a
 * plain image file vhostd still often finishes everything it took before the
 * kill lands; that run passes all the same. The third test makes requests in
 * flight certain without timing: the image is on scripts/latency_fs in hold
 * mode, which answers each request as it arrives until, before a kill, the
 * test lets at least HELD_AT_KILL of them pile up inside vhostd; it kills
 * vhostd, waits until none of its threads can run user code any more, and
 * only then lets the file system answer (vhostd cannot exit before that).
 * The next vhostd must then say it resubmitted requests from the inflight
 * area (INFLIGHT_SHMFD). While vhostd is down the host also asks the guest
 * how many requests it has outstanding (`/sys/block/vda/inflight`): the
 * guest's I/O just stalls until the new vhostd takes over.
 *
 * Every wait is for an event (a console line, a log line, a process exit),
 * bounded by a generous timeout only as a safety net.
 *
 * `VHOSTD_TEST_LOG=1` prints the messages each restarted vhostd received and
 * QEMU's stderr (with its vhost_dev_start/vhost_dev_stop trace events);
 * `VHOSTD_TEST_KEEP=1` keeps the directory with the image and the logs.
 */

import assert from "node:assert/strict";
import { guestQemuArgs, requireGuestEnvironment, writeTestInitrd } from "./harness.ts";
import { QemuGuest, VhostdProcess } from "./migration_harness.ts";
import {
  buildLatencyFs,
  type LatencyFs,
  mountLatencyFs,
  unmountLatencyFs,
} from "../../scripts/latency_fs/mount.ts";

const RECORD_SIZE = 4096;
const SECTOR_SIZE = 512;
/** Bytes of one line of a record; a sector is 16 copies of one line. */
const LINE_SIZE = 32;
/** Records per `dd` (128 KiB: 32 requests of 4 KiB submitted at once). */
const CHUNK_RECORDS = 32;
const CHUNK_SIZE = CHUNK_RECORDS * RECORD_SIZE;
/** Chunks in a writer's region of the disk; a writer at its end starts over. */
const MAX_CHUNKS = 32;
const REGION_RECORDS = CHUNK_RECORDS * MAX_CHUNKS;
/** Parallel writers in the guest. */
const WRITERS = 6;
const IMAGE_SIZE = WRITERS * REGION_RECORDS * RECORD_SIZE;
/** Kill/restart cycles per run. */
const CYCLES = 3;
/** Chunks the guest must complete (all writers together) before each kill and after each restart. */
const PROGRESS_CHUNKS = 2 * WRITERS;

const BOOT_TIMEOUT_MS = 120_000;
const PROGRESS_TIMEOUT_MS = 120_000;
const EXIT_TIMEOUT_MS = 30_000;
const RECONNECT_TIMEOUT_MS = 60_000;
const VERIFY_TIMEOUT_MS = 240_000;
/** Requests the held variant lets pile up inside vhostd before each kill. */
const HELD_AT_KILL = 64;

const VERBOSE = Deno.env.get("VHOSTD_TEST_LOG") === "1";
const KEEP = Deno.env.get("VHOSTD_TEST_KEEP") === "1";

/**
 * Record k (the k-th 4 KiB block of the disk) of writer w: sector s of it is
 * 16 copies of the line `R k=%010d w=%02d s=%03d c=%03d\n`, c a check value
 * of the other three, so a record in the wrong place, a torn record and a
 * misplaced sector all show. The guest makes them with this awk program.
 */
const AWK_RECORDS = `BEGIN {
  for (k = f; k < f + n; k++) {
    for (s = 0; s < 8; s++) {
      l = sprintf("R k=%010d w=%02d s=%03d c=%03d\\n", k, w, s, (k * 7 + w * 13 + s) % 1000)
      l = l l; l = l l; l = l l; l = l l
      printf "%s", l
    }
  }
}`;

/** Record k of writer w as the guest writes it. */
function expectedRecord(k: number, w: number): Uint8Array {
  const sectors: string[] = [];
  for (let s = 0; s < RECORD_SIZE / SECTOR_SIZE; s++) {
    const c = (k * 7 + w * 13 + s) % 1000;
    const line = `R k=${String(k).padStart(10, "0")} w=${String(w).padStart(2, "0")} s=${
      String(s).padStart(3, "0")
    } c=${String(c).padStart(3, "0")}\n`;
    assert.equal(line.length, LINE_SIZE);
    sectors.push(line.repeat(SECTOR_SIZE / LINE_SIZE));
  }
  return new TextEncoder().encode(sectors.join(""));
}

/**
 * The guest's `/test.sh`. Writer w owns records w*REGION .. (w+1)*REGION-1,
 * made up front (on every vCPU). Each writer writes its region a chunk at a
 * time with one O_DIRECT `dd` per chunk, printing `DONE w i` once its i-th
 * chunk is on the device, starting over at the end of its region, until the
 * host types `STOP`. Writer w runs on vCPU w mod CPUS (so with two queues
 * both carry I/O). A console reader answers `PROBE c` with
 * `INFLIGHT c READS WRITES`. After STOP the guest syncs, drops its caches,
 * reads every writer's region back with O_DIRECT and compares it with what
 * it wrote.
 */
function guestScript(cpus: number): string {
  return `
set -u
cat >/tmp/gen.awk <<'AWK'
${AWK_RECORDS}
AWK
cat >/tmp/writer.sh <<'SH'
w=$1
i=0
while [ ! -e /tmp/ctl-STOP ]; do
  slot=$((i % ${MAX_CHUNKS}))
  if ! dd if=/tmp/data$w of=/dev/vda bs=${CHUNK_SIZE} skip=$slot seek=$((w * ${MAX_CHUNKS} + slot)) \\
      count=1 oflag=direct 2>/tmp/err$w; then
    echo "WRITE-FAILED $w $i"; cat /tmp/err$w; exit 1
  fi
  echo "DONE $w $i"
  i=$((i + 1))
done
echo $i >/tmp/count$w
echo "WROTE $w $i"
SH
echo 4 >/sys/block/vda/queue/max_sectors_kb || exit 1
echo "SETUP max_sectors_kb=$(cat /sys/block/vda/queue/max_sectors_kb) queues=$(ls /sys/block/vda/mq | wc -l)"
pids=""
w=0
while [ $w -lt ${WRITERS} ]; do
  taskset -c $((w % ${cpus})) awk -v w=$w -v f=$((w * ${REGION_RECORDS})) -v n=${REGION_RECORDS} \\
    -f /tmp/gen.awk >/tmp/data$w &
  pids="$pids $!"
  w=$((w + 1))
done
wait $pids || exit 1
# What the host types must not be echoed into the middle of a writer's line.
stty -echo </dev/ttyS0 || exit 1
while read -r line; do
  case "$line" in
    STOP) : >/tmp/ctl-STOP ;;
    PROBE*) echo "INFLIGHT \${line#PROBE } $(cat /sys/block/vda/inflight)" ;;
  esac
done </dev/ttyS0 &
pids=""
w=0
while [ $w -lt ${WRITERS} ]; do
  taskset -c $((w % ${cpus})) sh /tmp/writer.sh $w &
  pids="$pids $!"
  w=$((w + 1))
done
echo "WRITERS-STARTED"
wait $pids
sync
echo 3 >/proc/sys/vm/drop_caches
status=0
w=0
while [ $w -lt ${WRITERS} ]; do
  if [ ! -e /tmp/count$w ]; then echo "WRITER-FAILED $w"; status=1; w=$((w + 1)); continue; fi
  n=$(cat /tmp/count$w)
  m=$((n < ${MAX_CHUNKS} ? n : ${MAX_CHUNKS}))
  dd if=/tmp/data$w of=/tmp/expect bs=${CHUNK_SIZE} count=$m 2>/dev/null
  dd if=/dev/vda of=/tmp/back bs=${CHUNK_SIZE} skip=$((w * ${MAX_CHUNKS})) count=$m iflag=direct \\
    2>/tmp/err || { echo "READ-FAILED $w"; cat /tmp/err; status=1; }
  if cmp /tmp/expect /tmp/back; then echo "VERIFY-OK $w $n"; else echo "VERIFY-FAILED $w $n"; status=1; fi
  rm -f /tmp/expect /tmp/back
  w=$((w + 1))
done
exit $status
`;
}

/** `DONE w i` lines on the console. */
function doneLines(serial: string): Array<[number, number]> {
  return [...serial.matchAll(/^DONE (\d+) (\d+)$/gm)].map((m) => [Number(m[1]), Number(m[2])]);
}

/** Waits until `count` more chunks were reported done after console offset `from`. */
async function waitForChunks(
  guest: QemuGuest,
  from: number,
  count: number,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let at = from;
  for (let seen = 0; seen < count; seen++) {
    const match = await guest.waitForSerial(
      /^DONE \d+ \d+\n/m,
      Math.max(1, deadline - Date.now()),
      at,
    );
    at += match.index! + match[0].length;
  }
}

/** Resolves with the status, or throws if the process is still there after `timeoutMs`. */
async function exitWithin(vhostd: VhostdProcess, timeoutMs: number): Promise<Deno.CommandStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`vhostd still runs ${timeoutMs} ms after SIGKILL`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([vhostd.status, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * QEMU's indices of virtqueue `queue` (`x-query-virtio-queue-status`), for
 * the report only: QMP's `x-` commands are unstable, so an error is text too.
 */
async function queueStatusText(guest: QemuGuest, queue: number): Promise<string> {
  try {
    const status = await guest.qmp.execute<Record<string, unknown>>(
      "x-query-virtio-queue-status",
      { path: "/machine/peripheral/blk0/virtio-backend", queue },
    );
    const pick = ["last-avail-idx", "used-idx"];
    return pick.map((key) => `${key}=${status[key]}`).join(" ");
  } catch (error) {
    return `(${error instanceof Error ? error.message : error})`;
  }
}

/**
 * The image on scripts/latency_fs in hold mode: every read and write waits
 * in the file system until released. Normally each request is released as
 * soon as it is held ("pumping"); before a kill the test stops pumping and
 * waits until many requests are held, i.e. in flight inside vhostd.
 */
class HeldImage {
  readonly image: string;
  readonly #fs: LatencyFs;
  #pumping = true;
  #held = 0;
  readonly #waiters = new Set<() => void>();

  private constructor(fs: LatencyFs) {
    this.#fs = fs;
    this.image = fs.image;
  }

  /** Mounts a zero-filled image of IMAGE_SIZE bytes under `dir`. */
  static async start(dir: string): Promise<HeldImage> {
    const binary = await buildLatencyFs();
    const store = `${dir}/store`;
    const file = await Deno.open(store, { create: true, write: true });
    await file.truncate(IMAGE_SIZE);
    file.close();
    await Deno.mkdir(`${dir}/mnt`);
    const sink: { image?: HeldImage } = {};
    const fs = await mountLatencyFs(binary, store, `${dir}/mnt`, 0, {
      hold: true,
      onLine: (line) => {
        if (sink.image !== undefined) sink.image.#line(line);
      },
    });
    sink.image = new HeldImage(fs);
    return sink.image;
  }

  /** Stops releasing requests: from now on they stay in flight. */
  hold(): void {
    this.#pumping = false;
  }

  /** Releases what is held and every later request as it arrives. */
  pump(): void {
    this.#pumping = true;
    this.#release();
  }

  /** Releases everything and holds nothing any more (for reading the image). */
  stopHolding(): void {
    this.#pumping = true;
    this.#fs.child.kill("SIGUSR2");
  }

  /** Resolves once at least `count` requests are held. */
  async waitHeld(count: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.#held < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`only ${this.#held} of ${count} requests were held`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.#waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.#waiters.add(wake);
      });
    }
    return this.#held;
  }

  async dispose(): Promise<void> {
    await unmountLatencyFs(this.#fs);
  }

  #release(): void {
    this.#held = 0;
    try {
      this.#fs.child.kill("SIGUSR1");
    } catch {
      // the server is gone: dispose() reports nothing more to do
    }
  }

  #line(line: string): void {
    const match = /^held (\d+)$/.exec(line);
    if (match === null) return;
    this.#held = Number(match[1]);
    if (this.#pumping) this.#release();
    for (const wake of [...this.#waiters]) wake();
  }
}

/**
 * Resolves once no thread of process `pid` can run user code any more: each
 * is gone, a zombie, or blocked in the kernel (in I/O that a SIGKILL cannot
 * interrupt: it dies on the way out), or an io_uring worker. Until then a
 * killed vhostd might still complete a request it holds.
 */
async function userThreadsDead(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const live: string[] = [];
    try {
      for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
        let stat: string;
        try {
          stat = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
        } catch {
          continue; // exited meanwhile
        }
        const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
        const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
        if (!"DZXx".includes(state) && !comm.startsWith("iou-")) live.push(`${comm}:${state}`);
      }
    } catch {
      return; // the whole process is gone
    }
    if (live.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`threads of killed vhostd ${pid} still run: ${live.join(" ")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** What one kill/restart cycle saw. */
interface CycleReport {
  /** Requests (reads, writes) the guest had outstanding while vhostd was down. */
  inflight: [number, number];
  /** Per ring: the avail index the new vhostd started it at (QEMU's SET_VRING_BASE). */
  ringBases: number[];
  /** Per ring, while vhostd was down: QEMU's view (`x-query-virtio-queue-status`), or the error. */
  queueStatus: string[];
  /** Requests held in the file system at the kill (held variant), else undefined. */
  heldAtKill?: number;
  /** Requests the new vhostd resubmitted from the inflight area, all rings. */
  resubmitted: number;
  /** Message names the new vhostd received until its rings ran. */
  messages: string[];
}

/** How a run is set up. */
interface RunOptions {
  numQueues: number;
  /** Serve the image from hold-mode latency_fs, so that many requests are in flight at each kill. */
  held?: boolean;
}

async function runReconnect({ numQueues, held = false }: RunOptions): Promise<void> {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-reconnect-" });
  const socket = `${dir}/blk.sock`;
  const initrd = `${dir}/initrd`;
  let heldImage: HeldImage | undefined;
  let image = `${dir}/disk.img`;
  if (held) {
    heldImage = await HeldImage.start(dir);
    image = heldImage.image;
  } else {
    const file = await Deno.open(image, { create: true, write: true });
    await file.truncate(IMAGE_SIZE);
    file.close();
  }
  const vhostds: VhostdProcess[] = [];
  let guest: QemuGuest | undefined;

  const startVhostd = async (): Promise<VhostdProcess> => {
    const vhostd = await VhostdProcess.start({
      image,
      socket,
      logPath: `${dir}/vhostd-${vhostds.length}.log`,
      extraArgs: ["--num-queues", String(numQueues)],
    });
    vhostds.push(vhostd);
    // After a kill the dead process's socket file is still there, so its
    // existence says nothing: wait for vhostd to say it listens.
    await vhostd.waitForLog(/ serving .* on /, RECONNECT_TIMEOUT_MS);
    return vhostd;
  };
  /** Waits until every ring of `vhostd` runs and returns its log. */
  const ringsRunning = (vhostd: VhostdProcess): Promise<string> =>
    vhostd.waitForLog(
      new RegExp(
        Array.from({ length: numQueues }, (_, k) => `(?=[\\s\\S]*ring ${k} running)`).join(""),
      ),
      RECONNECT_TIMEOUT_MS,
    );
  const diagnostics = async (): Promise<string> => {
    const parts: string[] = [];
    if (guest !== undefined) {
      parts.push(`--- guest console (end) ---\n${guest.serial.slice(-4000)}`);
      if (guest.exited) parts.push(`--- QEMU stderr ---\n${await guest.stderr}`);
    }
    for (const vhostd of vhostds) {
      parts.push(`--- ${vhostd.logPath} (end) ---\n${(await vhostd.log()).slice(-3000)}`);
    }
    return parts.join("\n");
  };

  try {
    await writeTestInitrd(initrd, guestScript(numQueues));
    let vhostd = await startVhostd();
    const trace = VERBOSE
      ? ["vhost_dev_start", "vhost_dev_stop"].flatMap((t) => ["-trace", t])
      : [];
    guest = await QemuGuest.start(
      "reconnect",
      guestQemuArgs({
        initrd,
        chardevs: [
          "-chardev",
          `socket,id=vhostd0,path=${socket},reconnect-ms=500`,
          "-device",
          `vhost-user-blk-pci,id=blk0,chardev=vhostd0,num-queues=${numQueues}`,
        ],
        extraArgs: ["-smp", String(numQueues), ...trace],
      }),
      `${dir}/qmp.sock`,
    );
    const setup = await guest.waitForSerial(/^SETUP (.*)\n/m, BOOT_TIMEOUT_MS);
    assert.equal(setup[1], `max_sectors_kb=4 queues=${numQueues}`);
    const started = await guest.waitForSerial(/^WRITERS-STARTED\n/m, BOOT_TIMEOUT_MS);
    await ringsRunning(vhostd);

    const reports: CycleReport[] = [];
    let from = started.index! + started[0].length;
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      // Writing goes on (after a restart: again).
      await waitForChunks(guest, from, PROGRESS_CHUNKS, PROGRESS_TIMEOUT_MS);
      let heldAtKill: number | undefined;
      if (heldImage !== undefined) {
        heldImage.hold();
        heldAtKill = await heldImage.waitHeld(HELD_AT_KILL, PROGRESS_TIMEOUT_MS);
        const pid = Number((await vhostd.log()).match(/vhostd\[(\d+)\] info: serving/)?.[1]);
        vhostd.kill("SIGKILL");
        // The held requests must stay unanswered until vhostd can no longer
        // complete them; then it can only exit once they are answered.
        await userThreadsDead(pid, EXIT_TIMEOUT_MS);
        heldImage.pump();
      } else {
        vhostd.kill("SIGKILL");
      }
      const status = await exitWithin(vhostd, EXIT_TIMEOUT_MS);
      assert.equal(status.signal, "SIGKILL", `vhostd ended with ${JSON.stringify(status)}`);
      const probeFrom = guest.serial.length;
      await guest.type(`PROBE ${cycle}\n`);
      const probe = await guest.waitForSerial(
        new RegExp(`^INFLIGHT ${cycle} +(\\d+) +(\\d+)\\n`, "m"),
        PROGRESS_TIMEOUT_MS,
        probeFrom,
      );
      const queueStatus: string[] = [];
      for (let queue = 0; queue < numQueues; queue++) {
        queueStatus.push(await queueStatusText(guest, queue));
      }
      vhostd = await startVhostd();
      const log = await ringsRunning(vhostd);
      from = guest.serial.length;
      reports.push({
        inflight: [Number(probe[1]), Number(probe[2])],
        ringBases: Array.from({ length: numQueues }, (_, k) => {
          const m = log.match(new RegExp(`ring ${k} running \\(size \\d+, avail (\\d+)\\)`));
          return m === null ? -1 : Number(m[1]);
        }),
        queueStatus,
        heldAtKill,
        resubmitted: [...log.matchAll(/queue \d+: resubmitting (\d+) request/g)]
          .reduce((sum, m) => sum + Number(m[1]), 0),
        messages: [...log.matchAll(/<- ([A-Z_]+)/g)].map((m) => m[1]),
      });
    }
    if (held) {
      for (const [i, r] of reports.entries()) {
        assert.ok(
          r.resubmitted > 0,
          `kill ${i + 1}: ${r.heldAtKill} requests were held inside the killed vhostd, ` +
            "but the next one resubmitted none",
        );
      }
    }
    // The last restart must carry the guest on too.
    await waitForChunks(guest, from, PROGRESS_CHUNKS, PROGRESS_TIMEOUT_MS);
    const stopFrom = guest.serial.length;
    await guest.type("STOP\n");
    const exit = await guest.waitForSerial(
      /^VHOSTD-TEST: EXIT (\d+)\n/m,
      VERIFY_TIMEOUT_MS,
      stopFrom,
    );
    assert.equal(exit[1], "0", "the guest script failed");
    assert.ok(await guest.waitForExit(EXIT_TIMEOUT_MS) !== null, "QEMU did not power off");
    const serial = guest.serial;

    // What the guest reported: chunks 0..n-1 of each writer, in order, read back intact.
    const counts: number[] = [];
    for (let w = 0; w < WRITERS; w++) {
      const wrote = serial.match(new RegExp(`^WROTE ${w} (\\d+)$`, "m"));
      assert.ok(wrote !== null, `writer ${w} never finished`);
      const n = Number(wrote[1]);
      // A kernel message may garble a line; the count comes from the guest's file.
      const chunks = doneLines(serial).filter(([dw]) => dw === w).map(([, i]) => i);
      assert.ok(
        chunks.every((i, j) => i < n && (j === 0 || i > chunks[j - 1])),
        `writer ${w} wrote ${n} chunks but its DONE lines say ${chunks}`,
      );
      assert.match(serial, new RegExp(`^VERIFY-OK ${w} ${n}$`, "m"));
      counts.push(n);
    }

    heldImage?.stopHolding();
    const final = await vhostd.stop();
    assert.equal(final.code, 0, `last vhostd's exit status on SIGTERM`);
    // The host's view: every reported record is on the image, nothing after them.
    const bytes = await Deno.readFile(image);
    assert.equal(bytes.length, IMAGE_SIZE, "image size changed");
    for (let w = 0; w < WRITERS; w++) {
      const base = w * REGION_RECORDS;
      const written = Math.min(counts[w], MAX_CHUNKS) * CHUNK_RECORDS;
      for (let k = base; k < base + written; k++) {
        const actual = bytes.subarray(k * RECORD_SIZE, (k + 1) * RECORD_SIZE);
        const expected = expectedRecord(k, w);
        assert.ok(
          actual.every((b, i) => b === expected[i]),
          `image block ${k} does not hold writer ${w}'s record: ${
            JSON.stringify(new TextDecoder().decode(actual.subarray(0, LINE_SIZE)))
          }`,
        );
      }
      const after = bytes.subarray(
        (base + written) * RECORD_SIZE,
        (base + REGION_RECORDS) * RECORD_SIZE,
      );
      assert.ok(
        after.every((b) => b === 0),
        `writer ${w}: blocks after its last chunk were written`,
      );
    }

    const resubmitting = reports.filter((r) => r.resubmitted > 0).length;
    console.log(
      `reconnect (${numQueues} queue(s)${held ? ", held image" : ""}): ${CYCLES} kills, ` +
        `${resubmitting} with requests in flight inside vhostd (resubmitted by the next); ` +
        `chunks per writer ${counts.join(",")}\n` +
        reports.map((r, i) =>
          `  kill ${i + 1}: ${
            r.heldAtKill === undefined ? "" : `${r.heldAtKill} held at the kill, `
          }` +
          `${r.resubmitted} resubmitted, guest in flight while down: reads=${r.inflight[0]} ` +
          `writes=${r.inflight[1]}, ` +
          `new vhostd started ring(s) at avail ${r.ringBases.join("/")}; ` +
          `QEMU while vhostd was down: ${r.queueStatus.join(" / ")}`
        ).join("\n"),
    );
    if (VERBOSE) {
      for (const [i, r] of reports.entries()) {
        console.log(`messages after kill ${i + 1}: ${r.messages.join(" ")}`);
      }
      console.log(`--- QEMU stderr ---\n${await guest.stderr}`);
    }
  } catch (error) {
    if (error instanceof Error) error.message += `\n${await diagnostics()}`;
    throw error;
  } finally {
    await guest?.dispose();
    heldImage?.stopHolding();
    for (const vhostd of vhostds) await vhostd.dispose();
    await heldImage?.dispose();
    if (KEEP) console.log(`kept ${dir}`);
    else await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("vhostd killed with writes in flight and restarted: QEMU reconnects, no record lost (1 queue)", () =>
  runReconnect({ numQueues: 1 }));

Deno.test("vhostd killed with writes in flight and restarted: QEMU reconnects, no record lost (2 queues, 2 vCPUs)", () =>
  runReconnect({ numQueues: 2 }));

Deno.test("vhostd killed holding 64+ writes (image on hold-mode latency_fs) and restarted: it resubmits them, no record lost (2 queues)", () =>
  runReconnect({ numQueues: 2, held: true }));
