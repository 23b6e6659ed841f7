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

/** Why `--sandbox namespace` cannot work here, or undefined when it can. */
export function namespaceUnavailable(): string | undefined {
  const rootReason = notRoot("namespace");
  if (rootReason) return rootReason;
  if (Deno.permissions.querySync({ name: "run" }).state !== "granted") {
    return "--sandbox namespace needs --allow-run (it starts util-linux setpriv and unshare)";
  }
  // The same chain the launcher runs, with a program that only exits.
  let probe: Deno.CommandOutput;
  try {
    probe = new Deno.Command("unshare", {
      args: [
        "--mount",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--mount-proc",
        "--",
        "setpriv",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        "true",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).outputSync();
  } catch (e) {
    return `cannot run util-linux unshare: ${e instanceof Error ? e.message : e}`;
  }
  if (probe.success) return undefined;
  const why = new TextDecoder().decode(probe.stderr).trim().split("\n")[0];
  return `cannot create mount and PID namespaces here: ${why || `exit code ${probe.code}`}`;
}
