import assert from "node:assert/strict";
import { BENCH_PHASES, benchPhaseTimes, fsBenchScript } from "../scripts/fs_bench_script.ts";

/** The marks a guest running `fsBenchScript(tags, rounds)` would print, phase i of round r taking r+i ms. */
function fakeOutput(tags: string[], rounds: number, skip?: string): string {
  const lines: string[] = ["OK something", "MARK 0-x-write-start 5"];
  let clock = 1_000_000_000;
  for (let r = 1; r <= rounds; r++) {
    for (const [i, phase] of BENCH_PHASES.entries()) {
      for (const tag of tags) {
        const name = `${r}-${tag}-${phase}`;
        lines.push(`MARK ${name}-start ${clock}`);
        clock += (r + i) * 1_000_000 * (tag === tags[0] ? 1 : 2);
        if (name !== skip) lines.push(`MARK ${name}-end ${clock}`);
      }
    }
  }
  return lines.join("\n") + "\n";
}

Deno.test("benchPhaseTimes gives each share its own time of every phase, round by round", () => {
  const times = benchPhaseTimes(fakeOutput(["never", "virtiofsd"], 2), ["never", "virtiofsd"], 2);
  assert.deepEqual([...times.keys()], ["never", "virtiofsd"]);
  const never = times.get("never")!;
  const theirs = times.get("virtiofsd")!;
  assert.equal(never.length, 2);
  for (let r = 0; r < 2; r++) {
    for (const [i, phase] of BENCH_PHASES.entries()) {
      assert.ok(Math.abs(never[r][phase] - (r + 1 + i) / 1000) < 1e-9, `never r${r + 1} ${phase}`);
      assert.ok(Math.abs(theirs[r][phase] - 2 * (r + 1 + i) / 1000) < 1e-9, `theirs ${phase}`);
    }
  }
});

Deno.test("benchPhaseTimes names the first mark a guest that stopped early did not print", () => {
  assert.throws(
    () => benchPhaseTimes(fakeOutput(["a", "b"], 2, "2-b-stat"), ["a", "b"], 2),
    /no marks for 2-b-stat/,
  );
  assert.throws(() => benchPhaseTimes(fakeOutput(["a"], 1), ["a"], 2), /no marks for 2-a-write/);
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
});

Deno.test("fsBenchScript refuses shares and rounds it cannot frame", () => {
  assert.throws(() => fsBenchScript([], 1), RangeError);
  assert.throws(() => fsBenchScript(["a", "a"], 1), /repeat/);
  assert.throws(() => fsBenchScript(["a b"], 1), /short lowercase word/);
  assert.throws(() => fsBenchScript(["$(reboot)"], 1), /short lowercase word/);
  assert.throws(() => fsBenchScript(["a"], 0), /rounds/);
  assert.throws(() => fsBenchScript(["a"], 1.5), /rounds/);
});
