/**
 * The guest side of the virtio-fs benchmark (`scripts/bench_fs.ts`): a
 * busybox shell script that mounts several shares, each served by a
 * different back-end, and runs the same workload on each of them in turns,
 * and the reader of the times it prints.
 *
 * Why one guest for every back-end, phase by phase: this machine's speed
 * drifts by up to 2× over minutes (a shared host), so a guest booted per
 * back-end compared runs made minutes apart — the same back-end's create
 * phase took 0.99 s in one run and 2.02 s in another. Here the back-ends
 * take turns within seconds, each phase on each share one after the other,
 * the order reversed every round, so a drift touches them alike.
 *
 * @module
 */

import { CHECK_HELPERS } from "../tests/qemu/fs_guest_scripts.ts";

/** Size of the file the fs benchmark writes and reads, in MiB. */
export const BENCH_FILE_MIB = 64;
/** Files the fs benchmark creates, stats and unlinks. */
export const BENCH_FILES = 1000;

/** The phases of one round, in the order they run (each needs the one before). */
export const BENCH_PHASES = ["write", "read", "create", "stat", "unlink"] as const;
/** One phase of the workload. */
export type BenchPhase = typeof BENCH_PHASES[number];

/** Seconds each phase took on one share in one round. */
export type PhaseTimes = Record<BenchPhase, number>;

const TAG_PATTERN = /^[a-z][a-z0-9-]{0,30}$/;

/**
 * The benchmark script for shares tagged `tags` (mounted at `/mnt/TAG`):
 * one untimed round (a warm-up: a back-end's first requests run colder
 * code), then `rounds` timed ones. A round runs every phase — sequential
 * write of {@linkcode BENCH_FILE_MIB} MiB (`dd bs=1M conv=fsync`), its read
 * after dropping caches, create (`: >f`), stat (`[ -e f ]`, after dropping
 * caches so that every name is looked up again) and unlink (one `rm`) of
 * {@linkcode BENCH_FILES} files — each phase on every share before the next
 * phase, the shares' order reversed every other round. Each timed phase is
 * framed by `MARK ROUND-TAG-PHASE-start|end NANOSECONDS` lines (the
 * monotonic clock of /proc/timer_list; /proc/uptime counts in 10 ms steps).
 *
 * @throws {RangeError} for no tags, a repeated tag, a tag that is not a short
 *   lowercase word, or rounds that are not a whole number of at least 1
 */
export function fsBenchScript(tags: string[], rounds: number): string {
  if (tags.length === 0) throw new RangeError("the benchmark needs at least one share");
  for (const tag of tags) {
    if (!TAG_PATTERN.test(tag)) {
      throw new RangeError(`share tag "${tag}" is not a short lowercase word`);
    }
  }
  if (new Set(tags).size !== tags.length) {
    throw new RangeError(`share tags repeat: ${tags.join(" ")}`);
  }
  if (!Number.isInteger(rounds) || rounds < 1) {
    throw new RangeError(`rounds must be a whole number of at least 1, got ${rounds}`);
  }
  const forward = tags.join(" ");
  const backward = [...tags].reverse().join(" ");
  const timed = Array.from(
    { length: rounds },
    (_, r) => `round mark ${r + 1} ${r % 2 === 0 ? forward : backward}`,
  );
  return `${CHECK_HELPERS}
for t in ${forward}; do
  mkdir -p /mnt/$t && mount -t virtiofs $t /mnt/$t || { echo "MOUNT-FAILED $t"; exit 10; }
done
mark() { set -- "$1" $(grep -m1 "now at" /proc/timer_list); echo "MARK $1 $4"; }
unmarked() { :; }
# Untimed set-up of each phase (the working directory is the share's round directory).
prepare_write() { :; }
prepare_read() { sync; echo 3 >/proc/sys/vm/drop_caches; }
prepare_create() { cd files || bad "cd files"; }
prepare_stat() { cd /; echo 3 >/proc/sys/vm/drop_caches; cd $1/files || bad "cd files"; }
prepare_unlink() { cd files || bad "cd files"; }
run_write() { dd if=/dev/zero of=seq bs=1M count=${BENCH_FILE_MIB} conv=fsync 2>/tmp/err || bad "write: $(cat /tmp/err)"; }
run_read() { dd if=seq of=/dev/null bs=1M 2>/tmp/err || bad "read: $(cat /tmp/err)"; }
run_create() {
  i=0
  while [ $i -lt ${BENCH_FILES} ]; do : >"f$i" || { bad "create f$i"; break; }; i=$((i + 1)); done
}
run_stat() {
  i=0
  while [ $i -lt ${BENCH_FILES} ]; do [ -e "f$i" ] || { bad "stat f$i"; break; }; i=$((i + 1)); done
}
run_unlink() { rm f* || bad unlink; }
# round MARKER ROUND TAG...: every phase, each on every share in the order given.
round() {
  m=$1; r=$2; shift 2
  for t in "$@"; do mkdir /mnt/$t/r$r /mnt/$t/r$r/files || bad "mkdir $t r$r"; done
  for p in ${BENCH_PHASES.join(" ")}; do
    for t in "$@"; do
      d=/mnt/$t/r$r
      cd $d || bad "cd $d"
      prepare_$p $d
      $m $r-$t-$p-start
      run_$p
      $m $r-$t-$p-end
      cd /
    done
  done
  for t in "$@"; do
    expect "$t-r$r-write-size" "$(stat -c %s /mnt/$t/r$r/seq)" $((${BENCH_FILE_MIB} * 1024 * 1024))
    expect "$t-r$r-unlinked" "$(ls /mnt/$t/r$r/files | wc -l)" 0
    rm -r /mnt/$t/r$r || bad "rm $t r$r"
  done
}
round unmarked 0 ${forward}
${timed.join("\n")}
for t in ${forward}; do umount /mnt/$t || bad "umount $t"; done
echo "FAILURES $failures"
exit $failures
`;
}

/**
 * The times `fsBenchScript(tags, rounds)` printed: for each tag, one
 * {@linkcode PhaseTimes} per timed round, in round order.
 *
 * @throws {Error} naming the first mark missing (a guest that stopped early)
 */
export function benchPhaseTimes(
  output: string,
  tags: string[],
  rounds: number,
): Map<string, PhaseTimes[]> {
  const marks = new Map<string, number>();
  for (const match of output.matchAll(/^MARK (\S+) (\d+)$/gm)) {
    marks.set(match[1], Number(match[2]) / 1e9);
  }
  const times = new Map<string, PhaseTimes[]>();
  for (const tag of tags) {
    const perRound: PhaseTimes[] = [];
    for (let round = 1; round <= rounds; round++) {
      const phases = {} as PhaseTimes;
      for (const phase of BENCH_PHASES) {
        const name = `${round}-${tag}-${phase}`;
        const start = marks.get(`${name}-start`);
        const end = marks.get(`${name}-end`);
        if (start === undefined || end === undefined) {
          throw new Error(`the guest printed no marks for ${name}`);
        }
        // A phase shorter than the clock's step still counts as taking time.
        phases[phase] = Math.max(end - start, 1e-6);
      }
      perRound.push(phases);
    }
    times.set(tag, perRound);
  }
  return times;
}
