/**
 * vhostd as the virtiofsd of a libvirt domain: Debian's libvirt 11 (its own
 * libvirtd, tests/qemu/libvirt_daemon.ts) probes `<binary path=...>` with
 * `--print-capabilities`, starts it with the command line of
 * qemuVirtioFSBuildCommandLine (src/qemu/qemu_virtiofs.c) on a listening
 * socket of its own (`--fd=N`), and starts QEMU on it. The TCG guest mounts
 * the share, reads a file the host wrote, writes one the host checks and
 * powers off; libvirt then stops vhostd with SIGTERM, and it exits 0.
 * Twice: once with vhostd's own capabilities (libvirt then uses the Rust
 * virtiofsd's separate options), once with the wrapper answering the probe
 * as the C virtiofsd did (libvirt then uses `-o source=...`).
 *
 * The `<binary>` is a wrapper script that records its argv and vhostd's
 * exit status: the status goes into a FIFO, and reading it is how the test
 * knows the domain has stopped (libvirt stops its virtiofsd while it tears
 * the domain down).
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { guestAssets, requireGuestEnvironment, writeTestInitrd } from "./harness.ts";
import { type LibvirtdExit, libvirtUnavailable, PrivateLibvirtd } from "./libvirt_daemon.ts";

const DOMAIN = "vhostd-libvirt-test";
const TAG = "share";
const HOST_TEXT = "written by the host for libvirt's guest\n";
const GUEST_TEXT = "written by the guest through libvirt's virtiofs";
const OPEN_FILE_LIMIT = 4096;
/** Only a guard against a hang: the test waits for events, never for time. */
const STOP_GUARD_MS = 300_000;
const MAIN_TS = fileURLToPath(new URL("../../main.ts", import.meta.url));

const GUEST_SCRIPT = `
mount -t virtiofs ${TAG} /mnt || exit 10
cat /mnt/from-host.txt || exit 11
echo "${GUEST_TEXT}" > /mnt/from-guest.txt || exit 12
umount /mnt || exit 13
`;

/** The `<filesystem>` element, as the README shows it (with this test's paths and options). */
function filesystemXml(binary: string, share: string): string {
  return `<filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs' queue='1024'/>
      <binary path='${binary}' xattr='on'>
        <cache mode='none'/>
        <sandbox mode='namespace'/>
        <thread_pool size='2'/>
        <openfiles max='${OPEN_FILE_LIMIT}'/>
      </binary>
      <source dir='${share}'/>
      <target dir='${TAG}'/>
    </filesystem>`;
}

function domainXml(dir: string, binary: string, share: string): string {
  return `<domain type='qemu'>
  <name>${DOMAIN}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${guestAssets().kernel}</kernel>
    <initrd>${dir}/initrd</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='${dir}/console.log'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    ${filesystemXml(binary, share)}
  </devices>
</domain>
`;
}

/**
 * The two command lines libvirt builds: with `separate-options` among the
 * binary's capabilities (vhostd's answer, and the Rust virtiofsd's), and
 * without (the C virtiofsd's `-o` form).
 */
type CommandLineForm = "separate-options" | "-o";

/** What the C virtiofsd answered to `--print-capabilities`. */
const C_VIRTIOFSD_CAPABILITIES = '{"type":"fs","features":["migrate-precopy"]}';

/**
 * The `<binary>`: records the probe and the argv, runs vhostd, and writes
 * its exit status into the FIFO. SIGTERM reaches vhostd from libvirt (which
 * signals the whole process group); the trap only keeps the shell alive
 * until vhostd has exited. For the `-o` form it answers the probe as the C
 * virtiofsd did.
 */
function wrapperScript(dir: string, form: CommandLineForm): string {
  const deno = `'${Deno.execPath()}' run --allow-all '${MAIN_TS}' fs`;
  const denoDir = Deno.env.get("DENO_DIR");
  return `#!/bin/sh
# vhostd standing in for virtiofsd, made by tests/qemu/fs_libvirt_test.ts
export NO_COLOR=1
${
    denoDir === undefined
      ? ""
      : `export DENO_DIR='${denoDir}'\n`
  }if [ "$1" = --print-capabilities ]; then
  : > '${dir}/capabilities-probed'
  ${form === "-o" ? `echo '${C_VIRTIOFSD_CAPABILITIES}'; exit 0` : `exec ${deno} "$@"`}
fi
printf '%s\\n' "$@" > '${dir}/argv'
trap : TERM INT
${deno} "$@"
status=$?
echo "$status" > '${dir}/vhostd-exit'
exit "$status"
`;
}

/**
 * Waits for what the wrapper writes into the FIFO (vhostd's exit status),
 * from before the domain starts: the wrapper's write never waits for a
 * reader, so a vhostd that exits early lets go of libvirt's socket at once.
 */
class ExitStatusReader {
  readonly #fifo: string;
  readonly #status: Promise<string>;
  #settled = false;

  constructor(fifo: string) {
    this.#fifo = fifo;
    this.#status = Deno.readTextFile(fifo).then((text) => text.trim())
      .finally(() => this.#settled = true);
    // A failure is reported by status(); unawaited, it must not end the test run.
    this.#status.catch(() => {});
  }

  /** vhostd's exit status as text; rejects after {@linkcode STOP_GUARD_MS} (a hang, not a timing). */
  async status(): Promise<string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const guard = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`vhostd did not exit within ${STOP_GUARD_MS / 1000} s`)),
        STOP_GUARD_MS,
      );
    });
    try {
      return await Promise.race([this.#status, guard]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends a read still waiting for a writer (a domain that never started), so the test can finish. */
  async release(): Promise<void> {
    if (this.#settled) return;
    // There is a reader, so this open for writing returns at once.
    await Deno.writeTextFile(this.#fifo, "");
    await this.#status.catch(() => {});
  }
}

function consoleOutcome(serial: string): { exitCode: number | null; output: string } {
  const log = serial.replaceAll("\r\n", "\n");
  const begin = log.indexOf("VHOSTD-TEST: BEGIN");
  const exit = /VHOSTD-TEST: EXIT (\d+)/.exec(log);
  return {
    exitCode: exit ? Number(exit[1]) : null,
    output: begin < 0 || !exit ? "" : log.slice(begin, exit.index),
  };
}

function readOr(path: string, fallback: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return fallback;
  }
}

/** The argv libvirt gives the binary after `--fd=N`, for the test's `<filesystem>`. */
function expectedArgv(form: CommandLineForm, share: string): string[] {
  const rest = ["--thread-pool-size=2", `--rlimit-nofile=${OPEN_FILE_LIMIT}`];
  if (form === "-o") {
    // libvirt doubles a comma in the path (virQEMUBuildBufferEscapeComma).
    const source = share.replaceAll(",", ",,");
    return ["-o", `source=${source},cache=none,sandbox=namespace,xattr`, ...rest];
  }
  return ["--shared-dir", share, "--cache", "never", "--sandbox", "namespace", "--xattr", ...rest];
}

const unavailable = libvirtUnavailable();

for (const form of ["separate-options", "-o"] as const) {
  Deno.test({
    name: `libvirt 11 runs vhostd as a domain's virtiofsd, ${form} form${
      unavailable ? ` (skipped: ${unavailable})` : ""
    }`,
    ignore: unavailable !== undefined,
  }, () => runDomain(form));
}

async function runDomain(form: CommandLineForm): Promise<void> {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-libvirt-" });
  // A comma, which the -o form has to escape.
  const share = `${dir}/share,1`;
  const binary = `${dir}/vhostd-virtiofsd`;
  const fifo = `${dir}/vhostd-exit`;
  await Deno.mkdir(share);
  await Deno.writeTextFile(`${share}/from-host.txt`, HOST_TEXT);
  await writeTestInitrd(`${dir}/initrd`, GUEST_SCRIPT);
  await Deno.writeTextFile(binary, wrapperScript(dir, form), { mode: 0o755 });
  const mkfifo = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(mkfifo.success, "mkfifo");
  await Deno.writeTextFile(`${dir}/domain.xml`, domainXml(dir, binary, share));

  const libvirtd = await PrivateLibvirtd.start(`${dir}/libvirt`);
  let started = false;
  let libvirtdExit: LibvirtdExit;
  const vhostdExit = new ExitStatusReader(fifo);
  try {
    await libvirtd.virshOk("define", `${dir}/domain.xml`);
    const start = await libvirtd.virsh("start", DOMAIN);
    const vhostdLog = () => readOr(libvirtd.virtiofsdLog(DOMAIN), "(no virtiofsd log)");
    assert.equal(
      start.code,
      0,
      `virsh start: ${start.stderr}\nvhostd's log:\n${vhostdLog()}\n${libvirtd.diagnostics()}`,
    );
    started = true;
    const exitStatus = await vhostdExit.status();
    started = false;
    const state = (await libvirtd.virshOk("domstate", DOMAIN, "--reason")).trim();
    const log = vhostdLog();
    const guest = consoleOutcome(readOr(`${dir}/console.log`, ""));

    assert.equal(guest.exitCode, 0, `guest console:\n${readOr(`${dir}/console.log`, "")}`);
    assert.ok(guest.output.includes(HOST_TEXT), guest.output);
    assert.equal(await Deno.readTextFile(`${share}/from-guest.txt`), `${GUEST_TEXT}\n`);
    assert.equal(state, "shut off (shutdown)");
    assert.equal(exitStatus, "0", `vhostd's log:\n${log}`);

    // libvirt probed the binary and chose the command line form from its features.
    assert.equal(readOr(`${dir}/capabilities-probed`, "missing"), "", "--print-capabilities probe");
    const argv = (await Deno.readTextFile(`${dir}/argv`)).trimEnd().split("\n");
    assert.match(argv[0], /^--fd=\d+$/);
    assert.deepEqual(argv.slice(1), expectedArgv(form, share));
    // Each option honoured, or said not to be.
    assert.match(log, /warn: --thread-pool-size 2 is ignored/);
    assert.match(log, new RegExp(`open file limit set to ${OPEN_FILE_LIMIT}`));
    assert.match(log, /sandbox: namespace/);
    assert.match(log, /cache never/);
    assert.match(log, /front-end connected/);
    assert.match(log, /shutting down \(signal\)/);
    assert.doesNotMatch(log, /\] error: /);
  } finally {
    if (started) await libvirtd.virsh("destroy", DOMAIN);
    await vhostdExit.release();
    await libvirtd.virsh("undefine", DOMAIN);
    libvirtdExit = await libvirtd.stop();
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(libvirtdExit.code, 0, `libvirtd's exit status; its stderr:\n${libvirtdExit.stderr}`);
}
