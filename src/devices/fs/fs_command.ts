/**
 * `vhostd fs`: share a host directory with a guest as a virtio-fs device
 * over vhost-user, with the same conventions as `vhostd blk`.
 *
 * @module
 */

import { FsDevice } from "./fs_device.ts";
import { PassthroughFs } from "./passthrough/passthrough_fs.ts";
import { MAX_REQUEST_QUEUES, validateTag } from "./fs_spec.ts";
import { isMigrationOnError, type MigrationOnError } from "./fs_state.ts";
import {
  absolutePath,
  answerInfoRequest,
  applyLogLevel,
  DAEMON_OPTIONS,
  type DaemonArgs,
  daemonArgs,
  DEVICE_STATE_HELP,
  listeningHelp,
  OTHER_HELP,
  parseOptions,
  serveDevice,
  wholeNumberOption,
} from "../../cli/daemon_options.ts";
import { UsageError } from "../../cli/usage_error.ts";
import { chooseEngine, logEngineChoice } from "../../cli/engine_choice.ts";
import type { FileIoEngineKind } from "../../io/file_io_engine.ts";
import { probeIoUring } from "../../io/open_engine.ts";
import { pathIsOnMemoryFileSystem } from "../../io/memory_file_system.ts";
import { closeQuietly } from "../../../ffi/mod.ts";
import {
  enterSandbox,
  isSandboxMode,
  SandboxError,
  type SandboxMode,
  sandboxStage,
} from "../../sandbox/mod.ts";
import { MetricsEndpoint } from "../../metrics/device_metrics_service.ts";
import { ListenError } from "../../backend/daemon.ts";
import {
  type CachePolicy,
  type FsXattrOptions,
  type InodeFileHandleMode,
  isCachePolicy,
  isInodeFileHandleMode,
  isMigrationMode,
  type MigrationMode,
} from "./passthrough/fs_types.ts";
import { FS_XATTR_HELP, FS_XATTR_OPTIONS, fsXattrArgs } from "./fs_xattr_options.ts";
import { applyOpenFileLimit, translateVirtiofsdArgs, VIRTIOFSD_HELP } from "./virtiofsd_compat.ts";
import { log } from "../../log.ts";

/** Defaults of `vhostd fs`. */
export const FS_DEFAULTS = {
  socketPath: "vhostd-fs.sock",
  tag: "vhostd",
  /**
   * Request queues offered: the most vhostd serves, so whatever
   * num-request-queues QEMU is given works; QEMU builds the guest's config
   * itself, and rings the guest never starts cost nothing (one Worker serves all).
   */
  numRequestQueues: MAX_REQUEST_QUEUES,
  migrationOnError: "abort",
  cache: "auto",
  inodeFileHandles: "never",
  migrationMode: "find-paths",
} as const;

/** Help text of `vhostd fs`. */
export const FS_HELP = `Usage: vhostd fs --shared-dir DIR [OPTIONS]

Share a host directory with a guest as a virtio-fs device (QEMU's
vhost-user-fs-pci); in the guest: mount -t virtiofs TAG /mnt

Shared directory:
  --shared-dir DIR       the directory the guest sees as its root (required)
  --read-only            refuse every change with EROFS; reads still work
  --cache MODE           how much the guest may cache, as virtiofsd's --cache:
                         never (direct I/O, no timeouts), metadata (direct I/O,
                         1 day timeouts, directory listings kept), auto
                         (default: 1 s timeouts, guest page cache) or always
                         (keep caches)
  --inode-file-handles MODE
                         never (default: every known file holds an fd), prefer
                         (known files hold a file handle, fds are opened on
                         demand through a cache of 1024; files without handles
                         hold an fd) or mandatory (refuse files without
                         handles); needs CAP_DAC_READ_SEARCH

  --aio io_uring|sync    engine of READ, WRITE and FSYNC: io_uring (they complete
                         later and the queues go on meanwhile) or sync (each runs
                         inside its request); default io_uring where it works,
                         sync for a directory in memory (tmpfs, ramfs)
${FS_XATTR_HELP}
  --sandbox MODE         confine the daemon: namespace (its own mount and PID
                         namespaces, root holding only the share; fewest
                         capabilities; seccomp), chroot or none; default: the
                         strongest that works here

${listeningHelp(FS_DEFAULTS.socketPath)}

Device:
  --tag TAG              mount tag, 1 to 36 bytes of UTF-8; default "${FS_DEFAULTS.tag}"
  --num-request-queues N most request queues offered (1-${MAX_REQUEST_QUEUES}), besides the
                         high-priority queue; default ${FS_DEFAULTS.numRequestQueues}, so any
                         num-request-queues given to QEMU up to that works

${DEVICE_STATE_HELP}
  --migration-on-error MODE
                         what a LOAD does with an open file or known inode that
                         cannot be found again on this host: abort (default:
                         the load fails, CHECK_DEVICE_STATE reports it) or
                         guest-error (the load succeeds, the guest gets EIO for it)
  --migration-mode MODE  how a SAVE describes known files: find-paths (default:
                         by path) or file-handles (by file handle too, tried
                         first on LOAD: finds unlinked open files and files
                         renamed on the host; both sides must see the same
                         filesystem; needs CAP_DAC_READ_SEARCH)

${OTHER_HELP}

${VIRTIOFSD_HELP}

Stop with SIGINT or SIGTERM: in-flight requests finish, the socket is removed.
`;

/** What `--print-capabilities` prints (vhost-user.rst, "Backend program conventions"). */
export function fsCapabilities(): Record<string, unknown> {
  return { type: "fs", features: ["migrate-precopy", "separate-options"] };
}

/** Parsed `vhostd fs` options. */
export interface FsArgs extends DaemonArgs {
  /** The shared directory as given (checked by {@linkcode runFs}). */
  sharedDir?: string;
  /** Mount tag. */
  tag: string;
  /** Refuse changes. */
  readOnly: boolean;
  /** Number of request queues. */
  numRequestQueues: number;
  /** LOAD policy. */
  migrationOnError: MigrationOnError;
  /** Guest caching policy. */
  cache: CachePolicy;
  /** `--aio`, when given (otherwise io_uring where it works and the directory is not in memory). */
  aio?: FileIoEngineKind;
  /** Extended attributes and ACLs. */
  xattr: FsXattrOptions;
  /** Inodes by fd or by file handle. */
  inodeFileHandles: InodeFileHandleMode;
  /** How a SAVE describes inodes. */
  migrationMode: MigrationMode;
  /** The sandbox asked for (undefined: the strongest that works). */
  sandbox?: SandboxMode;
  /** The arguments in vhostd's own options (virtiofsd's translated; the sandboxed daemon gets these). */
  vhostdArgs: string[];
  /** virtiofsd options accepted but not honoured, one log line each. */
  virtiofsdWarnings: string[];
  /** `--rlimit-nofile`: the open file limit to set. */
  openFileLimit?: number;
}

/** Parses `vhostd fs` arguments; throws UsageError with a one-line message. */
export function parseFsArgs(args: string[]): FsArgs {
  const options = {
    ...DAEMON_OPTIONS,
    "shared-dir": { type: "string" },
    tag: { type: "string" },
    "read-only": { type: "boolean", default: false },
    "num-request-queues": { type: "string" },
    "migration-on-error": { type: "string" },
    cache: { type: "string" },
    aio: { type: "string" },
    ...FS_XATTR_OPTIONS,
    "inode-file-handles": { type: "string" },
    "migration-mode": { type: "string" },
    sandbox: { type: "string" },
  } as const;
  const virtiofsd = translateVirtiofsdArgs(args, options);
  const values = parseOptions(virtiofsd.args, options);
  const common = daemonArgs(values, FS_DEFAULTS.socketPath);
  const tag = values.tag ?? FS_DEFAULTS.tag;
  const tagError = validateTag(tag);
  if (tagError) throw new UsageError(`--tag: ${tagError}`);
  const migrationOnError = values["migration-on-error"] ?? FS_DEFAULTS.migrationOnError;
  if (!isMigrationOnError(migrationOnError)) {
    throw new UsageError(
      `--migration-on-error must be abort or guest-error, got "${migrationOnError}"`,
    );
  }
  const cache = values.cache ?? FS_DEFAULTS.cache;
  if (!isCachePolicy(cache)) {
    throw new UsageError(`--cache must be never, metadata, auto or always, got "${cache}"`);
  }
  const aio = values.aio;
  if (aio !== undefined && aio !== "io_uring" && aio !== "sync") {
    throw new UsageError(`--aio must be io_uring or sync, got "${aio}"`);
  }
  const inodeFileHandles = values["inode-file-handles"] ?? FS_DEFAULTS.inodeFileHandles;
  if (!isInodeFileHandleMode(inodeFileHandles)) {
    throw new UsageError(
      `--inode-file-handles must be never, prefer or mandatory, got "${inodeFileHandles}"`,
    );
  }
  const migrationMode = values["migration-mode"] ?? FS_DEFAULTS.migrationMode;
  if (!isMigrationMode(migrationMode)) {
    throw new UsageError(
      `--migration-mode must be find-paths or file-handles, got "${migrationMode}"`,
    );
  }
  const sandbox = values.sandbox;
  if (sandbox !== undefined && !isSandboxMode(sandbox)) {
    throw new UsageError(`--sandbox must be namespace, chroot or none, got "${sandbox}"`);
  }
  const sharedDir = values["shared-dir"];
  if (sharedDir === undefined && !common.help && !common.printCapabilities) {
    throw new UsageError("--shared-dir is required (the directory to share)");
  }
  if (sharedDir === "") throw new UsageError("--shared-dir needs a path");
  return {
    ...common,
    sharedDir,
    tag,
    readOnly: values["read-only"] ?? false,
    numRequestQueues: wholeNumberOption(
      "num-request-queues",
      values["num-request-queues"],
      1,
      MAX_REQUEST_QUEUES,
    ) ?? FS_DEFAULTS.numRequestQueues,
    migrationOnError,
    cache,
    aio,
    xattr: fsXattrArgs(values),
    inodeFileHandles,
    migrationMode,
    sandbox,
    vhostdArgs: virtiofsd.args,
    virtiofsdWarnings: virtiofsd.warnings,
    openFileLimit: virtiofsd.openFileLimit,
  };
}

/**
 * The shared directory's canonical path; UsageError when it is missing,
 * not a directory, or not readable.
 */
export function checkSharedDir(path: string): string {
  let real: string;
  try {
    real = Deno.realPathSync(path);
    if (!Deno.statSync(real).isDirectory) {
      throw new UsageError(`--shared-dir: ${path} is not a directory`);
    }
    // Listing needs read and search permission: the guest's first READDIR would fail otherwise.
    for (const _ of Deno.readDirSync(real)) break;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const why = e instanceof Deno.errors.NotFound
      ? "does not exist"
      : e instanceof Deno.errors.PermissionDenied
      ? "is not readable"
      : e instanceof Error
      ? e.message
      : String(e);
    throw new UsageError(`--shared-dir: ${path} ${why}`);
  }
  return real;
}

/**
 * Refuses to start (UsageError) when `--inode-file-handles mandatory` cannot
 * work for the shared directory: the Worker would fail only at the first
 * connection otherwise.
 */
export function checkInodeFileHandles(sharedDir: string, mode: InodeFileHandleMode): void {
  if (mode === "never") return;
  try {
    new PassthroughFs({
      sharedDir,
      readOnly: true,
      migrationOnError: "abort",
      inodeFileHandles: mode,
    })
      .close();
  } catch (e) {
    throw new UsageError(`--shared-dir: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Runs `vhostd fs`; resolves with the exit code. */
export async function runFs(args: string[]): Promise<number> {
  const opts = parseFsArgs(args);
  const answered = answerInfoRequest(opts, FS_HELP, fsCapabilities);
  if (answered !== undefined) return answered;
  applyLogLevel(opts);
  for (const warning of opts.virtiofsdWarnings) log.warn(warning);
  // Before the sandbox: raising the hard limit needs CAP_SYS_RESOURCE, and the daemon inherits it.
  if (opts.openFileLimit !== undefined) applyOpenFileLimit(opts.openFileLimit);
  const sharedDir = checkSharedDir(opts.sharedDir!);
  checkInodeFileHandles(sharedDir, opts.inodeFileHandles);
  // The sandboxed daemon's root changes next: a unix: metrics path outside it is bound first.
  const metricsEndpoint = opts.metrics && sandboxStage()
    ? await MetricsEndpoint.open(opts.metrics)
    : undefined;
  const sandboxed = await enterFsSandbox(opts.vhostdArgs, opts, sharedDir).catch(async (e) => {
    await metricsEndpoint?.close();
    throw e;
  });
  if (typeof sandboxed === "number") return sandboxed;
  const engine = chooseEngine(
    opts.aio,
    probeIoUring,
    pathIsOnMemoryFileSystem(sandboxed.sharedDir!),
  );
  logEngineChoice(engine, "the shared directory");
  const device = new FsDevice({
    sharedDir: sandboxed.sharedDir!,
    tag: opts.tag,
    numRequestQueues: opts.numRequestQueues,
    readOnly: opts.readOnly,
    migrationOnError: opts.migrationOnError,
    cache: opts.cache,
    aio: engine.kind,
    xattrOptions: opts.xattr,
    inodeFileHandles: opts.inodeFileHandles,
    migrationMode: opts.migrationMode,
  });
  return await serveDevice(device, { ...opts, ...sandboxed }, {
    qemuDevice: `vhost-user-fs-pci,chardev=vhostd0,tag=${opts.tag}`,
    metricsEndpoint,
  });
}

/**
 * Enters the sandbox (src/sandbox/): resolves with the launcher's exit code
 * when this process only launched the sandboxed daemon, else with where to
 * listen.
 */
async function enterFsSandbox(
  args: string[],
  opts: FsArgs,
  sharedDir: string,
): Promise<number | Pick<FsArgs, "socketPath" | "listenFd" | "sharedDir" | "dumpStateDir">> {
  const dumpStateDir = opts.dumpStateDir === undefined
    ? undefined
    : canonicalDir(opts.dumpStateDir);
  // Resolved now: the sandboxed daemon's working directory becomes its new root.
  const socketPath = opts.socketPath === undefined ? undefined : absolutePath(opts.socketPath);
  try {
    const outcome = await enterSandbox({
      mode: opts.sandbox,
      args,
      sharedDir,
      readOnly: opts.readOnly,
      // File handles need CAP_DAC_READ_SEARCH and open_by_handle_at.
      fileHandles: opts.inodeFileHandles !== "never" || opts.migrationMode === "file-handles",
      writableDirs: dumpStateDir === undefined ? [] : [dumpStateDir],
      socketPath: opts.socketPath,
      listenFd: opts.listenFd,
    });
    if (outcome.kind === "launched") return outcome.exitCode;
    if (outcome.listenFd === undefined) return { ...opts, sharedDir, dumpStateDir };
    // The launcher sent its own copy of an inherited --fd; this one is a duplicate.
    if (opts.listenFd !== undefined) closeQuietly(opts.listenFd);
    return {
      // Still named in the log and the QEMU hint; the launcher created it and removes it.
      socketPath,
      listenFd: outcome.listenFd,
      sharedDir: outcome.sharedDir,
      dumpStateDir,
    };
  } catch (e) {
    if (e instanceof SandboxError || e instanceof ListenError) throw new UsageError(e.message);
    throw e;
  }
}

/** The canonical path of an existing directory (the sandbox binds it there). */
function canonicalDir(path: string): string {
  return Deno.realPathSync(path);
}
