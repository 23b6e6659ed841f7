/**
 * The capabilities the sandboxed file server keeps, and reading them back
 * from /proc for every thread.
 *
 * The list is virtiofsd's: what a passthrough file server running as root
 * needs to create files for any guest user and set their owner, mode, times
 * and device numbers; CAP_DAC_READ_SEARCH only with file handles
 * (open_by_handle_at). Everything else is dropped, from the effective,
 * permitted, inheritable and bounding sets alike.
 *
 * @module
 */

/** Linux capability numbers (linux/capability.h) of the ones vhostd names. */
export const CAPABILITY_NUMBERS = {
  chown: 0,
  dac_override: 1,
  dac_read_search: 2,
  fowner: 3,
  fsetid: 4,
  setgid: 6,
  setuid: 7,
  sys_chroot: 18,
  sys_admin: 21,
  mknod: 27,
  setfcap: 31,
} as const;

/** A capability vhostd names (lower case, without `CAP_`, as setpriv spells it). */
export type CapabilityName = keyof typeof CAPABILITY_NUMBERS;

/** Options of {@linkcode keptCapabilities}. */
export interface KeptCapabilityOptions {
  /** The share uses file handles (needs CAP_DAC_READ_SEARCH). */
  fileHandles?: boolean;
  /** The process still has to chroot itself (`--sandbox chroot`). */
  chroot?: boolean;
}

/** The capabilities the file server keeps. */
export function keptCapabilities(options: KeptCapabilityOptions = {}): CapabilityName[] {
  const kept: CapabilityName[] = [
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "setgid",
    "setuid",
    "mknod",
    "setfcap",
  ];
  if (options.fileHandles) kept.push("dac_read_search");
  if (options.chroot) kept.push("sys_chroot");
  return kept;
}

/** The bit mask of `names`, as /proc/PID/status prints CapEff. */
export function capabilityMask(names: readonly CapabilityName[]): bigint {
  let mask = 0n;
  for (const name of names) mask |= 1n << BigInt(CAPABILITY_NUMBERS[name]);
  return mask;
}

/**
 * setpriv(1) arguments that leave an execve'd root process with exactly
 * `names`: as root without SECBIT_NOROOT the new permitted set is the
 * inheritable set plus the bounding set, so both are cut down.
 */
export function setprivCapabilityArgs(names: readonly CapabilityName[]): string[] {
  const list = ["-all", ...names.map((name) => `+${name}`)].join(",");
  return [`--inh-caps=${list}`, `--bounding-set=${list}`];
}

/** One thread's capability sets, from /proc/PID/task/TID/status. */
export interface ThreadCapabilities {
  /** Thread id. */
  tid: number;
  /** CapEff. */
  effective: bigint;
  /** CapPrm. */
  permitted: bigint;
  /** CapBnd. */
  bounding: bigint;
  /** Seccomp mode (0 none, 1 strict, 2 filter). */
  seccomp: number;
  /** NoNewPrivs. */
  noNewPrivs: boolean;
}

/** Parses the capability and seccomp lines of a /proc status file. */
export function parseStatusCapabilities(tid: number, status: string): ThreadCapabilities {
  const field = (name: string) => {
    const match = status.match(new RegExp(`^${name}:\\s*(\\S+)`, "m"));
    if (!match) throw new Error(`no ${name} line in the status of thread ${tid}`);
    return match[1];
  };
  return {
    tid,
    effective: BigInt(`0x${field("CapEff")}`),
    permitted: BigInt(`0x${field("CapPrm")}`),
    bounding: BigInt(`0x${field("CapBnd")}`),
    seccomp: Number(field("Seccomp")),
    noNewPrivs: field("NoNewPrivs") === "1",
  };
}

/** The capabilities of every thread of process `pid` (as this process sees /proc). */
export function threadCapabilities(pid: number | "self"): ThreadCapabilities[] {
  const threads: ThreadCapabilities[] = [];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    let status: string;
    try {
      status = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/status`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // the thread ended meanwhile
      throw e;
    }
    threads.push(parseStatusCapabilities(Number(task.name), status));
  }
  return threads;
}
