/**
 * The one definition of how vhostd is compiled into a single binary: the
 * permissions it runs with and the Worker modules that must be embedded
 * (they are loaded with `new Worker(new URL(...))`, which `deno compile`
 * cannot discover by itself).
 *
 * @module
 */

/**
 * Permissions of the compiled binary: FFI for libc, files for images and sockets, env for DENO_*
 * knobs, run for the fs sandbox's launcher (util-linux setpriv and unshare), net for `--metrics`
 * (Deno grants a Unix socket by its path, which is chosen at run time, so net is not narrowed;
 * vhostd itself listens only on 127.0.0.1, [::1] or a unix: path).
 */
export const COMPILE_PERMISSIONS = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-net",
];

/** Worker entry points, relative to the repository root. */
export const WORKER_MODULES = [
  "src/backend/queue_worker.ts",
  "src/backend/poller_worker.ts",
  "src/migration/transfer_worker.ts",
];

/** Where `deno task compile` writes the binary. */
export const BINARY_PATH = "dist/vhostd";

/** Arguments of `deno compile` (run from the repository root). */
export function compileArgs(output = BINARY_PATH): string[] {
  return [
    "compile",
    ...COMPILE_PERMISSIONS,
    ...WORKER_MODULES.flatMap((m) => ["--include", m]),
    "--output",
    output,
    "main.ts",
  ];
}

/**
 * Where a denort base binary can come from without the network: `DENORT_BIN`,
 * or Deno's download cache. Returns a description, or undefined when none is
 * available (then `deno compile` would try to download it).
 */
export function localDenort(): string | undefined {
  const fromEnv = Deno.env.get("DENORT_BIN");
  if (fromEnv) {
    try {
      if (Deno.statSync(fromEnv).isFile) return `DENORT_BIN=${fromEnv}`;
    } catch {
      return undefined;
    }
  }
  const home = Deno.env.get("HOME") ?? "/root";
  const denoDir = Deno.env.get("DENO_DIR") ?? `${home}/.cache/deno`;
  const version = Deno.version.deno;
  const cached = `${denoDir}/dl/release/v${version}/denort-x86_64-unknown-linux-gnu.zip`;
  try {
    if (Deno.statSync(cached).isFile) return `cached ${cached}`;
  } catch {
    // not cached
  }
  return undefined;
}
