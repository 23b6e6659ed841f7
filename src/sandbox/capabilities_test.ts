import assert from "node:assert/strict";
import {
  capabilityMask,
  keptCapabilities,
  parseStatusCapabilities,
  setprivCapabilityArgs,
  threadCapabilities,
} from "./capabilities.ts";

Deno.test("capabilities: virtiofsd's set is the mask /proc prints for it", () => {
  // CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP = bits 0 1 3 4 6 7 27 31.
  assert.equal(capabilityMask(keptCapabilities()), 0x8800_00dbn);
  assert.equal(capabilityMask(keptCapabilities({ fileHandles: true })), 0x8800_00dfn);
  assert.equal(capabilityMask(keptCapabilities({ chroot: true })), 0x8804_00dbn);
});

Deno.test("capabilities: setpriv cuts the inheritable and the bounding set alike", () => {
  assert.deepEqual(setprivCapabilityArgs(["chown", "mknod"]), [
    "--inh-caps=-all,+chown,+mknod",
    "--bounding-set=-all,+chown,+mknod",
  ]);
});

Deno.test("capabilities: a /proc status file is parsed, a missing line is an error", () => {
  const status = "Name:\tdeno\nCapInh:\t0000000000000000\nCapPrm:\t00000000880000db\n" +
    "CapEff:\t00000000880000db\nCapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\nSeccomp:\t2\n";
  assert.deepEqual(parseStatusCapabilities(7, status), {
    tid: 7,
    effective: 0x8800_00dbn,
    permitted: 0x8800_00dbn,
    bounding: 0x1ff_ffff_ffffn,
    seccomp: 2,
    noNewPrivs: true,
  });
  assert.throws(() => parseStatusCapabilities(7, "Name:\tdeno\n"), /no CapEff line/);
});

Deno.test("capabilities: every thread of this process is read", () => {
  const threads = threadCapabilities("self");
  assert.ok(threads.length > 1, "a Deno process has runtime threads");
  assert.ok(threads.some((t) => t.tid === Deno.pid));
});
