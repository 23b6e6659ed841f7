/**
 * The `--sandbox` modes, and whether each can be had on this host.
 *
 * @module
 */

/** How the daemon is confined. */
export type SandboxMode = "namespace" | "chroot" | "none";

/** The modes, strongest first (the default is the first that works). */
export const SANDBOX_MODES: readonly SandboxMode[] = ["namespace", "chroot", "none"];

/** Whether `value` names a mode. */
export function isSandboxMode(value: string): value is SandboxMode {
  return (SANDBOX_MODES as readonly string[]).includes(value);
}

/** This process's real user id, from /proc (needs no permission beyond reading it). */
export function realUid(): number {
  const match = Deno.readTextFileSync("/proc/self/status").match(/^Uid:\s*(\d+)/m);
  if (!match) throw new Error("no Uid line in /proc/self/status");
  return Number(match[1]);
}

/** Why vhostd cannot run without root here, or undefined when it is root. */
function notRoot(mode: SandboxMode): string | undefined {
  const uid = realUid();
  if (uid === 0) return undefined;
  return `--sandbox ${mode} needs root (vhostd runs as uid ${uid}; it would need a user ` +
    "namespace, whose root cannot chown files to the guest's users on the host)";
}

/** Runs `command` (the launcher's chain with a program that only exits); why it failed. */
function probeFails(mode: SandboxMode, command: string[]): string | undefined {
  const rootReason = notRoot(mode);
  if (rootReason) return rootReason;
  if (Deno.permissions.querySync({ name: "run" }).state !== "granted") {
    return `--sandbox ${mode} needs --allow-run (it starts util-linux setpriv${
      mode === "namespace" ? " and unshare" : ""
    })`;
  }
  const [program, ...args] = command;
  let probe: Deno.CommandOutput;
  try {
    probe = new Deno.Command(program, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).outputSync();
  } catch (e) {
    return `cannot run util-linux ${program}: ${e instanceof Error ? e.message : e}`;
  }
  if (probe.success) return undefined;
  const why = new TextDecoder().decode(probe.stderr).trim().split("\n")[0];
  return `${program} fails here: ${why || `exit code ${probe.code}`}`;
}

const DROP_ALL = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", "true"];

/** Why `--sandbox namespace` cannot work here, or undefined when it can. */
export function namespaceUnavailable(): string | undefined {
  const mountProc = ["--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", "--"];
  return probeFails("namespace", ["unshare", ...mountProc, ...DROP_ALL]);
}

/** Why `--sandbox chroot` cannot work here, or undefined when it can. */
export function chrootUnavailable(): string | undefined {
  if (!Deno.build.standalone) {
    // The chroot is the share itself: Worker modules, which `deno run` loads from their
    // files when a Worker starts (also after the switch), would be out of reach.
    return "--sandbox chroot needs the compiled binary (deno task compile): under deno run " +
      "the Workers' module files would be outside the chroot";
  }
  const status = Deno.readTextFileSync("/proc/self/status");
  const effective = BigInt(`0x${status.match(/^CapEff:\s*(\S+)/m)?.[1] ?? "0"}`);
  if (realUid() === 0 && (effective & (1n << 18n)) === 0n) {
    return "--sandbox chroot needs CAP_SYS_CHROOT, which vhostd does not have";
  }
  return probeFails("chroot", DROP_ALL);
}
