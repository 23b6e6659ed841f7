/**
 * The launcher stage of `--sandbox namespace` and `chroot`: the `vhostd fs` process the
 * user started spawns the real daemon in new mount and PID namespaces with
 * only the capabilities it needs, gives it its new root once it is ready,
 * hands it the listening socket, forwards SIGINT/SIGTERM to it and exits
 * with its exit code.
 *
 * The chain is util-linux only, so nothing compiled is ours:
 * `setpriv --pdeathsig KILL` (the chain dies with the launcher)
 * `unshare --mount --pid --fork --kill-child --mount-proc` (namespaces, a
 * fresh /proc; the daemon is PID 1 of its namespace and dies with unshare)
 * `setpriv --inh-caps ... --bounding-set ...` (capabilities: they can only
 * reach every thread of a Deno process through execve) and then the daemon.
 * In chroot mode the chain is only the two setpriv steps in one.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { closeQuietly } from "../../ffi/mod.ts";
import { listenOnPath } from "../backend/daemon.ts";
import { log } from "../log.ts";
import { type CapabilityName, setprivCapabilityArgs } from "./capabilities.ts";
import { type RootLayout, switchNamespaceRoot } from "./namespace_root.ts";
import {
  awaitStageMessage,
  openStageChannel,
  sendStageMessage,
  STAGE_CHANNEL_ENV,
} from "./stage_channel.ts";

/** What {@linkcode runSandboxedDaemon} needs. */
export interface SandboxLaunch {
  /** The `vhostd fs` arguments as the user gave them; the daemon parses them again. */
  args: string[];
  /** The socket to create (after the daemon is ready), removed again at exit. */
  socketPath?: string;
  /** An inherited listening socket (`--fd`), passed on instead. */
  listenFd?: number;
  /** `namespace` or `chroot`. */
  mode: "namespace" | "chroot";
  /** The daemon's new root (namespace mode). */
  layout: RootLayout;
  /** The capabilities the daemon keeps. */
  capabilities: CapabilityName[];
}

const FORWARDED_SIGNALS = ["SIGINT", "SIGTERM"] as const;

/** Deno permission flags that give the daemon what this process has. */
function permissionFlags(): string[] {
  const names = ["read", "write", "ffi", "env", "sys", "net", "run", "import"] as const;
  const granted = names.filter((name) => Deno.permissions.querySync({ name }).state === "granted");
  return granted.length === names.length ? ["--allow-all"] : granted.map((n) => `--allow-${n}`);
}

/** How to start this program again with `fs ARGS`: the compiled binary, or `deno run`. */
export function daemonCommandLine(args: string[]): string[] {
  if (Deno.build.standalone) return [Deno.execPath(), "fs", ...args];
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    ...permissionFlags(),
    fileURLToPath(Deno.mainModule),
    "fs",
    ...args,
  ];
}

/** The full command of the namespace chain for `daemon` with `capabilities`. */
export function namespaceChain(daemon: string[], capabilities: CapabilityName[]): string[] {
  return [
    "setpriv",
    "--pdeathsig",
    "KILL",
    "--",
    "unshare",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child=SIGKILL",
    "--mount-proc",
    "--",
    "setpriv",
    ...setprivCapabilityArgs(capabilities),
    "--",
    ...daemon,
  ];
}

/** The chain of `--sandbox chroot`: only capabilities; the daemon chroots itself. */
export function chrootChain(daemon: string[], capabilities: CapabilityName[]): string[] {
  return [
    "setpriv",
    "--pdeathsig",
    "KILL",
    ...setprivCapabilityArgs(capabilities),
    "--",
    ...daemon,
  ];
}

/** The only child of process `pid` (the daemon `unshare --fork` started). */
function onlyChild(pid: number): number {
  const children = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/);
  if (children.length !== 1 || children[0] === "") {
    throw new Error(`expected one child of unshare (pid ${pid}), found "${children.join(" ")}"`);
  }
  return Number(children[0]);
}

/**
 * Runs the daemon in the sandbox until it exits; resolves with its exit
 * code. Throws when the sandbox cannot be set up (the daemon is stopped).
 */
export async function runSandboxedDaemon(launch: SandboxLaunch): Promise<number> {
  // Deno keeps its cache databases (V8 code cache included) open from start-up: give the daemon
  // its own, so nothing it can write is read by another Deno program on the host.
  const denoDir = Deno.build.standalone
    ? undefined
    : Deno.makeTempDirSync({ prefix: "vhostd-sandbox-deno-dir-" });
  try {
    return await runChain(launch, denoDir);
  } finally {
    if (denoDir !== undefined) Deno.removeSync(denoDir, { recursive: true });
  }
}

async function runChain(launch: SandboxLaunch, denoDir: string | undefined): Promise<number> {
  const channel = openStageChannel();
  const chain = launch.mode === "namespace" ? namespaceChain : chrootChain;
  const [program, ...programArgs] = chain(daemonCommandLine(launch.args), launch.capabilities);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: programArgs,
      env: {
        [STAGE_CHANNEL_ENV]: `${channel.daemonEnd}:${launch.mode}`,
        ...(denoDir === undefined ? {} : { DENO_DIR: denoDir }),
      },
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (e) {
    closeQuietly(channel.launcherEnd);
    throw new Error(`cannot start the sandbox (setpriv, unshare): ${e}`);
  } finally {
    closeQuietly(channel.daemonEnd);
  }
  let daemonPid: number | undefined;
  const forward = (signal: Deno.Signal) => () => {
    // Before the daemon is known only the chain can be stopped; it takes the daemon along.
    try {
      if (daemonPid === undefined) child.kill("SIGKILL");
      else Deno.kill(daemonPid, signal);
    } catch {
      // It has exited already; its status is on the way.
    }
  };
  const listeners = FORWARDED_SIGNALS.map((signal) => [signal, forward(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  let createdSocket = false;
  try {
    const ready = await awaitStageMessage(channel.launcherEnd);
    if (ready.text !== "ready") {
      // The daemon exited during start-up; it said why on stderr.
      return (await child.status).code || 1;
    }
    let listenFd = launch.listenFd;
    try {
      if (launch.mode === "namespace") {
        daemonPid = onlyChild(child.pid);
        switchNamespaceRoot(daemonPid, launch.layout);
      } else {
        daemonPid = child.pid; // setpriv exec'd it
      }
      sendStageMessage(channel.launcherEnd, "go");
      // The socket appears only once the daemon is confined.
      const confined = await awaitStageMessage(channel.launcherEnd);
      if (confined.text !== "confined") return (await child.status).code || 1;
      if (listenFd === undefined) {
        listenFd = listenOnPath(launch.socketPath!);
        createdSocket = true;
      }
      sendStageMessage(channel.launcherEnd, "listen", [listenFd]);
    } catch (e) {
      sendStageMessage(channel.launcherEnd, `fail ${e instanceof Error ? e.message : e}`);
      await child.status;
      throw e;
    } finally {
      if (createdSocket) closeQuietly(listenFd!);
    }
    log.debug(`sandbox: daemon pid ${daemonPid} runs in ${launch.mode} mode`);
    return (await child.status).code;
  } finally {
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    closeQuietly(channel.launcherEnd);
    if (createdSocket) {
      try {
        Deno.removeSync(launch.socketPath!);
      } catch {
        // Already gone.
      }
    }
  }
}
