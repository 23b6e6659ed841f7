/**
 * Puts `vhostd fs` into its sandbox: picks the mode (the strongest that
 * works unless one was asked for), and either launches the sandboxed daemon
 * (this process then only waits for it) or, in the sandboxed daemon itself,
 * waits for the new root, installs the seccomp filter and checks its
 * capabilities.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { log } from "../log.ts";
import {
  capabilityMask,
  type CapabilityName,
  keptCapabilities,
  threadCapabilities,
} from "./capabilities.ts";
import {
  awaitLauncher,
  enterChroot,
  receiveListener,
  SandboxError,
  sandboxStage,
} from "./daemon_stage.ts";
import { runSandboxedDaemon } from "./launcher.ts";
import type { RootBind } from "./namespace_root.ts";
import { chrootUnavailable, namespaceUnavailable, type SandboxMode } from "./sandbox_mode.ts";
import { buildSeccompFilter, DENIED_SYSCALLS, installSeccompFilter } from "./seccomp_filter.ts";

/** What the sandbox needs to know about the daemon. */
export interface SandboxRequest {
  /** The mode asked for; undefined picks the strongest that works. */
  mode?: SandboxMode;
  /** The `vhostd fs` arguments as given (the sandboxed daemon parses them again). */
  args: string[];
  /** Canonical path of the shared directory. */
  sharedDir: string;
  /** The share is read-only. */
  readOnly: boolean;
  /** Canonical paths of other directories the daemon writes to (`--dump-state`). */
  writableDirs: string[];
  /** The socket to listen on, if not `listenFd`. */
  socketPath?: string;
  /** An inherited listening socket. */
  listenFd?: number;
  /** The share uses file handles (keeps CAP_DAC_READ_SEARCH, allows open_by_handle_at). */
  fileHandles?: boolean;
}

/** What the caller does next. */
export type SandboxOutcome =
  /** This process was the launcher: the sandboxed daemon ran and exited with `exitCode`. */
  | { kind: "launched"; exitCode: number }
  /**
   * Serve in this process, confined by `mode`, sharing `sharedDir` (as this
   * process names it now); listen on `listenFd` when given.
   */
  | { kind: "serve"; mode: SandboxMode; sharedDir: string; listenFd?: number };

/**
 * The program's own files, read-only: `deno run` loads Worker modules from
 * src/ and ffi/ when a Worker starts, also after the switch; a compiled
 * binary has them embedded, and keeps its own file within reach in case it
 * reads them from there.
 */
function programBinds(): RootBind[] {
  const paths = Deno.build.standalone
    ? [Deno.execPath()]
    : ["../../src/", "../../ffi/"].map((dir) => fileURLToPath(new URL(dir, import.meta.url)));
  return paths.map((path) => ({ path: Deno.realPathSync(path), readOnly: true }));
}

function pickMode(requested: SandboxMode | undefined): SandboxMode {
  if (requested === "none") return "none";
  const problems: string[] = [];
  const checks = [["namespace", namespaceUnavailable], ["chroot", chrootUnavailable]] as const;
  for (const [mode, unavailable] of checks) {
    if (requested !== undefined && requested !== mode) continue;
    const problem = unavailable();
    if (problem === undefined) return mode;
    if (requested === mode) {
      throw new SandboxError(`--sandbox ${mode} is not available: ${problem}`);
    }
    problems.push(`${mode}: ${problem}`);
  }
  log.warn(`sandbox: no confinement is available (${problems.join("; ")})`);
  return "none";
}

function isWithin(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith("/") ? dir : `${dir}/`);
}

/** Checks that no thread of this process holds more than `kept`. */
function checkCapabilities(kept: CapabilityName[]): void {
  const allowed = capabilityMask(kept);
  for (const thread of threadCapabilities("self")) {
    const extra = (thread.effective | thread.permitted | thread.bounding) & ~allowed;
    if (extra !== 0n) {
      throw new SandboxError(
        `sandbox set-up failed: thread ${thread.tid} still has capabilities 0x${
          extra.toString(16)
        }`,
      );
    }
  }
}

/** The sandboxed daemon's part: checks, the new root, the seccomp filter. */
function enterAsDaemon(
  request: SandboxRequest,
  channel: number,
  mode: SandboxMode,
): SandboxOutcome {
  const chroot = mode === "chroot";
  const kept = keptCapabilities({ fileHandles: request.fileHandles });
  // Capabilities came with execve and never change: check before the launcher goes on.
  checkCapabilities(chroot ? [...kept, "sys_chroot"] : kept);
  // A share of "/" is bound on top of the new root, which then looks like the old one.
  awaitLauncher(channel, mode === "namespace" && request.sharedDir !== "/");
  if (chroot) enterChroot(request.sharedDir);
  installSeccompFilter(buildSeccompFilter({ allowFileHandles: request.fileHandles }));
  const share = `${request.sharedDir}${request.readOnly ? " (read-only)" : ""}`;
  const root = chroot
    ? `root: ${share}, /proc/self/fd through an fd; the runtime threads keep CAP_SYS_CHROOT`
    : `root: read-only tmpfs with ${share} and /proc (subset=pid) of its own PID namespace`;
  log.info(
    `sandbox: ${mode} (${root}; capabilities: ${kept.join(", ")}; seccomp: ${
      Object.keys(DENIED_SYSCALLS).length
    } system calls refused)`,
  );
  const listenFd = receiveListener(channel);
  return { kind: "serve", mode, sharedDir: chroot ? "/" : request.sharedDir, listenFd };
}

/** Enters the sandbox; see {@linkcode SandboxOutcome}. Throws SandboxError when it cannot. */
export async function enterSandbox(request: SandboxRequest): Promise<SandboxOutcome> {
  const stage = sandboxStage();
  if (stage !== undefined) return enterAsDaemon(request, stage.channel, stage.mode);
  const mode = pickMode(request.mode);
  if (mode === "none") {
    log.warn("sandbox: none (the daemon can reach every file vhostd's user can)");
    return { kind: "serve", mode, sharedDir: request.sharedDir };
  }
  const outside = request.writableDirs.filter((dir) => !isWithin(dir, request.sharedDir));
  if (mode === "chroot" && outside.length > 0) {
    throw new SandboxError(
      `--sandbox chroot cannot reach ${outside[0]} (outside the shared directory)`,
    );
  }
  const binds: RootBind[] = [
    { path: request.sharedDir, readOnly: request.readOnly },
    ...programBinds(),
    ...request.writableDirs.map((path) => ({ path, readOnly: false })),
  ];
  const exitCode = await runSandboxedDaemon({
    mode,
    args: request.args,
    socketPath: request.socketPath,
    listenFd: request.listenFd,
    layout: { binds },
    capabilities: keptCapabilities({ fileHandles: request.fileHandles, chroot: mode === "chroot" }),
  });
  return { kind: "launched", exitCode };
}
