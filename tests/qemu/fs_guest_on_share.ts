/**
 * One guest script on a fresh shared directory: a temporary directory made
 * ready by the test, the back-end under test serving it, a guest that runs
 * the script (which prints `FAIL ...` lines and ends with `FAILURES n`),
 * then the test's host-side checks once the back-end has stopped. On any
 * failure the guest console, QEMU's stderr and the back-end's log are
 * printed; the directory is always removed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type GuestRunResult, requireGuestEnvironment, runGuest } from "./harness.ts";
import { fsBackendUnderTest, startFsBackend, stopBackend, vhostUserFsArgs } from "./fs_backend.ts";

/** What {@linkcode runGuestOnShare} runs. */
export interface GuestOnShareOptions {
  /** Prefix of the temporary directory. */
  prefix: string;
  /** Prepares the shared directory on the host before the back-end starts. */
  prepare: (shared: string) => void;
  /** The guest shell script. */
  script: string;
  /** Guest memory; default 256 MiB. */
  memoryMiB?: number;
  /** Limit for the whole guest run; default 100 s. */
  timeoutMs?: number;
}

/** Runs `opts.script` in a guest on a fresh share, then `check(shared)` on the host. */
export async function runGuestOnShare(
  opts: GuestOnShareOptions,
  check: (shared: string) => void | Promise<void>,
): Promise<void> {
  requireGuestEnvironment();
  const kind = fsBackendUnderTest();
  const dir = await Deno.makeTempDir({ prefix: opts.prefix });
  const shared = `${dir}/shared`;
  await Deno.mkdir(shared);
  opts.prepare(shared);
  const backend = await startFsBackend(kind, {
    sharedDir: shared,
    socket: `${dir}/fs.sock`,
    logPath: `${dir}/backend.log`,
  });
  let result: GuestRunResult | undefined;
  try {
    result = await runGuest({
      script: opts.script,
      chardevs: vhostUserFsArgs(backend.socket),
      memoryMiB: opts.memoryMiB ?? 256,
      timeoutMs: opts.timeoutMs ?? 100_000,
    });
    assert.equal(result.timedOut, false, "the guest timed out");
    assert.doesNotMatch(result.scriptOutput, /^FAIL /m);
    assert.match(result.scriptOutput, /^FAILURES 0$/m, "the script did not run to its end");
    assert.equal(result.exitCode, 0, "the guest script reported failures");
    assert.equal((await stopBackend(backend)).code, 0, `${kind} exit status`);
    await check(shared);
  } catch (error) {
    backend.kill("SIGKILL");
    console.error([
      `--- guest console (tail) ---\n${result?.output.slice(-6000) ?? "(no run)"}`,
      `--- QEMU stderr ---\n${result?.qemuStderr ?? ""}`,
      `--- ${kind} log (tail) ---\n${(await backend.log()).slice(-6000)}`,
    ].join("\n"));
    throw error;
  } finally {
    await backend.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}
