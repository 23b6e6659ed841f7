/**
 * virtiofsd's command line for `vhostd fs`, so that vhostd can stand in for
 * virtiofsd wherever a manager starts one, libvirt above all.
 *
 * libvirt 11's QEMU driver (src/qemu/qemu_virtiofs.c) runs the `<binary>`
 * of a `<filesystem>` with `--print-capabilities` first; because vhostd
 * lists `separate-options` it then starts it as
 *
 *     BINARY --fd=N --shared-dir DIR [--cache never|always]
 *       [--sandbox namespace|chroot] [--xattr] [--thread-pool-size=N]
 *       [--rlimit-nofile=N] [--log-level debug] [--uid-map=:a:b:n:]... [--gid-map=...]...
 *
 * and without that feature it would use the C virtiofsd's form,
 * `--fd=N -o source=DIR[,cache=none|auto|always][,sandbox=...][,xattr|,no_xattr]
 * [,flock|,no_flock][,posix_lock|,no_posix_lock] [--thread-pool-size=N] [-d]`.
 *
 * {@linkcode translateVirtiofsdArgs} rewrites both into vhostd's own
 * options before they are parsed. Options of the same name and meaning
 * (`--fd`, `--socket-path`, `--shared-dir`, `--cache`, `--sandbox`,
 * `--xattr`, `--posix-acl`, `--tag`, `--inode-file-handles`,
 * `--migration-mode`, `--migration-on-error`, `--print-capabilities`) pass
 * through untouched. An option vhostd cannot honour is accepted with a
 * warning that says what vhostd does instead; one whose absence would change
 * what the guest sees (id mapping) is a usage error.
 *
 * @module
 */

import { UsageError } from "../../cli/usage_error.ts";
import { wholeNumberOption } from "../../cli/daemon_options.ts";
import { openFileLimit, setOpenFileLimit, SyscallError } from "../../../ffi/mod.ts";
import { log } from "../../log.ts";

/** Help text of the virtiofsd options `vhostd fs` takes (its drop-in use under libvirt). */
export const VIRTIOFSD_HELP = `virtiofsd compatibility (what libvirt passes to its <binary>):
  -o source=DIR[,cache=none|auto|always][,sandbox=MODE][,xattr][,log_level=L]...
                         the C virtiofsd's form of the options above
  --rlimit-nofile N      set the open file limit (soft and hard) to N; 0 keeps it
  --readonly, --xattrmap MAP, -d
                         --read-only, --xattr-mapping MAP, --log-level debug
  --thread-pool-size N, --announce-submounts, --syslog, -o flock, -o posix_lock
                         accepted with a warning: vhostd does not do these
  --uid-map, --gid-map, --translate-uid, --translate-gid
                         refused: vhostd maps no ids`;

/** The parseArgs specification of one option (only what the translation needs). */
export interface OptionShape {
  /** Whether the option takes a value. */
  type: "string" | "boolean";
}

/** What {@linkcode translateVirtiofsdArgs} made of a command line. */
export interface VirtiofsdTranslation {
  /** The command line in vhostd's own options. */
  args: string[];
  /** One line for each option accepted without being (fully) honoured, for the log. */
  warnings: string[];
  /** `--rlimit-nofile N` with N > 0: the open file limit (soft and hard) to set. */
  openFileLimit?: number;
}

/** How one virtiofsd-only option becomes vhostd options. */
interface VirtiofsdOption {
  /** Whether it takes a value (`--name VALUE` or `--name=VALUE`). */
  takesValue: boolean;
  /** Adds what it means to `out`; `value` is undefined for a flag. */
  translate(out: VirtiofsdTranslation, value: string | undefined): void;
}

const LOCKS_WARNING = "vhostd serves no file locks (GETLK, SETLK, SETLKW): " +
  "the guest's flock() and POSIX locks stay inside the guest, not seen by host processes";

const SUBMOUNTS_WARNING =
  "--announce-submounts is not honoured: vhostd does not announce submounts " +
  "(FUSE_ATTR_SUBMOUNT), so the guest sees mounts below the shared directory as part of " +
  "one filesystem with one st_dev";

function threadPoolWarning(size: number): string {
  return `--thread-pool-size ${size} is ignored: vhostd has no thread pool; one Worker ` +
    "serves every request queue and keeps reads, writes and fsyncs in flight through " +
    "io_uring (--aio) while it goes on with the other requests";
}

const ID_MAP_ERROR = "vhostd maps no user or group ids (it does not run in a user namespace " +
  "of its own, and the guest's ids are stored as they are); libvirt passes --uid-map and " +
  "--gid-map only for unprivileged (qemu:///session) domains: start the domain through " +
  "qemu:///system, where vhostd runs as root";

/** `table[key]` when it is the table's own entry (never Object.prototype's, for `--constructor`). */
function entry<T>(table: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/** virtiofsd's log levels that vhostd lacks, as its nearest own level. */
const LOG_LEVEL_ALIASES: Record<string, { level: string; warning?: string }> = {
  trace: { level: "debug" },
  off: {
    level: "error",
    warning: "--log-level off: vhostd still logs errors (its quietest level is error)",
  },
};

function logLevel(out: VirtiofsdTranslation, level: string): void {
  const alias = entry(LOG_LEVEL_ALIASES, level);
  if (alias?.warning) out.warnings.push(alias.warning);
  out.args.push("--log-level", alias?.level ?? level);
}

/** virtiofsd's (Rust, 1.x) long options that vhostd spells differently or lacks. */
const VIRTIOFSD_OPTIONS: Record<string, VirtiofsdOption> = {
  "thread-pool-size": {
    takesValue: true,
    translate(out, value) {
      const size = wholeNumberOption("thread-pool-size", value, 0, 2 ** 31 - 1)!;
      // 0 is virtiofsd's "no pool: serve requests on the queue's own thread", which vhostd does.
      if (size > 0) out.warnings.push(threadPoolWarning(size));
    },
  },
  "announce-submounts": {
    takesValue: false,
    translate(out) {
      out.warnings.push(SUBMOUNTS_WARNING);
    },
  },
  "rlimit-nofile": {
    takesValue: true,
    translate(out, value) {
      const limit = wholeNumberOption("rlimit-nofile", value, 0, 2 ** 31 - 1)!;
      // 0 leaves the limit as it is, as in virtiofsd.
      out.openFileLimit = limit > 0 ? limit : undefined;
    },
  },
  "log-level": {
    takesValue: true,
    translate(out, value) {
      logLevel(out, value!);
    },
  },
  readonly: {
    takesValue: false,
    translate(out) {
      out.args.push("--read-only");
    },
  },
  xattrmap: {
    takesValue: true,
    translate(out, value) {
      out.args.push("--xattr-mapping", value!);
    },
  },
  syslog: {
    takesValue: false,
    translate(out) {
      out.warnings.push("--syslog is not honoured: vhostd logs to stderr");
    },
  },
  "uid-map": { takesValue: true, translate: refuseIdMap("uid-map") },
  "gid-map": { takesValue: true, translate: refuseIdMap("gid-map") },
  "translate-uid": { takesValue: true, translate: refuseIdMap("translate-uid") },
  "translate-gid": { takesValue: true, translate: refuseIdMap("translate-gid") },
};

function refuseIdMap(name: string): VirtiofsdOption["translate"] {
  return () => {
    throw new UsageError(`--${name}: ${ID_MAP_ERROR}`);
  };
}

/** The C virtiofsd's `-o` cache modes (libvirt writes `none`) as vhostd's `--cache`. */
const OLD_CACHE_MODES: Record<string, string> = {
  none: "never",
  never: "never",
  metadata: "metadata",
  auto: "auto",
  always: "always",
};

/** The C virtiofsd's `-o` sub-options that are plain flags. */
const OLD_FLAGS: Record<string, (out: VirtiofsdTranslation) => void> = {
  xattr: (out) => out.args.push("--xattr"),
  // Off is vhostd's default for each of these.
  no_xattr: () => {},
  no_posix_acl: () => {},
  no_flock: () => {},
  no_posix_lock: () => {},
  posix_acl: (out) => out.args.push("--posix-acl"),
  flock: (out) => out.warnings.push(`-o flock is not honoured: ${LOCKS_WARNING}`),
  posix_lock: (out) => out.warnings.push(`-o posix_lock is not honoured: ${LOCKS_WARNING}`),
  announce_submounts: (out) => out.warnings.push(SUBMOUNTS_WARNING),
};

/** The C virtiofsd's `-o` sub-options that take a value. */
const OLD_VALUES: Record<string, (out: VirtiofsdTranslation, value: string) => void> = {
  source: (out, dir) => out.args.push("--shared-dir", dir),
  cache: (out, mode) => {
    const cache = entry(OLD_CACHE_MODES, mode);
    if (cache === undefined) {
      throw new UsageError(`-o cache must be none, auto or always, got "${mode}"`);
    }
    out.args.push("--cache", cache);
  },
  sandbox: (out, mode) => out.args.push("--sandbox", mode),
  xattrmap: (out, map) => out.args.push("--xattr-mapping", map),
  log_level: (out, level) => logLevel(out, level === "err" ? "error" : level),
};

/**
 * Splits a `-o` list at single commas; `,,` stands for a comma inside a
 * value (how libvirt writes a shared directory whose path has one).
 */
export function splitOptionList(list: string): string[] {
  const items: string[] = [];
  let current = "";
  for (let i = 0; i < list.length; i++) {
    if (list[i] !== ",") {
      current += list[i];
    } else if (list[i + 1] === ",") {
      current += ",";
      i++;
    } else {
      items.push(current);
      current = "";
    }
  }
  items.push(current);
  return items;
}

function translateOptionList(out: VirtiofsdTranslation, list: string): void {
  for (const item of splitOptionList(list)) {
    if (item === "") continue;
    const equals = item.indexOf("=");
    if (equals < 0) {
      const flag = entry(OLD_FLAGS, item);
      if (flag === undefined) throw new UsageError(`-o: unknown option "${item}"`);
      flag(out);
      continue;
    }
    const name = item.slice(0, equals);
    const value = item.slice(equals + 1);
    const translate = entry(OLD_VALUES, name);
    if (translate === undefined) throw new UsageError(`-o: unknown option "${name}"`);
    if (value === "") throw new UsageError(`-o ${name} needs a value`);
    translate(out, value);
  }
}

/**
 * Rewrites virtiofsd's options in `args` into vhostd's, keeping every other
 * argument (and the value after each option of `vhostdOptions` that takes
 * one) in place. Throws UsageError for a virtiofsd option given wrongly or
 * one vhostd refuses.
 */
export function translateVirtiofsdArgs(
  args: readonly string[],
  vhostdOptions: Readonly<Record<string, OptionShape>>,
): VirtiofsdTranslation {
  const out: VirtiofsdTranslation = { args: [], warnings: [] };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      out.args.push(...args.slice(i));
      break;
    }
    if (arg === "-o") {
      if (i + 1 >= args.length) throw new UsageError("-o needs a list of options");
      translateOptionList(out, args[++i]);
    } else if (arg.startsWith("-o")) {
      translateOptionList(out, arg.slice(2));
    } else if (arg === "-d") {
      out.args.push("--log-level", "debug");
    } else if (arg === "-f") {
      // virtiofsd's "stay in the foreground": vhostd always does.
    } else if (arg.startsWith("--")) {
      const equals = arg.indexOf("=");
      const name = arg.slice(2, equals < 0 ? undefined : equals);
      const inline = equals < 0 ? undefined : arg.slice(equals + 1);
      const option = entry(VIRTIOFSD_OPTIONS, name);
      if (option !== undefined) {
        let value = inline;
        if (option.takesValue && value === undefined) {
          if (i + 1 >= args.length) throw new UsageError(`--${name} needs a value`);
          value = args[++i];
        } else if (!option.takesValue && value !== undefined) {
          throw new UsageError(`--${name} takes no value`);
        }
        option.translate(out, value);
      } else {
        out.args.push(arg);
        // The value of one of vhostd's own options is not an option, whatever it looks like.
        if (
          inline === undefined && entry(vhostdOptions, name)?.type === "string" &&
          i + 1 < args.length
        ) {
          out.args.push(args[++i]);
        }
      }
    } else {
      out.args.push(arg);
    }
  }
  return out;
}

/**
 * Sets the open file limit, soft and hard, to `limit` (virtiofsd's
 * `--rlimit-nofile`); UsageError when the kernel refuses.
 */
export function applyOpenFileLimit(limit: number): void {
  const wanted = BigInt(limit);
  try {
    setOpenFileLimit({ soft: wanted, hard: wanted });
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    const now = openFileLimit();
    throw new UsageError(
      `--rlimit-nofile ${limit}: ${e.code} (the limit stays ${now.soft}, at most ${now.hard}; ` +
        "raising it needs CAP_SYS_RESOURCE and at most fs.nr_open)",
    );
  }
  log.info(`open file limit set to ${limit} (--rlimit-nofile)`);
}
