/**
 * The `vhostd state` command line and `vhostd blk --dump-state`, run as
 * separate processes against real back-ends: dump files for every transfer,
 * `state inspect` (text and JSON), and bad input answered with one line on
 * stderr and exit code 2.
 */

import assert from "node:assert/strict";
import { bindUnix, closeQuietly, socketUnix } from "../ffi/mod.ts";
import { BlkFixture } from "./support/blk_fixture.ts";
import {
  type CliResult,
  countLogLines,
  craftStream,
  flipped,
  loadFromBytes,
  metadataOf,
  negotiateForState,
  nextLogLine,
  runVhostdCli,
  scatterWrites,
  sectionLayout,
  STATE_PROTOCOL_FEATURES,
} from "./support/state_tools.ts";
import { BackendRefused, VhostUserClient } from "../src/frontend/mod.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const DUMP_NAME = /^blk-\d{8}T\d{6}-\d{3}Z-\d{4}-(save|load)\.vhostd-state$/;

/** Exit code 2 and exactly one line on stderr, starting with "vhostd:" and matching `why`. */
function assertUsageError(result: CliResult, why: RegExp, what: string): void {
  const lines = result.stderr.trimEnd().split("\n");
  assert.equal(result.code, 2, `${what}: exit code (stderr: ${result.stderr})`);
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0], /^vhostd: /, what);
  assert.match(lines[0], why, what);
}

Deno.test("--dump-state: a copy of every saved and loaded state, sortable by time; state inspect reads them (text and JSON)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-dump-" });
  const dumps = `${dir}/dumps`;
  await Deno.mkdir(dumps);
  try {
    await withVhostd({ args: ["--ram", "8M", "--dump-state", dumps] }, async (vhostd) => {
      {
        using s = BlkFixture.open(vhostd.socketPath);
        scatterWrites(s.driver, 8 * 2 ** 20, { count: 3, pieceSize: 64 * 1024, edges: true });
      }
      const cli = (...args: string[]) => runVhostdCli(["state", ...args]);
      const sock = ["--socket-path", vhostd.socketPath];
      assert.equal((await cli("save", ...sock, "-o", `${dir}/one.state`)).code, 0);
      assert.equal((await cli("load", ...sock, "-i", `${dir}/one.state`)).code, 0);
      {
        using s = BlkFixture.open(vhostd.socketPath);
        assert.equal(s.driver.read(0, 0, 4096).status, 0); // the second save differs
      }
      assert.equal((await cli("save", ...sock, "-o", `${dir}/two.state`)).code, 0);
      const one = await Deno.readFile(`${dir}/one.state`);
      const two = await Deno.readFile(`${dir}/two.state`);
      assert.notDeepEqual(two, one);

      // A refused LOAD is kept too (that is when a copy helps most), and the log says where.
      const corrupt = flipped(one, sectionLayout(one)[1].chunks[0].offset + 100);
      const client = VhostUserClient.connect(vhostd.socketPath);
      try {
        negotiateForState(client);
        const failures = countLogLines(vhostd, "device state load failed");
        assert.throws(() => loadFromBytes(client, corrupt), BackendRefused);
        const line = await nextLogLine(vhostd, "device state load failed", failures);
        assert.match(line, new RegExp(`copy in ${dumps}/blk-.*-load\\.vhostd-state`));
      } finally {
        client.close();
      }

      const names: string[] = [];
      for await (const entry of Deno.readDir(dumps)) names.push(entry.name);
      names.sort();
      assert.equal(names.length, 4, names.join("\n"));
      for (const name of names) assert.match(name, DUMP_NAME);
      assert.deepEqual(
        names.map((n) => n.match(/-(save|load)\./)![1]),
        ["save", "load", "save", "load"],
        "names sort in the order of the transfers",
      );
      const contents = await Promise.all(names.map((n) => Deno.readFile(`${dumps}/${n}`)));
      assert.deepEqual(contents[0], one, "the save dump is what the tool saved");
      assert.deepEqual(contents[1], one, "the load dump is what the back-end received");
      assert.deepEqual(contents[2], two);
      assert.deepEqual(contents[3], corrupt);

      const text = await cli("inspect", `${dumps}/${names[1]}`);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /device kind: +blk/);
      assert.match(text.stdout, /RAM_DISK/);
      assert.match(text.stdout, /checksum: +OK/);
      const json = await cli("inspect", `${dumps}/${names[2]}`, "--json");
      assert.equal(json.code, 0, json.stderr);
      const parsed = JSON.parse(json.stdout);
      assert.equal(parsed.header.kind, "blk");
      assert.deepEqual(parsed.sections.map((s: { name: string }) => s.name), [
        "METADATA",
        "RAM_DISK",
      ]);
      assert.equal(parsed.checksumOk, true);
      assert.equal(parsed.error, null);
      assert.deepEqual(parsed.metadata, metadataOf(two));
      assert.equal(parsed.totalBytes, two.length);
      const bad = await cli("inspect", `${dumps}/${names[3]}`, "--json");
      assert.equal(bad.code, 2, "inspect of a corrupt file exits with 2");
      assert.match(JSON.parse(bad.stdout).error, /checksum mismatch/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vhostd state: bad input gives one line on stderr and exit code 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-cli-" });
  try {
    await Deno.writeTextFile(`${dir}/notes.txt`, "these are not the bytes you are looking for\n");
    await Deno.writeFile(`${dir}/fs.state`, craftStream("fs", { tag: "shared" }, {}));
    await withVhostd({ args: ["--ram", "8M"] }, async (vhostd) => {
      const sock = ["--socket-path", vhostd.socketPath];
      const failures = countLogLines(vhostd, "device state load failed");
      const cases: [string[], RegExp, string][] = [
        [
          ["load", ...sock, "-i", `${dir}/missing.state`],
          /cannot open .*missing\.state: ENOENT/,
          "missing file",
        ],
        [
          ["load", ...sock, "-i", `${dir}/notes.txt`],
          /not a vhostd state file/,
          "not a state file",
        ],
        [["load", ...sock, "-i", `${dir}/fs.state`], /refused/, "state of another kind"],
        [["inspect", `${dir}/notes.txt`], /not a vhostd state file/, "inspect of a non-state file"],
        [["inspect", `${dir}/missing.state`], /cannot open/, "inspect of a missing file"],
        [["frobnicate"], /unknown state action "frobnicate"/, "unknown action"],
        [["save", "-o", `${dir}/out.state`], /--socket-path/, "save without --socket-path"],
        [["load", "-i", `${dir}/fs.state`], /--socket-path/, "load without --socket-path"],
        [["save", ...sock], /-o FILE/, "save without -o"],
        [
          ["save", ...sock, "-o", `${dir}/no/such/dir/out.state`],
          /cannot create/,
          "unwritable output",
        ],
        [["save", ...sock, "--bogus"], /bogus/, "unknown option"],
      ];
      const results = await Promise.all(cases.map(([args]) => runVhostdCli(["state", ...args])));
      results.forEach((result, i) => assertUsageError(result, cases[i][1], cases[i][2]));
      // The foreign state reached the back-end, which refused it for its kind.
      assert.match(
        await nextLogLine(vhostd, "device state load failed", failures),
        /device kind is fs, expected blk/,
      );
      // Nothing half-written was left behind.
      const left: string[] = [];
      for await (const entry of Deno.readDir(dir)) left.push(entry.name);
      assert.deepEqual(left.sort(), ["fs.state", "notes.txt"]);
      // And the back-end is as it was: it still serves a state transfer.
      const client = VhostUserClient.connect(vhostd.socketPath);
      try {
        negotiateForState(client, STATE_PROTOCOL_FEATURES);
      } finally {
        client.close();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vhostd state save/load against a socket nobody listens on: one line and exit code 2, promptly", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-cli-" });
  const stale = socketUnix();
  try {
    // A socket file whose owner never listened (a back-end that died): ECONNREFUSED.
    bindUnix(stale, `${dir}/stale.sock`);
    await Deno.writeFile(`${dir}/fs.state`, craftStream("fs", { tag: "shared" }, {}));
    const cases: [string[], string][] = [
      [["save", "--socket-path", `${dir}/nobody.sock`, "-o", `${dir}/a.state`], "no socket file"],
      [["save", "--socket-path", `${dir}/stale.sock`, "-o", `${dir}/b.state`], "stale socket"],
      [["load", "--socket-path", `${dir}/nobody.sock`, "-i", `${dir}/fs.state`], "load"],
    ];
    const results = await Promise.all(
      cases.map(([args]) => runVhostdCli(["state", ...args], 6_000)),
    );
    results.forEach((result, i) => {
      assert.ok(result.ms < 5_000, `${cases[i][1]}: took ${Math.round(result.ms)} ms`);
      assertUsageError(result, /cannot connect/, cases[i][1]);
    });
    const left: string[] = [];
    for await (const entry of Deno.readDir(dir)) left.push(entry.name);
    assert.deepEqual(left.sort(), ["fs.state", "stale.sock"], "no output file was created");
  } finally {
    closeQuietly(stale);
    await Deno.remove(dir, { recursive: true });
  }
});
