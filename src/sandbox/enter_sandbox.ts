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
import { awaitNewRoot, SandboxError, sandboxStageChannel } from "./daemon_stage.ts";
import { runSandboxedDaemon } from "./launcher.ts";
import type { RootBind } from "./namespace_root.ts";
import { namespaceUnavailable, type SandboxMode } from "./sandbox_mode.ts";
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
  /** Serve in this process, confined by `mode`; listen on `listenFd` when given. */
  | { kind: "serve"; mode: SandboxMode; listenFd?: number };

/** The program's own modules, which `deno run` still loads (Workers) after the switch. */
function programDirs(): string[] {
  if (Deno.build.standalone) return []; // embedded in the binary
  return ["../../src/", "../../ffi/"].map((dir) =>
    Deno.realPathSync(fileURLToPath(new URL(dir, import.meta.url)))
  );
}

function pickMode(requested: SandboxMode | undefined): SandboxMode {
  if (requested === "none") return "none";
  const namespaceProblem = namespaceUnavailable();
  if (requested === "namespace" && namespaceProblem) {
    throw new SandboxError(`--sandbox namespace is not available: ${namespaceProblem}`);
  }
  if (requested === "chroot") {
    throw new SandboxError("--sandbox chroot is not available: not implemented yet");
  }
  if (!namespaceProblem) return "namespace";
  log.warn(`sandbox: namespace mode is not available (${namespaceProblem})`);
  return "none";
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

/** Enters the sandbox; see {@linkcode SandboxOutcome}. Throws SandboxError when it cannot. */
export async function enterSandbox(request: SandboxRequest): Promise<SandboxOutcome> {
  const kept = keptCapabilities({ fileHandles: request.fileHandles });
  const channel = sandboxStageChannel();
  if (channel !== undefined) {
    // Capabilities came with execve and never change: check before the launcher goes on.
    checkCapabilities(kept);
    const listenFd = awaitNewRoot(channel);
    const filter = buildSeccompFilter({ allowFileHandles: request.fileHandles });
    installSeccompFilter(filter);
    log.info(
      `sandbox: namespace (root: read-only tmpfs with ${request.sharedDir}${
        request.readOnly ? " (read-only)" : ""
      } and /proc of its own PID namespace; capabilities: ${kept.join(", ")}; seccomp: ${
        Object.keys(DENIED_SYSCALLS).length
      } system calls refused)`,
    );
    return { kind: "serve", mode: "namespace", listenFd };
  }
  const mode = pickMode(request.mode);
  if (mode === "none") {
    log.warn("sandbox: none (the daemon can reach every file vhostd's user can)");
    return { kind: "serve", mode };
  }
  const binds: RootBind[] = [
    { path: request.sharedDir, readOnly: request.readOnly },
    ...programDirs().map((path) => ({ path, readOnly: true })),
    ...request.writableDirs.map((path) => ({ path, readOnly: false })),
  ];
  const exitCode = await runSandboxedDaemon({
    args: request.args,
    socketPath: request.socketPath,
    listenFd: request.listenFd,
    layout: { binds },
    capabilities: kept,
  });
  return { kind: "launched", exitCode };
}
