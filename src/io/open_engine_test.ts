import assert from "node:assert/strict";
import {
  defaultEngineKind,
  DISABLE_IO_URING_ENV,
  openFileIoEngine,
  probeIoUring,
} from "./open_engine.ts";
import { SyncFileIoEngine } from "./sync_engine.ts";
import { UringFileIoEngine } from "./uring_engine.ts";

// The whole suite may be run with the variable set, to exercise the fallback
// everywhere; then the io_uring side of these tests has nothing to test.
const disabled = Deno.env.get(DISABLE_IO_URING_ENV) === "1";

Deno.test("probeIoUring is cached and agrees with defaultEngineKind", () => {
  const reason = probeIoUring();
  assert.equal(probeIoUring(), reason);
  assert.equal(defaultEngineKind(), reason === undefined ? "io_uring" : "sync");
  if (disabled) assert.match(reason!, /VHOSTD_DISABLE_IO_URING=1/);
  // This machine runs kernel.io_uring_disabled=0 on Linux 6.18.
  else assert.equal(reason, undefined);
});

Deno.test({
  name: "openFileIoEngine opens either engine, with the ring size asked for",
  ignore: disabled,
}, () => {
  const uring = openFileIoEngine("io_uring", { entries: 16 });
  assert.ok(uring instanceof UringFileIoEngine);
  assert.equal(uring.kind, "io_uring");
  assert.equal(uring.entries, 16);
  uring.close();
  const sync = openFileIoEngine("sync");
  assert.ok(sync instanceof SyncFileIoEngine);
  assert.equal(sync.completionFd, undefined);
  sync.close();
  assert.throws(
    () => openFileIoEngine("aio" as "sync"),
    /unknown file I\/O engine "aio"/,
  );
  assert.throws(() => openFileIoEngine("io_uring", { entries: 0 }), /could not start/);
});

Deno.test("VHOSTD_DISABLE_IO_URING=1 makes the probe fail and selects the sync fallback", async () => {
  const module = new URL("./open_engine.ts", import.meta.url).href;
  const script = `
    import { defaultEngineKind, openFileIoEngine, probeIoUring } from ${JSON.stringify(module)};
    import { IovecArray, pointerValue } from ${
    JSON.stringify(new URL("../../ffi/mod.ts", import.meta.url).href)
  };
    let refusal = "";
    try { openFileIoEngine("io_uring"); } catch (e) { refusal = e.message; }
    const engine = openFileIoEngine(defaultEngineKind());
    const buf = new Uint8Array(new ArrayBuffer(4));
    const iov = new IovecArray(1);
    iov.set(0, pointerValue(buf), 4);
    let result;
    engine.readv(999999, iov, 1, 0, (r) => result = r);
    console.log(JSON.stringify({
      reason: probeIoUring(), kind: defaultEngineKind(), engine: engine.kind, refusal, result,
    }));
  `;
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", script],
    env: { [DISABLE_IO_URING_ENV]: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  const out = JSON.parse(new TextDecoder().decode(stdout));
  assert.match(out.reason, /VHOSTD_DISABLE_IO_URING=1.*kernel\.io_uring_disabled=2/);
  assert.equal(out.kind, "sync");
  assert.equal(out.engine, "sync");
  assert.match(out.refusal, /io_uring .*unavailable: disabled by VHOSTD_DISABLE_IO_URING=1/);
  assert.equal(out.result, -9); // EBADF, reported before readv returned
});
