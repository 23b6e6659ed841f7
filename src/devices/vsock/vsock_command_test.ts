import assert from "node:assert/strict";
import { createMainSocket, parseVsockArgs, vsockCapabilities } from "./vsock_command.ts";
import { UsageError } from "../../cli/usage_error.ts";
import { closeQuietly } from "../../../ffi/mod.ts";

Deno.test("vsock options: required --guest-cid and --uds-path, checked ranges", () => {
  const args = parseVsockArgs(["--guest-cid", "3", "--uds-path", "/tmp/v.sock"]);
  assert.equal(args.guestCid, 3);
  assert.equal(args.udsPath, "/tmp/v.sock");
  assert.equal(args.queueSize, 256);
  assert.equal(args.socketPath, "vhostd-vsock.sock");
  const usage = (argv: string[], message: RegExp) =>
    assert.throws(
      () => parseVsockArgs(argv),
      (e) => e instanceof UsageError && message.test(e.message),
    );
  usage(["--uds-path", "/tmp/v"], /--guest-cid is required/);
  usage(["--guest-cid", "3"], /--uds-path is required/);
  usage(["--guest-cid", "2", "--uds-path", "/tmp/v"], /--guest-cid must be a whole number from 3/);
  usage(["--guest-cid", "4294967295", "--uds-path", "/tmp/v"], /from 3 to 4294967294/);
  usage(["--guest-cid", "3", "--uds-path", "/tmp/v", "--queue-size", "100"], /power of two/);
  usage(["--guest-cid", "3", "--uds-path", "/tmp/v", "--bogus"], /bogus/);
  // --help and --print-capabilities need no device options.
  assert.equal(parseVsockArgs(["--print-capabilities"]).printCapabilities, true);
});

Deno.test("vsock --print-capabilities: type vsock", () => {
  assert.equal(vsockCapabilities().type, "vsock");
});

Deno.test("main socket: created, a stale socket replaced, anything else refused", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = `${dir}/v.sock`;
    const first = createMainSocket(path);
    closeQuietly(first); // leaves the socket file behind, as a crash would
    const second = createMainSocket(path);
    closeQuietly(second);
    Deno.writeTextFileSync(`${dir}/file`, "x");
    assert.throws(() => createMainSocket(`${dir}/file`), /exists and is not a socket/);
    assert.throws(() => createMainSocket(`${dir}/missing/v.sock`), UsageError);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("vhostd vsock --help and --print-capabilities run from the device list", async () => {
  const run = async (args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", new URL("../../../main.ts", import.meta.url).pathname, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
  };
  const help = await run(["vsock", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /CONNECT P/);
  const caps = await run(["vsock", "--print-capabilities"]);
  assert.equal(caps.code, 0);
  assert.deepEqual(JSON.parse(caps.stdout), vsockCapabilities());
  assert.notEqual((await run(["vsock", "--guest-cid", "1", "--uds-path", "/tmp/x"])).code, 0);
});
