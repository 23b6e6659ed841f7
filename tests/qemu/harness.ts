/**
 * Boots the end-to-end test guest (Debian cloud kernel + busybox initramfs
 * built by `scripts/build_guest.sh`) under QEMU with TCG, runs a shell script
 * inside it and reports what the script printed and how it exited.
 *
 * The guest's `/init` (scripts/guest/init) loads the virtio and fuse modules,
 * runs `/test.sh` between two markers on the serial console and powers off.
 * Each run appends a second, uncompressed newc archive holding `/test.sh` to
 * the base initramfs: Linux unpacks concatenated archives in order.
 *
 * Guest RAM is always a shared memfd (`share=on`) on a q35 machine, so that
 * vhost-user devices passed in {@linkcode GuestRunOptions.chardevs} work as is.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

const QEMU_BINARY = "qemu-system-x86_64";
const BEGIN_MARKER = "VHOSTD-TEST: BEGIN";
const EXIT_MARKER_PATTERN = /VHOSTD-TEST: EXIT (\d+)\r?\n/g;
const GUEST_CACHE_DIR = fileURLToPath(new URL("../../.cache/guest/", import.meta.url));
const NEWC_MAGIC = "070701";
const NEWC_HEADER_LENGTH = 110;
const NEWC_TRAILER_NAME = "TRAILER!!!";
const FILE_TYPE_MASK = 0o170000;
const REGULAR_FILE = 0o100000;
const DIRECTORY = 0o040000;
const MAX_NEWC_FIELD = 0xffff_ffff;

/** What to run in the guest and which devices to give it. */
export interface GuestRunOptions {
  /** Body of `/test.sh`, run by busybox `sh` inside the guest; its exit status is reported. */
  script: string;
  /**
   * Extra QEMU arguments that describe devices and their back-ends, e.g.
   * `["-chardev", "socket,id=c0,path=/tmp/x.sock", "-device", "vhost-user-blk-pci,chardev=c0,num-queues=2"]`.
   */
  chardevs?: string[];
  /** Any further QEMU arguments, appended after {@linkcode GuestRunOptions.chardevs}. */
  extraArgs?: string[];
  /** Extra words for the kernel command line, after `console=ttyS0 quiet panic=-1`. */
  kernelArgs?: string[];
  /** Guest RAM in MiB (a shared memfd). Default 256. */
  memoryMiB?: number;
  /** QEMU is killed after this many milliseconds. Default 120000. */
  timeoutMs?: number;
}

/** What a guest run produced. */
export interface GuestRunResult {
  /** Exit status of `/test.sh` from the EXIT marker; null if the marker never appeared. */
  exitCode: number | null;
  /** Full serial console log, with CRLF turned into LF. */
  output: string;
  /** Text the script printed: what lies between the BEGIN and EXIT markers. */
  scriptOutput: string;
  /** True when QEMU was killed because {@linkcode GuestRunOptions.timeoutMs} ran out. */
  timedOut: boolean;
  /** Milliseconds from starting QEMU to the BEGIN marker (kernel boot + module loading); null if never reached. */
  bootMs: number | null;
  /** Milliseconds from starting QEMU to its exit. */
  durationMs: number;
  /** QEMU's own exit status (0 after a clean guest power-off); null if it was killed by a signal. */
  qemuExitCode: number | null;
  /** What QEMU wrote to stderr (argument errors, vhost-user connection problems). */
  qemuStderr: string;
}

/** One entry of a newc archive made by {@linkcode buildNewcArchive}. */
export interface NewcEntry {
  /** Path inside the archive, relative to the root (a leading `/` is dropped). */
  path: string;
  /** File contents; must be empty for a directory. */
  data: Uint8Array;
  /** Permission bits, optionally with file type bits (regular file when none are given). */
  mode: number;
}

/**
 * Paths of the guest kernel and base initramfs in `.cache/guest/`.
 *
 * @throws {Error} when `scripts/build_guest.sh` has not been run.
 */
export function guestAssets(): { kernel: string; initrd: string } {
  const kernel = `${GUEST_CACHE_DIR}vmlinuz`;
  const initrd = `${GUEST_CACHE_DIR}initrd.gz`;
  for (const path of [kernel, initrd]) {
    if (!isFile(path)) {
      throw new Error(
        `guest asset ${path} is missing: build the test guest first with ` +
          "`bash scripts/build_guest.sh` (after `bash scripts/setup_qemu.sh`)",
      );
    }
  }
  return { kernel, initrd };
}

/**
 * Whether `qemu-system-x86_64` runs and reports QEMU 10 or later (the version
 * whose vhost-user front-end the end-to-end tests target).
 */
export function qemuAvailable(): boolean {
  const major = qemuMajorVersion();
  return major !== null && major >= 10;
}

/**
 * Throws a clear error, naming the set-up script to run, unless both QEMU and
 * the guest assets are present. Tests call this first so that a machine
 * without them fails instead of silently skipping.
 */
export function requireGuestEnvironment(): void {
  if (!qemuAvailable()) {
    const major = qemuMajorVersion();
    throw new Error(
      major === null
        ? `${QEMU_BINARY} is not installed: run \`bash scripts/setup_qemu.sh\` as root`
        : `${QEMU_BINARY} reports QEMU ${major}, the tests need QEMU 10: run \`bash scripts/setup_qemu.sh\` as root`,
    );
  }
  guestAssets();
}

/**
 * Boots the guest with `opts.script` as `/test.sh` and waits until QEMU exits
 * or the timeout kills it. Temporary files are removed on every path.
 */
export async function runGuest(opts: GuestRunOptions): Promise<GuestRunResult> {
  const memoryMiB = opts.memoryMiB ?? 256;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  if (!Number.isInteger(memoryMiB) || memoryMiB < 64) {
    throw new RangeError(`memoryMiB must be an integer of at least 64, got ${memoryMiB}`);
  }
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(`timeoutMs must be a positive number, got ${timeoutMs}`);
  }
  const tempDir = await Deno.makeTempDir({ prefix: "vhostd-guest-" });
  try {
    const initrd = `${tempDir}/initrd`;
    await writeTestInitrd(initrd, opts.script);
    const args = guestQemuArgs({
      initrd,
      memoryMiB,
      kernelArgs: opts.kernelArgs,
      chardevs: opts.chardevs,
      extraArgs: opts.extraArgs,
    });
    return await runQemu(args, timeoutMs);
  } finally {
    await Deno.remove(tempDir, { recursive: true });
  }
}

/** How {@linkcode guestQemuArgs} lays out a guest. */
export interface GuestQemuArgsOptions {
  /** The per-test initramfs, as written by {@linkcode writeTestInitrd}. */
  initrd: string;
  /** Guest RAM in MiB (a shared memfd). Default 256. */
  memoryMiB?: number;
  /** Extra words for the kernel command line, after `console=ttyS0 quiet panic=-1`. */
  kernelArgs?: string[];
  /** Device and back-end arguments, as in {@linkcode GuestRunOptions.chardevs}. */
  chardevs?: string[];
  /** Any further QEMU arguments, appended last. */
  extraArgs?: string[];
}

/**
 * The QEMU arguments {@linkcode runGuest} uses (TCG, q35 with a shared memfd
 * as guest RAM, serial console on stdio, no reboot), for callers that start
 * QEMU themselves, e.g. a migration source and destination.
 *
 * @throws {Error} when the guest kernel has not been built
 * @throws {RangeError} for a memory size that is not an integer of at least 64 MiB
 */
export function guestQemuArgs(opts: GuestQemuArgsOptions): string[] {
  const memoryMiB = opts.memoryMiB ?? 256;
  if (!Number.isInteger(memoryMiB) || memoryMiB < 64) {
    throw new RangeError(`memoryMiB must be an integer of at least 64, got ${memoryMiB}`);
  }
  return [
    "-accel",
    "tcg",
    "-m",
    `${memoryMiB}M`,
    "-object",
    `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
    "-machine",
    "q35,memory-backend=mem",
    "-nographic",
    "-nodefaults",
    "-serial",
    "stdio",
    "-no-reboot",
    "-kernel",
    guestAssets().kernel,
    "-initrd",
    opts.initrd,
    "-append",
    ["console=ttyS0", "quiet", "panic=-1", ...(opts.kernelArgs ?? [])].join(" "),
    ...(opts.chardevs ?? []),
    ...(opts.extraArgs ?? []),
  ];
}

/**
 * Writes the base initramfs followed by an archive holding `script` as
 * `/test.sh` to `path`: the initrd of one test run.
 *
 * @throws {Error} when the guest initramfs has not been built
 */
export async function writeTestInitrd(path: string, script: string): Promise<void> {
  await Deno.writeFile(path, await testInitrd(guestAssets().initrd, script));
}

/**
 * Encodes files and directories as an uncompressed newc ("070701") cpio
 * archive, ending with the `TRAILER!!!` entry, as the Linux initramfs
 * unpacker reads it. Owner is root, mtime 0.
 *
 * @throws {TypeError} for an empty path, a path with NUL or `..` components
 * @throws {RangeError} for a mode outside 0..0o177777, data on a directory,
 *   or data too large for newc's 32-bit size field
 */
export function buildNewcArchive(files: NewcEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let inode = 1;
  for (const file of files) {
    const name = validArchivePath(file.path);
    const mode = withFileType(file.mode);
    if ((mode & FILE_TYPE_MASK) === DIRECTORY && file.data.length > 0) {
      throw new RangeError(`directory ${file.path} cannot have data`);
    }
    if (file.data.length > MAX_NEWC_FIELD) {
      throw new RangeError(`${file.path} is too large for a newc archive`);
    }
    const isDirectory = (mode & FILE_TYPE_MASK) === DIRECTORY;
    parts.push(newcEntry(name, { inode: inode++, mode, nlink: isDirectory ? 2 : 1 }, file.data));
  }
  parts.push(newcEntry(NEWC_TRAILER_NAME, { inode: 0, mode: 0, nlink: 1 }, new Uint8Array(0)));
  return concatBytes(parts);
}

async function runQemu(args: string[], timeoutMs: number): Promise<GuestRunResult> {
  const started = performance.now();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(QEMU_BINARY, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        `${QEMU_BINARY} is not installed: run \`bash scripts/setup_qemu.sh\` as root`,
      );
    }
    throw error;
  }

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // QEMU exited between the timer firing and the kill: nothing to stop.
    }
  }, timeoutMs);

  try {
    const stderrText = new Response(child.stderr).text();
    const decoder = new TextDecoder();
    let serialLog = "";
    let bootMs: number | null = null;
    for await (const chunk of child.stdout) {
      serialLog += decoder.decode(chunk, { stream: true });
      if (bootMs === null && serialLog.includes(BEGIN_MARKER)) {
        bootMs = Math.round(performance.now() - started);
      }
    }
    serialLog += decoder.decode();
    const status = await child.status;
    const durationMs = Math.round(performance.now() - started);
    const { exitCode, scriptOutput } = parseConsole(serialLog);
    return {
      exitCode,
      output: serialLog.replaceAll("\r\n", "\n"),
      scriptOutput,
      timedOut,
      bootMs,
      durationMs,
      qemuExitCode: status.signal === null ? status.code : null,
      qemuStderr: await stderrText,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Splits the console log at the markers printed by scripts/guest/init. */
function parseConsole(log: string): { exitCode: number | null; scriptOutput: string } {
  const beginAt = log.indexOf(BEGIN_MARKER);
  if (beginAt < 0) return { exitCode: null, scriptOutput: "" };
  const lineEnd = log.indexOf("\n", beginAt);
  const bodyStart = lineEnd < 0 ? log.length : lineEnd + 1;
  // The last EXIT marker is the one init printed, even if the script echoed one.
  let exitMatch: RegExpExecArray | null = null;
  for (const match of log.slice(bodyStart).matchAll(EXIT_MARKER_PATTERN)) exitMatch = match;
  const bodyEnd = exitMatch === null ? log.length : bodyStart + exitMatch.index;
  return {
    exitCode: exitMatch === null ? null : Number(exitMatch[1]),
    scriptOutput: log.slice(bodyStart, bodyEnd).replaceAll("\r\n", "\n"),
  };
}

/** The base initramfs, padded to 4 bytes, followed by an archive holding /test.sh. */
async function testInitrd(baseInitrd: string, script: string): Promise<Uint8Array> {
  const base = await Deno.readFile(baseInitrd);
  const padding = new Uint8Array((4 - (base.length % 4)) % 4);
  const overlay = buildNewcArchive([
    { path: "test.sh", data: new TextEncoder().encode(script), mode: 0o755 },
  ]);
  return concatBytes([base, padding, overlay]);
}

function qemuMajorVersion(): number | null {
  try {
    const result = new Deno.Command(QEMU_BINARY, {
      args: ["--version"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    if (!result.success) return null;
    const match = /QEMU emulator version (\d+)\./.exec(new TextDecoder().decode(result.stdout));
    return match === null ? null : Number(match[1]);
  } catch {
    return null;
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function validArchivePath(path: string): string {
  const name = path.replace(/^\/+/, "");
  if (name === "" || name.includes("\0")) {
    throw new TypeError(`invalid archive path ${JSON.stringify(path)}`);
  }
  if (name.split("/").some((part) => part === ".." || part === "")) {
    throw new TypeError(`archive path ${JSON.stringify(path)} has an empty or '..' component`);
  }
  return name;
}

function withFileType(mode: number): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o177777) {
    throw new RangeError(`invalid file mode ${mode}`);
  }
  return (mode & FILE_TYPE_MASK) === 0 ? mode | REGULAR_FILE : mode;
}

function newcEntry(
  name: string,
  meta: { inode: number; mode: number; nlink: number },
  data: Uint8Array,
): Uint8Array {
  const encoder = new TextEncoder();
  const nameBytes = encoder.encode(`${name}\0`);
  const fields = [
    meta.inode,
    meta.mode,
    0, // uid
    0, // gid
    meta.nlink,
    0, // mtime
    data.length,
    0, // devmajor
    0, // devminor
    0, // rdevmajor
    0, // rdevminor
    nameBytes.length,
    0, // check (unused by newc)
  ];
  const header = encoder.encode(
    NEWC_MAGIC + fields.map((field) => field.toString(16).padStart(8, "0")).join(""),
  );
  // Name and data each end on a 4-byte boundary, counted from the entry start.
  const namePadding = padTo4(NEWC_HEADER_LENGTH + nameBytes.length);
  return concatBytes([
    header,
    nameBytes,
    new Uint8Array(namePadding),
    data,
    new Uint8Array(padTo4(data.length)),
  ]);
}

function padTo4(length: number): number {
  return (4 - (length % 4)) % 4;
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
