/**
 * `vhostd vsock` and the state tools, as separate processes: `state save`
 * writes the configuration state (guest CID, features), `state inspect`
 * shows it, `state load` accepts it on a back-end with the same CID and the
 * back-end refuses it, keeping what it had, when the CID differs.
 */

import assert from "node:assert/strict";
import { runVhostdCli } from "./support/state_tools.ts";
import { withVhostd } from "./support/vhostd_process.ts";

function vsockArgs(dir: string, cid: number): string[] {
  return ["--guest-cid", String(cid), "--uds-path", `${dir}/host-${cid}.sock`];
}

Deno.test("vsock state: save, inspect, load on the same CID; refused on another CID", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-vsock-state-" });
  try {
    const file = `${dir}/vsock.state`;
    await withVhostd({ command: "vsock", args: vsockArgs(dir, 7) }, async (vhostd) => {
      const save = await runVhostdCli([
        "state",
        "save",
        "--socket-path",
        vhostd.socketPath,
        "-o",
        file,
      ]);
      assert.equal(save.code, 0, save.stderr);
      const load = await runVhostdCli([
        "state",
        "load",
        "--socket-path",
        vhostd.socketPath,
        "-i",
        file,
      ]);
      assert.equal(load.code, 0, load.stderr);
    });
    const inspect = await runVhostdCli(["state", "inspect", file]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.match(inspect.stdout, /vsock: guest CID 7/);
    assert.match(inspect.stdout, /connections are not part of the state/);

    await withVhostd({ command: "vsock", args: vsockArgs(dir, 8) }, async (vhostd) => {
      const load = await runVhostdCli([
        "state",
        "load",
        "--socket-path",
        vhostd.socketPath,
        "-i",
        file,
      ]);
      assert.notEqual(load.code, 0, "a state saved for CID 7 must not load into CID 8");
      assert.match(vhostd.log(), /configuration differs: guestCid is 7 in the state, 8 here/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
