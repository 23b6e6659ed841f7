/**
 * A libvirtd of the test's own: the system daemon's QEMU driver (as root, as
 * `qemu:///system` runs it), with every file it keeps under one temporary
 * directory, and `virsh` to talk to it.
 *
 * libvirtd's privileged paths are fixed (/etc/libvirt, /run/libvirt,
 * /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt), so it runs in a
 * mount namespace of its own (`unshare --mount`) where those directories
 * are bind mounts of the temporary directory's: its qemu.conf is the test's,
 * and nothing of the host's libvirt is read or changed. The QEMU processes
 * and virtiofsd back-ends it starts live in that namespace too; the test's
 * own files (under /tmp) look the same from both sides.
 *
 * Readiness without polling: `systemd-socket-activate` binds and listens on
 * the client socket before libvirtd exists (and says so on stderr, which
 * {@linkcode PrivateLibvirtd.start} waits for), and starts libvirtd (handing
 * it the socket, LISTEN_FDS) on the first connection; that first `virsh`
 * simply waits for its answer.
 *
 * @module
 */

/** What a `virsh` command did. */
export interface VirshResult {
  /** Exit status. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** How libvirtd ended. */
export interface LibvirtdExit {
  /** Exit status (0 after SIGTERM is a clean shutdown). */
  code: number;
  /** What it (and the set-up before it) wrote to stderr. */
  stderr: string;
}

/** The programs the private daemon needs, in the order they are checked. */
const PROGRAMS = ["libvirtd", "virsh", "systemd-socket-activate", "unshare"] as const;

/**
 * Why a private libvirtd cannot run here (a missing program, not root), or
 * undefined when it can.
 */
export function libvirtUnavailable(): string | undefined {
  for (const program of PROGRAMS) {
    try {
      const out = new Deno.Command(program, { args: ["--version"], stdout: "null", stderr: "null" })
        .outputSync();
      if (!out.success) return `${program} --version fails`;
    } catch {
      return `${program} is not installed (run \`bash scripts/setup_libvirt.sh\` as root)`;
    }
  }
  if (Deno.uid() !== 0) return "libvirtd's QEMU driver for qemu:///system needs root";
  return undefined;
}

/** The directories libvirtd keeps its files in, each bound to a subdirectory of the test's. */
const BOUND_DIRS = {
  etc: "/etc/libvirt",
  run: "/run/libvirt",
  lib: "/var/lib/libvirt",
  log: "/var/log/libvirt",
  cache: "/var/cache/libvirt",
} as const;

/**
 * The QEMU driver's settings for a machine without systemd or KVM: QEMU runs
 * as root without relabelling files or a /dev namespace (the container has
 * no use for them), no cgroups, and its output goes to files (no virtlogd).
 */
const QEMU_CONF = `user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
`;

/** Run in the new mount namespace: bind the private directories, then wait for the first client. */
const START_SCRIPT = `set -e
dir=$1
exec >&2
${
  Object.entries(BOUND_DIRS).map(([name, path]) =>
    `mkdir -p ${path}\nmount --bind "$dir/${name}" ${path}`
  ).join("\n")
}
exec systemd-socket-activate --listen="$dir/sock/libvirt-sock" --fdname=libvirtd.socket \\
  libvirtd --config "$dir/etc/libvirtd.conf" --pid-file "$dir/libvirtd.pid"
`;

/** A running private libvirtd; {@linkcode PrivateLibvirtd.stop} (or disposal) ends it. */
export class PrivateLibvirtd implements AsyncDisposable {
  /** The connection URI for `virsh -c`. */
  readonly uri: string;
  readonly #dir: string;
  readonly #process: Deno.ChildProcess;
  readonly #stderr: Promise<string>;
  #stopped?: Promise<LibvirtdExit>;

  private constructor(dir: string, process: Deno.ChildProcess, stderr: Promise<string>) {
    this.#dir = dir;
    this.#process = process;
    this.#stderr = stderr;
    this.uri = `qemu:///system?socket=${dir}/sock/libvirt-sock`;
  }

  /**
   * Lays out libvirtd's directories and configuration in `dir` (an empty
   * directory of the test's) and resolves once the client socket listens;
   * libvirtd itself starts with the first `virsh`. Rejects, with what was
   * printed, when the set-up ends before that.
   */
  static async start(dir: string): Promise<PrivateLibvirtd> {
    for (const name of [...Object.keys(BOUND_DIRS), "etc/qemu", "sock"]) {
      Deno.mkdirSync(`${dir}/${name}`, { recursive: true });
    }
    Deno.writeTextFileSync(
      `${dir}/etc/libvirtd.conf`,
      [
        `unix_sock_dir = "${dir}/sock"`,
        // Only root can reach the socket (it is root's, mode 0644 in a private directory).
        `auth_unix_rw = "none"`,
        `auth_unix_ro = "none"`,
        `log_outputs = "3:file:${dir}/libvirtd.log"`,
        "",
      ].join("\n"),
    );
    Deno.writeTextFileSync(`${dir}/etc/qemu.conf`, QEMU_CONF);
    const process = new Deno.Command("unshare", {
      args: ["--mount", "--", "sh", "-c", START_SCRIPT, "private-libvirtd", dir],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const lines = process.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let printed = "";
    while (!printed.includes("Listening on ")) {
      const { value, done } = await lines.read();
      if (done) {
        const status = await process.status;
        throw new Error(`the private libvirtd did not start (exit ${status.code}):\n${printed}`);
      }
      printed += value;
    }
    // The rest (libvirtd's own stderr) is kept for the diagnostics, and read so that it never blocks.
    const rest = (async () => {
      for (;;) {
        const { value, done } = await lines.read();
        if (done) return printed;
        printed += value;
      }
    })();
    return new PrivateLibvirtd(dir, process, rest);
  }

  /** Where libvirt writes the log of a domain's virtiofsd (`<name>-<alias>-virtiofsd.log`). */
  virtiofsdLog(domain: string, alias = "fs0"): string {
    return `${this.#dir}/log/qemu/${domain}-${alias}-virtiofsd.log`;
  }

  /** Runs `virsh -c URI ...args`. */
  async virsh(...args: string[]): Promise<VirshResult> {
    const out = await new Deno.Command("virsh", {
      args: ["-c", this.uri, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  }

  /** Runs `virsh -c URI ...args` and throws, with what it printed, unless it succeeds. */
  async virshOk(...args: string[]): Promise<string> {
    const r = await this.virsh(...args);
    if (r.code !== 0) {
      throw new Error(`virsh ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
    }
    return r.stdout;
  }

  /** The tail of libvirtd's log. */
  diagnostics(): string {
    try {
      const tail = Deno.readTextFileSync(`${this.#dir}/libvirtd.log`).split("\n").slice(-40);
      return `libvirtd.log:\n${tail.join("\n")}`;
    } catch {
      return "libvirtd.log: (none)";
    }
  }

  /** Stops libvirtd with SIGTERM (its clean shutdown); resolves with its exit status and stderr. */
  stop(): Promise<LibvirtdExit> {
    this.#stopped ??= (async () => {
      try {
        // unshare, sh and systemd-socket-activate each exec the next: this pid is libvirtd's.
        this.#process.kill("SIGTERM");
      } catch {
        // It has exited already.
      }
      const { code } = await this.#process.status;
      return { code, stderr: await this.#stderr };
    })();
    return this.#stopped;
  }

  /** Stops libvirtd. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
