import assert from "node:assert/strict";
import {
  BENCH_CHUNKS,
  BENCH_PHASES,
  benchPhaseTimes,
  fsBenchScript,
} from "../scripts/fs_bench_script.ts";

/**
 * The marks a guest running `fsBenchScript(tags, rounds)` would print: chunk c
 * of phase i in round r takes (r + i + c) ms on the first share, twice that on
 * the others, plus 0.5 ms of marking; `skip` names a chunk whose end mark is
 * missing.
 */
function fakeOutput(tags: string[], rounds: number, skip?: string): string {
  const lines: string[] = ["OK something", "MARK 0-x-write-0-start 5"];
  let clock = 1_000_000_000;
  for (let r = 1; r <= rounds; r++) {
    for (const [i, phase] of BENCH_PHASES.entries()) {
      for (let c = 0; c < BENCH_CHUNKS; c++) {
        // Marking costs 0.5 ms, once 9 ms (the median ignores it).
        lines.push(`MARK ${r}-null-${phase}-${c}-start ${clock}`);
        clock += c === 3 ? 9_000_000 : 500_000;
        lines.push(`MARK ${r}-null-${phase}-${c}-end ${clock}`);
        for (const tag of tags) {
          const name = `${r}-${tag}-${phase}-${c}`;
          lines.push(`MARK ${name}-start ${clock}`);
          clock += (r + i + c) * 1_000_000 * (tag === tags[0] ? 1 : 2) + 500_000;
          if (name !== skip) lines.push(`MARK ${name}-end ${clock}`);
          clock += 777_000; // between turns: not part of any chunk
        }
      }
    }
  }
  return lines.join("\n") + "\n";
}

/** Seconds phase i of round r takes on the first share: its chunks added up. */
function phaseSeconds(r: number, i: number): number {
  let ms = 0;
  for (let c = 0; c < BENCH_CHUNKS; c++) ms += r + i + c;
  return ms / 1000;
}

Deno.test("benchPhaseTimes gives each share its own time of every phase, less the marking", () => {
  const times = benchPhaseTimes(fakeOutput(["never", "virtiofsd"], 2), ["never", "virtiofsd"], 2);
  assert.deepEqual([...times.keys()], ["never", "virtiofsd"]);
  const never = times.get("never")!;
  const theirs = times.get("virtiofsd")!;
  assert.equal(never.length, 2);
  for (let r = 0; r < 2; r++) {
    for (const [i, phase] of BENCH_PHASES.entries()) {
      const want = phaseSeconds(r + 1, i);
      assert.ok(Math.abs(never[r][phase] - want) < 1e-9, `never r${r + 1} ${phase}`);
      assert.ok(Math.abs(theirs[r][phase] - 2 * want) < 1e-9, `theirs r${r + 1} ${phase}`);
    }
  }
});

Deno.test("benchPhaseTimes names the first mark a guest that stopped early did not print", () => {
  assert.throws(
    () => benchPhaseTimes(fakeOutput(["a", "b"], 2, "2-b-stat-3"), ["a", "b"], 2),
    /no marks for 2-b-stat-3$/,
  );
  assert.throws(
    () => benchPhaseTimes(fakeOutput(["a"], 1), ["a"], 2),
    /no marks for 2-null-write-0$/,
  );
});

Deno.test("fsBenchScript mounts every share, warms up untimed and reverses the order every round", () => {
  const script = fsBenchScript(["never", "virtiofsd", "auto"], 3);
  assert.match(
    script,
    /for t in never virtiofsd auto; do\n\s+mkdir -p \/mnt\/\$t && mount -t virtiofs \$t/,
  );
  assert.match(script, /^round unmarked 0 never virtiofsd auto$/m);
  assert.match(script, /^round mark 1 never virtiofsd auto$/m);
  assert.match(script, /^round mark 2 auto virtiofsd never$/m);
  assert.match(script, /^round mark 3 never virtiofsd auto$/m);
  assert.doesNotMatch(script, /^round mark 4/m);
  assert.match(script, new RegExp(`for p in ${BENCH_PHASES.join(" ")}; do`));
  assert.match(script, new RegExp(`while \\[ \\$c -lt ${BENCH_CHUNKS} \\]`));
});

Deno.test("fsBenchScript refuses shares and rounds it cannot frame", () => {
  assert.throws(() => fsBenchScript([], 1), RangeError);
  assert.throws(() => fsBenchScript(["a", "a"], 1), /repeat/);
  assert.throws(() => fsBenchScript(["a b"], 1), /short lowercase word/);
  assert.throws(() => fsBenchScript(["$(reboot)"], 1), /short lowercase word/);
  assert.throws(() => fsBenchScript(["null"], 1), /short lowercase word/);
  assert.throws(() => fsBenchScript(["a"], 0), /rounds/);
  assert.throws(() => fsBenchScript(["a"], 1.5), /rounds/);
});
