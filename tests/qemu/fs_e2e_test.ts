/**
 * End to end against QEMU 10: a TCG guest with `vhost-user-fs-pci` served by
 * `vhostd fs` mounts the shared directory and runs a file-operation suite
 * (see fs_guest_scripts.ts), checking each result in the guest; after the
 * guest has powered off the host checks the same results in the directory
 * itself: contents, names, link targets, inode numbers and link counts,
 * modes, times, sizes, and the SHA-256 of a 64 MiB file the guest wrote.
 * A second test shares a directory `--read-only`: every change fails in the
 * guest with EROFS and the host finds the directory untouched.
 */

import assert from "node:assert/strict";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import type { GuestRunResult } from "./harness.ts";
import type { VhostdProcess } from "./migration_harness.ts";
import { fsBackendUnderTest, startFsBackend, stopBackend, vhostUserFsArgs } from "./fs_backend.ts";
import {
  BIG_FILE_MIB,
  CREATED_TEXT,
  fileOpsScript,
  GROWN_SIZE,
  guestManyEntryName,
  HOST_FILE_TEXT,
  MANY_ENTRIES,
  manyEntryIsDir,
  manyEntryName,
  prepareFileOpsDir,
  prepareReadOnlyDir,
  READ_ONLY_FILE_TEXT,
  readOnlyScript,
  sha256Hex,
  sortedNamesHash,
  TOUCHED_MTIME,
  truncatedSeq,
} from "./fs_guest_scripts.ts";

const MiB = 1024 * 1024;
/** Names the file-operation suite leaves in the shared directory, and nothing else. */
const FILE_OPS_NAMES = [
  "big",
  "created.txt",
  "dangling",
  "from-host.txt",
  "grown",
  "guest-many",
  "hard",
  "made",
  "many",
  "modes",
  "new-name",
  "sym",
  "trunc",
  "victim",
];

/** A temp dir holding the shared directory, the socket and the back-end's log. */
interface FsRun {
  shared: string;
  backend: VhostdProcess;
  result: GuestRunResult;
}

/**
 * Starts the back-end on a fresh shared directory filled by `prepare`, boots
 * the guest with `script`, then hands the finished run to `check`. On a
 * failure prints the console and the back-end's log; always stops the
 * back-end and removes the temp dir.
 */
async function withFsGuest(
  opts: {
    prepare: (shared: string) => Promise<void>;
    script: string;
    readOnly?: boolean;
    memoryMiB?: number;
    /** Further `vhostd fs` options. */
    vhostdArgs?: string[];
  },
  check: (run: FsRun) => Promise<void>,
): Promise<void> {
  requireGuestEnvironment();
  const kind = fsBackendUnderTest();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-fs-e2e-" });
  const shared = `${dir}/shared`;
  let backend: VhostdProcess | undefined;
  let result: GuestRunResult | undefined;
  try {
    await Deno.mkdir(shared);
    await opts.prepare(shared);
    backend = await startFsBackend(kind, {
      sharedDir: shared,
      socket: `${dir}/fs.sock`,
      logPath: `${dir}/backend.log`,
      readOnly: opts.readOnly,
      vhostdArgs: opts.vhostdArgs,
    });
    result = await runGuest({
      script: opts.script,
      chardevs: vhostUserFsArgs(backend.socket),
      memoryMiB: opts.memoryMiB ?? 256,
      timeoutMs: 100_000,
    });
    assert.equal(result.timedOut, false, "the guest timed out");
    assert.equal(result.exitCode, 0, "the guest script reported failures");
    assert.equal(result.qemuExitCode, 0, "QEMU did not exit cleanly");
    const status = await stopBackend(backend);
    assert.equal(status.code, 0, `${kind} exit status`);
    await check({ shared, backend, result });
  } catch (error) {
    backend?.kill("SIGKILL");
    console.error(
      [
        `--- guest console (tail) ---\n${result?.output.slice(-6000) ?? "(no run)"}`,
        `--- QEMU stderr ---\n${result?.qemuStderr ?? ""}`,
        `--- ${kind} log (tail) ---\n${(await backend?.log())?.slice(-6000) ?? "(not started)"}`,
      ].join("\n"),
    );
    throw error;
  } finally {
    await backend?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The value of the `KEY value` line the script printed; fails when there is none. */
function printed(result: GuestRunResult, key: string): string {
  const match = result.scriptOutput.match(new RegExp(`^${key} (\\S+)$`, "m"));
  assert.ok(match !== null, `the guest printed no ${key} line`);
  return match[1];
}

/** Every `OK name` line the script printed. */
function passedChecks(result: GuestRunResult): string[] {
  return [...result.scriptOutput.matchAll(/^OK (\S+)$/gm)].map((match) => match[1]);
}

async function sortedDir(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(path)) names.push(entry.name);
  return names.sort();
}

async function assertMissing(path: string): Promise<void> {
  await assert.rejects(Deno.lstat(path), Deno.errors.NotFound, `${path} should not exist`);
}

/** The file-operation suite, checked in the guest and on the host, with `vhostdArgs`. */
function fileOperations(vhostdArgs: string[]): Promise<void> {
  return withFsGuest(
    { prepare: prepareFileOpsDir, script: fileOpsScript(), memoryMiB: 512, vhostdArgs },
    async ({ shared, result }) => {
      assert.doesNotMatch(result.scriptOutput, /^FAIL /m);
      assert.match(result.scriptOutput, /^FAILURES 0$/m, "the script did not run to its end");
      const passed = passedChecks(result);
      for (
        const name of [
          "read",
          "rename-replace",
          "unlink-gone",
          "rmdir-not-empty",
          "readlink",
          "hardlink-count",
          "chmod-file",
          "truncate-content",
          "many-count",
          "guest-many-count",
          "big-size",
        ]
      ) {
        assert.ok(passed.includes(name), `guest check ${name} did not pass`);
      }

      assert.deepEqual(await sortedDir(shared), FILE_OPS_NAMES);
      assert.equal(await Deno.readTextFile(`${shared}/from-host.txt`), HOST_FILE_TEXT);
      // create, write, append, and a write through the hard link
      assert.equal(await Deno.readTextFile(`${shared}/created.txt`), CREATED_TEXT);
      const created = await Deno.stat(`${shared}/created.txt`);
      const hard = await Deno.stat(`${shared}/hard`);
      assert.equal(hard.ino, created.ino, "the hard link is another inode on the host");
      assert.equal(created.nlink, 2, "link count on the host");
      // rename, rename over an existing file, unlink, rmdir
      assert.equal(await Deno.readTextFile(`${shared}/new-name`), "renamed content\n");
      assert.equal(await Deno.readTextFile(`${shared}/victim`), "winner\n");
      // mkdir and chmod of a directory
      const made = await Deno.stat(`${shared}/made`);
      assert.ok(made.isDirectory);
      assert.equal((made.mode ?? 0) & 0o7777, 0o751, "mode of made/ on the host");
      assert.equal(await Deno.readTextFile(`${shared}/made/sub/file`), "inner\n");
      // symlinks
      assert.ok((await Deno.lstat(`${shared}/sym`)).isSymlink);
      assert.equal(await Deno.readLink(`${shared}/sym`), "created.txt");
      assert.equal(await Deno.readLink(`${shared}/dangling`), "/nowhere/at/all");
      // chmod and utimes of a file
      const modes = await Deno.stat(`${shared}/modes`);
      assert.equal((modes.mode ?? 0) & 0o7777, 0o640, "mode of modes on the host");
      assert.equal(modes.mtime?.toISOString(), new Date(TOUCHED_MTIME).toISOString());
      // truncate down and up
      assert.deepEqual(await Deno.readFile(`${shared}/trunc`), truncatedSeq());
      const grown = await Deno.readFile(`${shared}/grown`);
      assert.equal(grown.length, GROWN_SIZE);
      assert.deepEqual(grown.subarray(0, 2), new TextEncoder().encode("x\n"));
      assert.ok(grown.subarray(2).every((b) => b === 0), "grown file is not zero-filled");
      // the host-made large directory, listed by the guest
      const many = await sortedDir(`${shared}/many`);
      assert.equal(many.length, MANY_ENTRIES);
      assert.equal(
        printed(result, "MANY-HASH"),
        await sortedNamesHash(Array.from({ length: MANY_ENTRIES }, (_, i) => manyEntryName(i))),
        "the guest's listing of many/ differs from the names the host made",
      );
      assert.ok(manyEntryIsDir(0) && (await Deno.stat(`${shared}/many/${many[0]}`)).isDirectory);
      // the guest-made large directory
      const guestNames = Array.from({ length: MANY_ENTRIES }, (_, i) => guestManyEntryName(i));
      assert.deepEqual(await sortedDir(`${shared}/guest-many`), [...guestNames].sort());
      assert.equal(printed(result, "GUEST-MANY-HASH"), await sortedNamesHash(guestNames));
      // 64 MiB of /dev/urandom: the host file is what the guest generated
      const bigHash = printed(result, "BIG-HASH");
      assert.equal(printed(result, "BIG-READ-HASH"), bigHash, "guest read back other data");
      const big = await Deno.readFile(`${shared}/big`);
      assert.equal(big.length, BIG_FILE_MIB * MiB);
      assert.equal(
        await sha256Hex(big),
        bigHash,
        "the host file differs from what the guest wrote",
      );
      console.log(
        `guest booted in ${result.bootMs} ms, QEMU ran ${result.durationMs} ms; ` +
          `${passed.length} guest checks passed`,
      );
    },
  );
}

Deno.test("virtio-fs file operations through vhostd, checked in the guest and on the host", () =>
  fileOperations([]));

Deno.test("virtio-fs file operations with --inode-file-handles prefer (more inodes than its 1,024 cached fds)", () =>
  fileOperations(["--inode-file-handles", "prefer"]));

Deno.test("virtio-fs --read-only: every change fails with EROFS in the guest, the host dir is untouched", () =>
  withFsGuest(
    { prepare: prepareReadOnlyDir, script: readOnlyScript(), readOnly: true },
    async ({ shared, result }) => {
      assert.doesNotMatch(result.scriptOutput, /^FAIL /m);
      assert.match(result.scriptOutput, /^FAILURES 0$/m, "the script did not run to its end");
      const passed = passedChecks(result);
      for (const name of ["ro-read", "ro-create", "ro-mkdir", "ro-unlink", "ro-chmod"]) {
        assert.ok(passed.includes(name), `guest check ${name} did not pass`);
      }
      assert.equal(passed.filter((name) => name.startsWith("ro-")).length, 15);
      assert.deepEqual(await sortedDir(shared), ["kept-dir", "kept.txt"]);
      assert.equal(await Deno.readTextFile(`${shared}/kept.txt`), READ_ONLY_FILE_TEXT);
      const kept = await Deno.stat(`${shared}/kept.txt`);
      assert.equal((kept.mode ?? 0) & 0o7777, 0o644);
      assert.notEqual(kept.mtime?.getUTCFullYear(), 2001, "touch changed the mtime");
      assert.deepEqual(await sortedDir(`${shared}/kept-dir`), []);
      await assertMissing(`${shared}/new.txt`);
    },
  ));
