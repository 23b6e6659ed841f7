import assert from "node:assert/strict";
import { DEVICE_MODULES, deviceModule } from "./device_list.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function vhostd(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("device list: kinds are unique, fit a state header, and are found by kind", () => {
  const kinds = DEVICE_MODULES.map((m) => m.kind);
  assert.equal(new Set(kinds).size, kinds.length);
  for (const m of DEVICE_MODULES) {
    // The state header keeps the kind in 16 NUL-padded ASCII bytes.
    assert.match(m.kind, /^[a-z0-9-]{1,15}$/);
    assert.ok(m.summary.length > 0 && !m.summary.includes("\n"), m.kind);
    assert.equal(deviceModule(m.kind), m);
    assert.equal(typeof m.createQueueHandler, "function");
  }
  assert.equal(deviceModule("state"), undefined);
  assert.equal(deviceModule("nonsense"), undefined);
});

Deno.test("every listed device has vhostd <kind> --help, --print-capabilities and a help line", async () => {
  const main = await vhostd("--help");
  assert.equal(main.code, 0);
  for (const m of DEVICE_MODULES) {
    const summary = m.summary.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    assert.match(main.stdout, new RegExp(`vhostd ${m.kind} \\[OPTIONS\\]\\s+${summary}`));
    const help = await vhostd(m.kind, "--help");
    assert.equal(help.code, 0, `${m.kind} --help: ${help.stderr}`);
    assert.match(help.stdout, new RegExp(`^Usage: vhostd ${m.kind}`), m.kind);
    assert.match(help.stdout, /--print-capabilities/, m.kind);
    // Front-ends probe with this flag alone (vhost-user.rst, back-end program conventions).
    const caps = await vhostd(m.kind, "--print-capabilities");
    assert.equal(caps.code, 0, `${m.kind} --print-capabilities: ${caps.stderr}`);
    const parsed = JSON.parse(caps.stdout);
    assert.equal(typeof parsed.type, "string", m.kind);
    assert.ok(Array.isArray(parsed.features), m.kind);
    const bad = await vhostd(m.kind, "--no-such-option");
    assert.equal(bad.code, 2, `${m.kind} with an unknown option`);
    assert.match(bad.stderr, /^vhostd: /);
  }
  const unknown = await vhostd("nonsense");
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command "nonsense"/);
});
