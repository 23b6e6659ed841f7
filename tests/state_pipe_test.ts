/**
 * `vhostd state save -o -` and `state load -i -` through real pipes (a
 * shell pipeline between two back-ends started by the test): the state
 * arrives whole, and a truncated or corrupt stream on stdin is refused by
 * the back-end, which keeps what it had.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { BlkFixture } from "./support/blk_fixture.ts";
import { flipped, scatterWrites, sectionLayout } from "./support/state_tools.ts";
import { type VhostdProcess, withVhostd } from "./support/vhostd_process.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const DISK = 8 * 2 ** 20;
const READ_STEP = 256 * 1024;

/** What a shell pipeline returned: each stage's exit code (bash PIPESTATUS) and stderr. */
interface PipelineResult {
  codes: number[];
  stderr: string;
}

/**
 * Runs `script` with bash; `$VHOSTD` runs this checkout's vhostd. The
 * script's last line prints PIPESTATUS, which is what `codes` holds.
 */
async function pipeline(script: string, env: Record<string, string> = {}): Promise<PipelineResult> {
  const out = await new Deno.Command("bash", {
    args: ["-c", `${script}\necho "codes: \${PIPESTATUS[*]}"`],
    env: { VHOSTD: `${Deno.execPath()} run -A ${MAIN}`, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  const line = stdout.split("\n").find((l) => l.startsWith("codes: "));
  assert.ok(line, `no exit codes from the pipeline; stdout:\n${stdout}\nstderr:\n${stderr}`);
  return { codes: line.slice(7).trim().split(" ").map(Number), stderr };
}

/** The whole disk behind `vhostd`, read through a front-end. */
function readDisk(vhostd: VhostdProcess): Uint8Array {
  using s = BlkFixture.open(vhostd.socketPath);
  const disk = new Uint8Array(DISK);
  for (let at = 0; at < DISK; at += READ_STEP) {
    const got = s.driver.read(0, at / 512, READ_STEP);
    assert.equal(got.status, 0, `read at ${at}`);
    disk.set(got.data!, at);
  }
  return disk;
}

function fill(vhostd: VhostdProcess, count: number, offsetSectors: number): void {
  using s = BlkFixture.open(vhostd.socketPath);
  scatterWrites(s.driver, DISK, { count, pieceSize: 256 * 1024, offsetSectors, edges: true });
}

function twoBackends(body: (a: VhostdProcess, b: VhostdProcess) => Promise<void>): Promise<void> {
  const args = ["--ram", String(DISK)];
  return withVhostd({ args }, (a) => withVhostd({ args }, (b) => body(a, b)));
}

Deno.test("state save -o - | state load -i -: the target back-end ends with the source's disk", async () => {
  await twoBackends(async (a, b) => {
    fill(a, 12, 0);
    fill(b, 5, 77); // the target's own, different contents must be replaced
    const source = readDisk(a);
    assert.notDeepEqual(readDisk(b), source);
    const result = await pipeline(
      '$VHOSTD state save --socket-path "$A" -o - | $VHOSTD state load --socket-path "$B" -i -',
      { A: a.socketPath, B: b.socketPath },
    );
    assert.deepEqual(result.codes, [0, 0], result.stderr);
    assert.match(result.stderr, /^saved .* to stdout$/m);
    assert.match(result.stderr, /^loaded .* from stdin$/m);
    assert.deepEqual(readDisk(b), source, "the target's disk is the source's");
    assert.deepEqual(readDisk(a), source, "SAVE changed nothing on the source");
  });
});

Deno.test("state load -i -: a truncated or corrupt stream on stdin is refused and the back-end keeps its disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-pipe-" });
  try {
    await twoBackends(async (a, b) => {
      fill(a, 12, 0);
      fill(b, 5, 77);
      const before = readDisk(b);
      const file = `${dir}/a.state`;
      const saved = await pipeline(`$VHOSTD state save --socket-path "$A" -o - > "${file}"`, {
        A: a.socketPath,
      });
      assert.deepEqual(saved.codes, [0], saved.stderr);
      const stream = await Deno.readFile(file);
      const ramDisk = sectionLayout(stream)[1];
      const cases: [string, number | Uint8Array][] = [
        ["cut inside RAM_DISK", ramDisk.chunks[0].offset + 100_000],
        ["cut before END", stream.length - 24],
        ["cut in the last byte", stream.length - 1],
        ["a flipped data byte", flipped(stream, ramDisk.chunks[0].offset + 5000)],
      ];
      for (const [what, damage] of cases) {
        const input = `${dir}/damaged.state`;
        await Deno.writeFile(
          input,
          typeof damage === "number" ? stream.subarray(0, damage) : damage,
        );
        // Through cat, stdin is a pipe: load cannot check the file first, the back-end must.
        const result = await pipeline(
          `cat "${input}" | $VHOSTD state load --socket-path "$B" -i -`,
          { B: b.socketPath },
        );
        assert.equal(result.codes[1], 2, `${what}: exit code 2 (stderr: ${result.stderr})`);
        assert.match(result.stderr, /refused/, what);
        assert.deepEqual(readDisk(b), before, `${what}: the back-end kept its disk`);
      }
      // The whole stream through the same path is taken: the refusals were about the damage.
      const whole = await pipeline(`cat "${file}" | $VHOSTD state load --socket-path "$B" -i -`, {
        B: b.socketPath,
      });
      assert.deepEqual(whole.codes, [0, 0], whole.stderr);
      assert.deepEqual(readDisk(b), readDisk(a));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("state save -o -: a reader that goes away makes the save fail with a message on stderr", async () => {
  await withVhostd({ args: ["--ram", String(DISK)] }, async (a) => {
    fill(a, 12, 0); // 3 MiB of data: more than the pipes hold
    const result = await pipeline(
      `$VHOSTD state save --socket-path "$A" -o - | head -c 1000 > /dev/null`,
      { A: a.socketPath },
    );
    assert.equal(result.codes[0], 1, `the save failed (stderr: ${result.stderr})`);
    assert.equal(result.codes[1], 0);
    assert.match(result.stderr, /^vhostd: writing the state to stdout failed: the reader closed/m);
    // The back-end still serves a whole save afterwards.
    const again = await pipeline(`$VHOSTD state save --socket-path "$A" -o - | wc -c`, {
      A: a.socketPath,
    });
    assert.deepEqual(again.codes, [0, 0], again.stderr);
  });
});
