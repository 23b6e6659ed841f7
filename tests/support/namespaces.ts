/**
 * Whether this host lets the fs sandbox make its namespaces (root, and
 * util-linux `unshare` works: not so in some containers).
 *
 * @module
 */

/** True when `unshare --mount --pid --fork --mount-proc` succeeds here. */
export function namespacesWork(): boolean {
  return new Deno.Command("unshare", {
    args: ["--mount", "--pid", "--fork", "--mount-proc", "true"],
    stdout: "null",
    stderr: "null",
  }).outputSync().success;
}
