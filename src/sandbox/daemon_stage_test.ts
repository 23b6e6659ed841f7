import assert from "node:assert/strict";

const CHILD_SCRIPT = (share: string) => `
import { enterChroot } from ${JSON.stringify(new URL("./daemon_stage.ts", import.meta.url).href)};
import { threadCapabilities, chmodProcFd, O_CLOEXEC, O_PATH, O_RDONLY, openFile, readFd, reopenFd } from ${
  JSON.stringify(new URL("../../ffi/mod.ts", import.meta.url).href)
};
const pathFd = openFile(${JSON.stringify(`${share}/file`)}, O_PATH | O_CLOEXEC);
enterChroot(${JSON.stringify(share)});
const result = {};
result.root = [...Deno.readDirSync("/")].map((e) => e.name).sort();
// The passthrough's reopen goes through the fd of /proc/self/fd opened before the chroot.
const fd = reopenFd(pathFd, O_RDONLY | O_CLOEXEC);
const buf = new Uint8Array(16);
result.read = new TextDecoder().decode(buf.subarray(0, readFd(fd, buf)));
chmodProcFd(pathFd, 0o600);
result.mode = (Deno.statSync("/file").mode & 0o777).toString(8);
// /proc is not in the chroot: only the fd opened before reaches it.
try {
  Deno.readTextFileSync("/proc/self/status");
  result.proc = "reachable";
} catch (e) {
  result.proc = e.name;
}
result.chrootCapability = String((threadCapabilities().effective >> 18n) & 1n);
console.log(JSON.stringify(result));
`;

Deno.test("enterChroot: the share is the root, fds still reopen through /proc/self/fd, the thread drops CAP_SYS_CHROOT", async () => {
  const share = Deno.makeTempDirSync({ prefix: "vhostd-chroot-" });
  try {
    Deno.writeTextFileSync(`${share}/file`, "inside");
    Deno.mkdirSync(`${share}/dir`);
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", CHILD_SCRIPT(share)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(child.success, new TextDecoder().decode(child.stderr));
    const result = JSON.parse(new TextDecoder().decode(child.stdout));
    assert.deepEqual(result.root, ["dir", "file"]);
    assert.equal(result.read, "inside");
    assert.equal(result.mode, "600");
    assert.equal(result.proc, "NotFound");
    assert.equal(result.chrootCapability, "0");
  } finally {
    Deno.removeSync(share, { recursive: true });
  }
});
