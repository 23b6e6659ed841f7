/**
 * Following a process to the one that serves: `vhostd fs` in namespace mode
 * is a launcher whose only child is `unshare`, whose only child is the
 * sandboxed daemon.
 *
 * @module
 */

/** The children of process `pid`'s main thread, from /proc; [] when it is gone. */
export function childrenOf(pid: number): number[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).split(/\s+/)
      .filter((child) => child !== "").map(Number);
  } catch {
    return [];
  }
}

/** The end of `pid`'s chain of only children (`pid` itself when it has none, or several). */
export function servingProcess(pid: number): number {
  for (;;) {
    const children = childrenOf(pid);
    if (children.length !== 1) return pid;
    pid = children[0];
  }
}
