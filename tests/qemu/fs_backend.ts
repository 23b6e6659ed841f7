/**
 * virtio-fs back-ends for the QEMU tests and the fs benchmark: `vhostd fs`
 * (what the tests check) and, where one is installed, a `virtiofsd` to
 * compare with or to debug a guest script against. Both run as
 * {@linkcode VhostdProcess} (log in a file, waited for until their socket
 * exists).
 *
 * The tests use vhostd unless `VHOSTD_TEST_FS_BACKEND=virtiofsd` is set: a
 * way to tell a wrong guest script from a vhostd bug, never used by CI.
 *
 * @module
 */

import { VhostdProcess } from "./migration_harness.ts";

/** Which program serves the shared directory. */
export type FsBackendKind = "vhostd" | "virtiofsd";

/** Where virtiofsd is looked for, after `$VIRTIOFSD` and `$PATH`. */
const VIRTIOFSD_PATHS = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/** How to start a virtio-fs back-end. */
export interface FsBackendOptions {
  /** The directory the guest sees. */
  sharedDir: string;
  /** The vhost-user socket to create. */
  socket: string;
  /** Where the back-end's stderr goes. */
  logPath: string;
  /** Further `vhostd fs` options (`--read-only`, `--migration-on-error MODE`); vhostd only. */
  vhostdArgs?: string[];
  /** Serve read-only (`--read-only`, or virtiofsd's own option for it). */
  readOnly?: boolean;
  /** vhostd's `--log-level`; default debug (the tests want every request in the log). */
  logLevel?: "error" | "warn" | "info" | "debug";
}

/**
 * The back-end the QEMU fs tests run against: vhostd, or virtiofsd when
 * `VHOSTD_TEST_FS_BACKEND=virtiofsd`.
 *
 * @throws {Error} for another value, or virtiofsd asked for and not installed
 */
export function fsBackendUnderTest(): FsBackendKind {
  const wanted = Deno.env.get("VHOSTD_TEST_FS_BACKEND") ?? "vhostd";
  if (wanted === "vhostd") return "vhostd";
  if (wanted === "virtiofsd") {
    if (findVirtiofsd() === undefined) {
      throw new Error("VHOSTD_TEST_FS_BACKEND=virtiofsd but no virtiofsd is installed");
    }
    return "virtiofsd";
  }
  throw new Error(`VHOSTD_TEST_FS_BACKEND must be vhostd or virtiofsd, got "${wanted}"`);
}

/**
 * The path of an installed virtiofsd: `$VIRTIOFSD`, then `virtiofsd` on
 * `$PATH`, then Debian's locations; undefined when there is none.
 */
export function findVirtiofsd(): string | undefined {
  const candidates: string[] = [];
  const fromEnv = Deno.env.get("VIRTIOFSD");
  if (fromEnv) candidates.push(fromEnv);
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir !== "") candidates.push(`${dir}/virtiofsd`);
  }
  candidates.push(...VIRTIOFSD_PATHS);
  return candidates.find(isExecutableFile);
}

/**
 * The arguments that make `binary` (virtiofsd) serve `opts.sharedDir` on
 * `opts.socket` with no guest caching: the Rust virtiofsd (`--shared-dir`)
 * and the older C one from QEMU (`-o source=`) spell them differently.
 */
export function virtiofsdArgs(binary: string, opts: FsBackendOptions): string[] {
  const help = new Deno.Command(binary, { args: ["--help"], stdout: "piped", stderr: "piped" })
    .outputSync();
  const text = new TextDecoder().decode(help.stdout) + new TextDecoder().decode(help.stderr);
  if (text.includes("--shared-dir")) {
    return [
      "--socket-path",
      opts.socket,
      "--shared-dir",
      opts.sharedDir,
      "--cache",
      "never",
      "--sandbox",
      "none",
      ...(opts.readOnly ? ["--readonly"] : []),
    ];
  }
  if (opts.readOnly) throw new Error(`${binary} (QEMU's C virtiofsd) cannot share read-only`);
  return [
    `--socket-path=${opts.socket}`,
    "-o",
    `source=${opts.sharedDir}`,
    "-o",
    "cache=none",
    "-o",
    "sandbox=chroot",
  ];
}

/**
 * Starts `kind` serving `opts.sharedDir` and waits for its socket.
 *
 * @throws {Error} when it exits or does not listen in time, or virtiofsd is absent
 */
export function startFsBackend(
  kind: FsBackendKind,
  opts: FsBackendOptions,
): Promise<VhostdProcess> {
  if (kind === "vhostd") {
    return VhostdProcess.startFs({
      sharedDir: opts.sharedDir,
      socket: opts.socket,
      logPath: opts.logPath,
      extraArgs: [...(opts.readOnly ? ["--read-only"] : []), ...(opts.vhostdArgs ?? [])],
      logLevel: opts.logLevel,
    });
  }
  const binary = findVirtiofsd();
  if (binary === undefined) throw new Error("virtiofsd is not installed");
  return VhostdProcess.startCommand({
    command: binary,
    args: virtiofsdArgs(binary, opts),
    socket: opts.socket,
    logPath: opts.logPath,
  });
}

/**
 * QEMU arguments for a `vhost-user-fs-pci` device with mount tag `tag`
 * whose back-end listens on `socket`.
 */
export function vhostUserFsArgs(socket: string, tag = "vhostd", id = "fs0"): string[] {
  return [
    "-chardev",
    `socket,id=${id},path=${socket}`,
    "-device",
    `vhost-user-fs-pci,chardev=${id},tag=${tag}`,
  ];
}

function isExecutableFile(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * SIGTERM (a clean shutdown) and the exit status; a back-end that has not
 * exited after `timeoutMs` is killed and an error says so.
 *
 * @throws {Error} when the back-end did not stop on SIGTERM in time
 */
export async function stopBackend(
  backend: VhostdProcess,
  timeoutMs = 15_000,
): Promise<Deno.CommandStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<null>((resolve) =>
    timer = setTimeout(() => resolve(null), timeoutMs)
  );
  try {
    const status = await Promise.race([backend.stop(), timedOut]);
    if (status === null) {
      await backend.dispose();
      throw new Error(
        `${backend.logPath}: the back-end did not exit ${timeoutMs} ms after SIGTERM`,
      );
    }
    return status;
  } finally {
    clearTimeout(timer);
  }
}
