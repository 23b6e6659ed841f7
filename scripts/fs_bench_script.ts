/**
 * The guest side of the virtio-fs benchmark (`scripts/bench_fs.ts`): a
 * busybox shell script that mounts several shares, each served by a
 * different back-end, and runs the same workload on each of them in turns,
 * and the reader of the times it prints.
 *
 * Why one guest for every back-end, in turns of a fraction of a second:
 * this machine's speed drifts by up to 2× over minutes (a shared host), so
 * a guest booted per back-end compared runs made minutes apart — the same
 * back-end's create phase took 0.99 s in one run and 2.02 s in another; and
 * whole phases in turns (1–2 s each) still gave rounds from 0.76× to 1.07×.
 * Here every phase is cut into {@linkcode BENCH_CHUNKS} chunks and the
 * shares take turns chunk by chunk, the order reversed every chunk, so a
 * drift touches them alike.
 *
 * @module
 */

import { CHECK_HELPERS } from "../tests/qemu/fs_guest_scripts.ts";

/** Size of the file the fs benchmark writes and reads, in MiB. */
export const BENCH_FILE_MIB = 64;
/** Files the fs benchmark creates, stats and unlinks. */
export const BENCH_FILES = 1000;
/**
 * Turns per phase: each share runs an eighth of a phase (8 MiB, 125 files)
 * before the next share takes its turn, so that shares are never more than
 * a fraction of a second apart.
 */
export const BENCH_CHUNKS = 8;
const CHUNK_MIB = BENCH_FILE_MIB / BENCH_CHUNKS;
const CHUNK_FILES = BENCH_FILES / BENCH_CHUNKS;

/** The phases of one round, in the order they run (each needs the one before). */
export const BENCH_PHASES = ["write", "read", "create", "stat", "unlink"] as const;
/** One phase of the workload. */
export type BenchPhase = typeof BENCH_PHASES[number];

/** Seconds each phase took on one share in one round. */
export type PhaseTimes = Record<BenchPhase, number>;

const TAG_PATTERN = /^[a-z][a-z0-9-]{0,30}$/;
/** The marks of an empty chunk: what marking costs (a fork of `grep` under TCG is milliseconds). */
const NULL_TAG = "null";

/**
 * The benchmark script for shares tagged `tags` (mounted at `/mnt/TAG`):
 * one untimed round (a warm-up: a back-end's first requests run colder
 * code), then `rounds` timed ones. A round runs every phase — sequential
 * write of {@linkcode BENCH_FILE_MIB} MiB (`dd bs=1M conv=fsync`, a chunk
 * at a time), its read after dropping caches, create (`: >f`), stat
 * (`[ -e f ]`, after dropping caches so that every name is looked up again)
 * and unlink (`rm`) of {@linkcode BENCH_FILES} files — in
 * {@linkcode BENCH_CHUNKS} chunks, each chunk on every share before the
 * next chunk, the shares' order reversed every chunk and every round. Each
 * timed chunk is framed by `MARK ROUND-TAG-PHASE-CHUNK-start|end
 * NANOSECONDS` lines (the monotonic clock of /proc/timer_list;
 * /proc/uptime counts in 10 ms steps), and each chunk's turns are preceded
 * by an empty chunk of the tag `null`: what the two marks cost by
 * themselves, a fork of `grep` each (milliseconds under TCG, as long as an
 * 8 MiB read).
 *
 * @throws {RangeError} for no tags, a repeated tag, a tag that is not a short
 *   lowercase word (or `null`, the empty chunks' tag), or rounds that are not
 *   a whole number of at least 1
 */
export function fsBenchScript(tags: string[], rounds: number): string {
  if (tags.length === 0) throw new RangeError("the benchmark needs at least one share");
  for (const tag of tags) {
    if (!TAG_PATTERN.test(tag) || tag === NULL_TAG) {
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
# Untimed set-up of each phase, once for every share (dropping caches is global).
prepare_write() { :; }
prepare_read() { sync; echo 3 >/proc/sys/vm/drop_caches; }
prepare_create() { :; }
prepare_stat() { echo 3 >/proc/sys/vm/drop_caches; }
prepare_unlink() { :; }
# run_PHASE CHUNK, in the share's round directory: chunk CHUNK of the phase.
run_write() {
  dd if=/dev/zero of=seq bs=1M count=${CHUNK_MIB} seek=$(($1 * ${CHUNK_MIB})) conv=fsync,notrunc \
    2>/tmp/err || bad "write: $(cat /tmp/err)"
}
run_read() {
  dd if=seq of=/dev/null bs=1M count=${CHUNK_MIB} skip=$(($1 * ${CHUNK_MIB})) 2>/tmp/err ||
    bad "read: $(cat /tmp/err)"
}
run_create() {
  cd files || return
  i=0
  while [ $i -lt ${CHUNK_FILES} ]; do : >"c$1f$i" || { bad "create c$1f$i"; break; }; i=$((i + 1)); done
}
run_stat() {
  cd files || return
  i=0
  while [ $i -lt ${CHUNK_FILES} ]; do [ -e "c$1f$i" ] || { bad "stat c$1f$i"; break; }; i=$((i + 1)); done
}
run_unlink() { cd files && rm c$1f* || bad unlink; }
# round MARKER ROUND TAG...: every phase on every share, chunk by chunk, the shares taking
# turns per chunk in the order given and the reverse.
round() {
  m=$1; r=$2; shift 2
  order="$*"; reverse=""
  for t in "$@"; do reverse="$t $reverse"; done
  for t in "$@"; do mkdir /mnt/$t/r$r /mnt/$t/r$r/files || bad "mkdir $t r$r"; done
  for p in ${BENCH_PHASES.join(" ")}; do
    prepare_$p
    c=0
    while [ $c -lt ${BENCH_CHUNKS} ]; do
      if [ $((c % 2)) = 0 ]; then turns=$order; else turns=$reverse; fi
      # What a chunk's two marks cost by themselves (subtracted from every chunk).
      $m $r-${NULL_TAG}-$p-$c-start
      $m $r-${NULL_TAG}-$p-$c-end
      for t in $turns; do
        cd /mnt/$t/r$r || bad "cd $t r$r"
        $m $r-$t-$p-$c-start
        run_$p $c
        $m $r-$t-$p-$c-end
        cd /
      done
      c=$((c + 1))
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
 * {@linkcode PhaseTimes} per timed round, in round order: each phase's
 * chunks added up, less the median cost of marking (the phase's empty
 * chunks in that round) from each.
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
  const chunkSeconds = (name: string): number => {
    const start = marks.get(`${name}-start`);
    const end = marks.get(`${name}-end`);
    if (start === undefined || end === undefined) {
      throw new Error(`the guest printed no marks for ${name}`);
    }
    return end - start;
  };
  const times = new Map<string, PhaseTimes[]>();
  for (const tag of tags) {
    const perRound: PhaseTimes[] = [];
    for (let round = 1; round <= rounds; round++) {
      const phases = {} as PhaseTimes;
      for (const phase of BENCH_PHASES) {
        const marking: number[] = [];
        for (let chunk = 0; chunk < BENCH_CHUNKS; chunk++) {
          marking.push(chunkSeconds(`${round}-${NULL_TAG}-${phase}-${chunk}`));
        }
        marking.sort((a, b) => a - b);
        const markCost = marking[marking.length >> 1];
        let seconds = 0;
        for (let chunk = 0; chunk < BENCH_CHUNKS; chunk++) {
          seconds += Math.max(0, chunkSeconds(`${round}-${tag}-${phase}-${chunk}`) - markCost);
        }
        // A phase shorter than the clock's step still counts as taking time.
        phases[phase] = Math.max(seconds, 1e-6);
      }
      perRound.push(phases);
    }
    times.set(tag, perRound);
  }
  return times;
}
