import assert from "node:assert/strict";
import { UsageError } from "../../cli/usage_error.ts";
import { openFileLimit, setOpenFileLimit } from "../../../ffi/mod.ts";
import { parseFsArgs } from "./fs_command.ts";
import {
  applyOpenFileLimit,
  splitOptionList,
  translateVirtiofsdArgs,
  type VirtiofsdTranslation,
} from "./virtiofsd_compat.ts";

const VHOSTD_OPTIONS = {
  "shared-dir": { type: "string" },
  tag: { type: "string" },
  xattr: { type: "boolean" },
  fd: { type: "string" },
} as const;

function translate(args: string[]): VirtiofsdTranslation {
  return translateVirtiofsdArgs(args, VHOSTD_OPTIONS);
}

function refused(args: string[], message: RegExp): void {
  assert.throws(() => translate(args), (e) => e instanceof UsageError && message.test(e.message));
}

Deno.test("libvirt 11's command line (separate options) becomes vhostd's, with warnings", () => {
  // qemuVirtioFSBuildCommandLine with every <binary> knob set, in its order.
  const t = translate([
    "--fd=22",
    "--shared-dir",
    "/srv/share",
    "--cache",
    "always",
    "--sandbox",
    "chroot",
    "--xattr",
    "--thread-pool-size=4",
    "--rlimit-nofile=8192",
    "--log-level",
    "debug",
  ]);
  assert.deepEqual(t.args, [
    "--fd=22",
    "--shared-dir",
    "/srv/share",
    "--cache",
    "always",
    "--sandbox",
    "chroot",
    "--xattr",
    "--log-level",
    "debug",
  ]);
  assert.equal(t.openFileLimit, 8192);
  assert.equal(t.warnings.length, 1);
  assert.match(t.warnings[0], /--thread-pool-size 4 is ignored: .*Worker/);
});

Deno.test("the C virtiofsd's -o form (libvirt without separate-options) becomes vhostd's", () => {
  const t = translate([
    "--fd=5",
    "-o",
    "source=/srv/a,,b,cache=none,sandbox=namespace,xattr,no_flock,posix_lock",
    "--thread-pool-size=0",
    "-d",
  ]);
  assert.deepEqual(t.args, [
    "--fd=5",
    "--shared-dir",
    "/srv/a,b",
    "--cache",
    "never",
    "--sandbox",
    "namespace",
    "--xattr",
    "--log-level",
    "debug",
  ]);
  // posix_lock is not honoured; no_flock and a pool of 0 are what vhostd does anyway.
  assert.equal(t.warnings.length, 1);
  assert.match(t.warnings[0], /-o posix_lock is not honoured: .*stay inside the guest/);
  assert.equal(t.openFileLimit, undefined);
  assert.deepEqual(translate(["-osource=/x,log_level=err,no_xattr"]).args, [
    "--shared-dir",
    "/x",
    "--log-level",
    "error",
  ]);
});

Deno.test("virtiofsd-only options: renamed, warned about, or refused", () => {
  const t = translate(["--readonly", "--xattrmap=:map::user.v.:", "--announce-submounts", "-f"]);
  assert.deepEqual(t.args, ["--read-only", "--xattr-mapping", ":map::user.v.:"]);
  assert.equal(t.warnings.length, 1);
  assert.match(t.warnings[0], /--announce-submounts is not honoured: .*one st_dev/);
  assert.deepEqual(translate(["--log-level=trace"]).args, ["--log-level", "debug"]);
  const off = translate(["--log-level", "off"]);
  assert.deepEqual(off.args, ["--log-level", "error"]);
  assert.match(off.warnings[0], /still logs errors/);
  assert.match(translate(["--syslog"]).warnings[0], /stderr/);
  assert.equal(translate(["--rlimit-nofile", "0"]).openFileLimit, undefined);

  refused(
    ["--uid-map=:0:1000:1:"],
    /^--uid-map: vhostd maps no user or group ids.*qemu:\/\/\/system/,
  );
  refused(["--gid-map", ":0:1000:1:"], /^--gid-map: /);
  refused(["--translate-uid", "map:0:1000:1"], /^--translate-uid: /);
  refused(["--thread-pool-size=many"], /--thread-pool-size must be a whole number/);
  refused(["--rlimit-nofile"], /--rlimit-nofile needs a value/);
  refused(["--announce-submounts=yes"], /--announce-submounts takes no value/);
  refused(["-o"], /-o needs a list/);
  refused(["-o", "source=/x,cache=sometimes"], /-o cache must be none, auto or always/);
  refused(["-o", "source="], /-o source needs a value/);
  refused(["-o", "writeback"], /-o: unknown option "writeback"/);
  refused(["-o", "timeout=5"], /-o: unknown option "timeout"/);
  // Names of Object.prototype's members are options like any other unknown one.
  refused(["-o", "toString"], /-o: unknown option "toString"/);
  refused(["-o", "constructor=1"], /-o: unknown option "constructor"/);
  refused(["-o", "source=/x,cache=constructor"], /-o cache must be/);
  assert.deepEqual(translate(["--constructor", "--toString=1"]).args, [
    "--constructor",
    "--toString=1",
  ]);
});

Deno.test("the values of vhostd's own options and everything after -- are left alone", () => {
  assert.deepEqual(translate(["--tag", "-o", "--shared-dir=/s"]).args, [
    "--tag",
    "-o",
    "--shared-dir=/s",
  ]);
  assert.deepEqual(translate(["--xattr", "-d"]).args, ["--xattr", "--log-level", "debug"]);
  assert.deepEqual(translate(["--", "-o", "-d"]).args, ["--", "-o", "-d"]);
  assert.deepEqual(translate(["--bogus", "x"]).args, ["--bogus", "x"]);
});

Deno.test("splitOptionList reads ,, as a comma inside a value", () => {
  assert.deepEqual(splitOptionList("a,b"), ["a", "b"]);
  assert.deepEqual(splitOptionList("source=/a,,b,,,xattr"), ["source=/a,b,", "xattr"]);
  assert.deepEqual(splitOptionList(""), [""]);
});

Deno.test("parseFsArgs takes libvirt's command line and keeps the translated form", () => {
  const opts = parseFsArgs([
    "--fd=3",
    "-o",
    "source=/srv/share,cache=none,sandbox=none,xattr",
    "--thread-pool-size=2",
  ]);
  assert.equal(opts.sharedDir, "/srv/share");
  assert.equal(opts.listenFd, 3);
  assert.equal(opts.cache, "never");
  assert.equal(opts.sandbox, "none");
  assert.equal(opts.xattr.xattr, true);
  assert.equal(opts.virtiofsdWarnings.length, 1);
  // The sandboxed daemon parses these again: nothing left to translate, nothing to warn about.
  assert.deepEqual(parseFsArgs(opts.vhostdArgs).virtiofsdWarnings, []);
  assert.equal(parseFsArgs(["--shared-dir", "/s", "--cache", "metadata"]).cache, "metadata");
  assert.throws(
    () => parseFsArgs(["--shared-dir", "/s", "--cache", "sometimes"]),
    /--cache must be never, metadata, auto or always/,
  );
});

Deno.test("applyOpenFileLimit sets the soft limit too, and a refusal is a UsageError", () => {
  const before = openFileLimit();
  // The hard limit stays: lowering it would be for good without CAP_SYS_RESOURCE.
  try {
    setOpenFileLimit({ soft: before.hard - 1n, hard: before.hard });
    applyOpenFileLimit(Number(before.hard));
    assert.deepEqual(openFileLimit(), { soft: before.hard, hard: before.hard });
    // Above fs.nr_open (at most 2^30) the kernel says EPERM even to root.
    assert.throws(
      () => applyOpenFileLimit(2 ** 31 - 1),
      (e) => e instanceof UsageError && /--rlimit-nofile 2147483647: EPERM/.test(e.message),
    );
  } finally {
    setOpenFileLimit(before);
  }
});
