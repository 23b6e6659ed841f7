/**
 * Syscalls the `vhostd fs` daemon makes per FUSE operation, counted with
 * `strace -f -c`: for each scenario a fresh daemon runs under strace while
 * this script sends `--count` operations, and the counts of a run with no
 * operations are subtracted. Deterministic, unlike CPU time.
 *
 *   deno run -A scripts/fs_syscall_count.ts [--count 1000] [--uid 0]
 *
 * Prints, per operation, the syscalls per operation by name (noise from
 * Deno's runtime threads, such as futex, shows up as fractions).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { O_RDWR } from "../ffi/mod.ts";
import { FsDriver, SharedGuestMemory, VhostUserClient } from "../src/frontend/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { count: { type: "string", default: "1000" }, uid: { type: "string", default: "0" } },
});
const count = Number(values.count);
const uid = Number(values.uid);

/** What one run does after INIT; each returns nothing, the daemon's syscalls are what counts. */
const SCENARIOS: Record<string, (fs: FsDriver, n: number) => void> = {
  base: () => {},
  lookup: (fs, n) => {
    for (let i = 0; i < n; i++) fs.lookup(1n, "existing");
  },
  lookupForget: (fs, n) => {
    for (let i = 0; i < n; i++) fs.forget(fs.lookup(1n, "existing").nodeid, 1n);
  },
  create: (fs, n) => {
    for (let i = 0; i < n; i++) fs.create(1n, `f${i}`, O_RDWR, 0o644, 0o022);
  },
  createRelease: (fs, n) => {
    for (let i = 0; i < n; i++) fs.release(fs.create(1n, `f${i}`, O_RDWR, 0o644, 0o022).open.fh);
  },
  createReleaseUnlink: (fs, n) => {
    for (let i = 0; i < n; i++) {
      fs.release(fs.create(1n, `f${i}`, O_RDWR, 0o644, 0o022).open.fh);
      fs.unlink(1n, `f${i}`);
    }
  },
  mkdir: (fs, n) => {
    for (let i = 0; i < n; i++) fs.mkdir(1n, `d${i}`, 0o755, 0o022);
  },
};

/** Per operation: the scenario and the one whose counts are subtracted. */
const OPERATIONS: [string, string, string][] = [
  ["LOOKUP", "lookup", "base"],
  ["FORGET", "lookupForget", "lookup"],
  ["CREATE", "create", "base"],
  ["RELEASE", "createRelease", "create"],
  ["UNLINK", "createReleaseUnlink", "createRelease"],
  ["MKDIR", "mkdir", "base"],
];

/** Connects once the daemon listens (the socket appears when it does). */
async function connect(socket: string): Promise<VhostUserClient> {
  for (let attempt = 0;; attempt++) {
    try {
      return VhostUserClient.connect(socket);
    } catch (error) {
      if (attempt >= 600) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** Runs one scenario under strace; syscall name → calls. */
async function run(scenario: string, n: number): Promise<Map<string, number>> {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-syscalls-" });
  const share = `${dir}/share`;
  await Deno.mkdir(share);
  await Deno.chmod(dir, 0o755);
  await Deno.chmod(share, 0o777); // a caller other than vhostd creates in it
  await Deno.writeTextFile(`${share}/existing`, "x");
  const socket = `${dir}/fs.sock`;
  const out = `${dir}/strace.txt`;
  const main = new URL("../main.ts", import.meta.url).pathname;
  const strace = new Deno.Command("strace", {
    args: ["-f", "-c", "-o", out, "--", Deno.execPath(), "run", "-A", main, "fs"]
      .concat(["--shared-dir", share, "--socket-path", socket, "--sandbox", "none"]),
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const client = await connect(socket);
    const memory = SharedGuestMemory.create({ size: 16 << 20 });
    const driver = FsDriver.setup(client, memory, { queueSize: 64, uid, gid: uid });
    try {
      driver.init();
      SCENARIOS[scenario](driver, n);
    } finally {
      driver.close();
      memory.close();
    }
  } finally {
    // strace ignores SIGINT while it runs a command: stop the daemon, strace then writes its table.
    const children = Deno.readTextFileSync(`/proc/${strace.pid}/task/${strace.pid}/children`);
    for (const pid of children.trim().split(/\s+/).filter((p) => p !== "")) {
      Deno.kill(Number(pid), "SIGTERM");
    }
    await strace.status;
  }
  const counts = parseSummary(await Deno.readTextFile(out));
  await Deno.remove(dir, { recursive: true });
  return counts;
}

/** Parses strace -c's table: "% time seconds usecs/call calls [errors] syscall". */
function parseSummary(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 5 || !/^\d/.test(fields[0]) || fields.at(-1) === "total") continue;
    counts.set(fields.at(-1)!, Number(fields[3]));
  }
  return counts;
}

const results = new Map<string, Map<string, number>>();
for (const scenario of Object.keys(SCENARIOS)) {
  results.set(scenario, await run(scenario, scenario === "base" ? 0 : count));
}
for (const [op, scenario, baseline] of OPERATIONS) {
  const a = results.get(scenario)!;
  const b = results.get(baseline)!;
  const per: string[] = [];
  let total = 0;
  for (const name of new Set([...a.keys(), ...b.keys()])) {
    const value = ((a.get(name) ?? 0) - (b.get(name) ?? 0)) / count;
    if (Math.abs(value) < 0.05) continue;
    total += value;
    per.push(`${name} ${value.toFixed(2)}`);
  }
  console.log(`${op}: ${total.toFixed(2)} syscalls/op: ${per.join(", ")}`);
}
