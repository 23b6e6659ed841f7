/**
 * End to end against QEMU 10: a TCG guest runs `ls -lR` (LOOKUP/READDIRPLUS
 * and GETATTR of every entry) over a 200,000-file tree shared by a `vhostd
 * fs` limited to 4,096 open fds. With `--inode-file-handles prefer` every
 * file is listed without an error; with `never` (every known inode holds an
 * fd) a smaller tree already runs out of fds, which shows the limit is in
 * force.
 */

import assert from "node:assert/strict";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import type { GuestRunResult } from "./harness.ts";
import { vhostUserFsArgs } from "./fs_backend.ts";
import { FS_TAG } from "./fs_guest_scripts.ts";
import { VhostdProcess } from "./migration_harness.ts";
import { makeFileTree, treeParentDir } from "../support/file_tree.ts";

const FD_LIMIT = 4096;
const FILES_PER_DIRECTORY = 1000;

/** Lists the whole share; prints `FILES n` (regular files listed) and `ERRORS n` (lines on stderr). */
const LIST_SCRIPT = `
mount -t virtiofs ${FS_TAG} /mnt || { echo "MOUNT-FAILED"; exit 10; }
files=$(ls -lR /mnt 2>/tmp/err | grep -c '^-')
echo "FILES $files"
echo "ERRORS $(wc -l < /tmp/err)"
head -n 3 /tmp/err
`;

function printedNumber(result: GuestRunResult, key: string): number {
  const match = result.scriptOutput.match(new RegExp(`^${key} (\\d+)$`, "m"));
  assert.ok(match !== null, `the guest printed no ${key} line:\n${result.scriptOutput}`);
  return Number(match[1]);
}

/** Boots a guest that lists a tree of `dirs` × 1,000 files served with `--inode-file-handles mode`. */
async function listTree(mode: string, dirs: number): Promise<GuestRunResult> {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-fs-large-", dir: treeParentDir() });
  let backend: VhostdProcess | undefined;
  let result: GuestRunResult | undefined;
  try {
    const shared = `${dir}/shared`;
    await Deno.mkdir(shared);
    makeFileTree(shared, dirs, FILES_PER_DIRECTORY);
    backend = await VhostdProcess.startFs({
      sharedDir: shared,
      socket: `${dir}/fs.sock`,
      logPath: `${dir}/backend.log`,
      extraArgs: ["--inode-file-handles", mode],
      logLevel: "info", // not a debug line per request: there are half a million
      fdLimit: FD_LIMIT,
    });
    result = await runGuest({
      script: LIST_SCRIPT,
      chardevs: vhostUserFsArgs(backend.socket),
      memoryMiB: 512, // room for the guest's 200,000 inodes and dentries
      timeoutMs: 900_000, // a hung guest only: a busy TCG machine is slow
    });
    assert.equal(result.timedOut, false, "the guest timed out");
    assert.equal(result.qemuExitCode, 0, "QEMU did not exit cleanly");
    const status = await backend.stop();
    assert.equal(status.code, 0, "vhostd exit status");
    return result;
  } catch (error) {
    backend?.kill("SIGKILL");
    console.error(
      [
        `--- guest console (tail) ---\n${result?.output.slice(-4000) ?? "(no run)"}`,
        `--- vhostd log (tail) ---\n${(await backend?.log())?.slice(-4000) ?? "(not started)"}`,
      ].join("\n"),
    );
    throw error;
  } finally {
    await backend?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("fs e2e: ls -lR of 200,000 files under a 4,096 fd limit with --inode-file-handles prefer", async () => {
  const dirs = 200;
  const result = await listTree("prefer", dirs);
  assert.equal(printedNumber(result, "ERRORS"), 0, result.scriptOutput);
  assert.equal(printedNumber(result, "FILES"), dirs * FILES_PER_DIRECTORY);
});

Deno.test("fs e2e: with --inode-file-handles never the same limit stops a 6,000-file listing", async () => {
  const dirs = 6;
  const result = await listTree("never", dirs);
  assert.match(result.scriptOutput, /Too many open files/);
  assert.ok(printedNumber(result, "FILES") < FD_LIMIT, result.scriptOutput);
});
