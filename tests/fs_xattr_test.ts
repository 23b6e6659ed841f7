/**
 * Extended attributes over a real socket: a `vhostd fs` process driven with
 * GETXATTR, LISTXATTR, SETXATTR and REMOVEXATTR requests. Off by default
 * (ENOSYS); with `--xattr` set, get with size probing, ERANGE, ENODATA,
 * list, remove, a link's own attributes, E2BIG past XATTR_SIZE_MAX, EROFS on
 * a read-only share; with `--posix-acl` the INIT negotiation, an ACL set in
 * SETXATTR_EXT layout, and ACL_KILL_SGID; with `--xattr-mapping` the names
 * the host stores; a POSIX ACL session moving with DEVICE_STATE (refused by
 * a destination without `--posix-acl`); and the CLI's one-line error for a
 * bad mapping.
 */

import assert from "node:assert/strict";
import {
  E2BIG,
  EEXIST,
  ENODATA,
  ENOSYS,
  EPROTO,
  ERANGE,
  EROFS,
  getxattr,
  listxattr,
  setxattr,
  splitXattrList,
  XATTR_CREATE,
  XATTR_SIZE_MAX,
} from "../ffi/mod.ts";
import {
  decodeGetxattrOut,
  encodeRequest,
  FUSE_OUT_HEADER,
  FuseInitFlag,
  FuseOpcode,
  FuseSetxattrFlag,
  splitReply,
} from "../src/devices/fs/fuse/mod.ts";
import { BackendRefused, type FsDriver, VhostUserClient } from "../src/frontend/mod.ts";
import {
  FS_PROTOCOL_FEATURES,
  FsFixture,
  makeTestDirs,
  withVhostdFs,
} from "./support/fs_fixture.ts";
import { extendedAcl } from "./support/posix_acl.ts";
import {
  loadFromBytes,
  negotiateForState,
  runVhostdCli,
  saveToBytes,
} from "./support/state_tools.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const ROOT = 1n;
const enc = new TextEncoder();
const dec = new TextDecoder();
const ACL_INIT = FuseInitFlag.POSIX_ACL | FuseInitFlag.DONT_MASK | FuseInitFlag.SETXATTR_EXT;
const LINUX_INIT = FuseInitFlag.ASYNC_READ | FuseInitFlag.DO_READDIRPLUS | FuseInitFlag.INIT_EXT;

/** An error reply's errno, or 0 with the payload. */
interface Answer {
  error: number;
  payload: Uint8Array;
}

function getx(d: FsDriver, nodeid: bigint, name: string, size: number): Answer {
  const room = size === 0 ? 8 : size;
  const reply = d.request(FuseOpcode.GETXATTR, { size, name: enc.encode(name) }, {
    nodeid,
    replySize: FUSE_OUT_HEADER.size + room,
  });
  return { error: reply.error, payload: reply.payload };
}

function listx(d: FsDriver, nodeid: bigint, size: number): Answer {
  const reply = d.request(FuseOpcode.LISTXATTR, { size }, {
    nodeid,
    replySize: FUSE_OUT_HEADER.size + (size === 0 ? 8 : size),
  });
  return { error: reply.error, payload: reply.payload };
}

/** SETXATTR in the layout the session negotiated (`ext`: the 16-byte fuse_setxattr_in). */
function setx(
  d: FsDriver,
  nodeid: bigint,
  name: string,
  value: Uint8Array,
  options: { flags?: number; ext?: boolean; setxattrFlags?: number } = {},
): number {
  const request = encodeRequest(FuseOpcode.SETXATTR, {
    unique: d.nextUnique(),
    nodeid,
  }, {
    flags: options.flags ?? 0,
    setxattrFlags: options.setxattrFlags,
    name: enc.encode(name),
    value,
  }, { setxattrExt: options.ext });
  const raw = d.send(request, FUSE_OUT_HEADER.size);
  const { error } = splitReply(raw.bytes).header;
  return error === 0 ? 0 : -error;
}

function removex(d: FsDriver, nodeid: bigint, name: string): number {
  return d.request(FuseOpcode.REMOVEXATTR, { name: enc.encode(name) }, { nodeid }).error;
}

function sizeAnswer(answer: Answer): number {
  assert.equal(answer.error, 0, `errno ${answer.error}`);
  return decodeGetxattrOut(answer.payload).size;
}

function hostNames(path: string): string[] {
  const list = new Uint8Array(4096);
  const length = listxattr(path, list, "nofollow");
  return splitXattrList(list.subarray(0, length)).map((n) => dec.decode(n)).sort();
}

Deno.test("fs xattr: without --xattr every xattr request is ENOSYS", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/f`, "");
    using fx = FsFixture.open(vhostd.socketPath);
    const node = fx.driver.lookup(ROOT, "f").nodeid;
    assert.equal(getx(fx.driver, node, "user.a", 0).error, ENOSYS);
    assert.equal(listx(fx.driver, node, 0).error, ENOSYS);
    assert.equal(setx(fx.driver, node, "user.a", enc.encode("v")), ENOSYS);
    assert.equal(removex(fx.driver, node, "user.a"), ENOSYS);
    assert.deepEqual(hostNames(`${dirs.share}/f`), []);
  });
});

Deno.test("fs xattr: set, probe, get, ERANGE, ENODATA, list, remove; the host sees each change", async () => {
  await withVhostdFs(["--xattr"], (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/f`, "");
    setxattr(`${dirs.share}/f`, "user.from-host", enc.encode("host"), 0);
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    const node = d.lookup(ROOT, "f").nodeid;
    assert.equal(dec.decode(getx(d, node, "user.from-host", 16).payload), "host");
    assert.equal(setx(d, node, "user.colour", enc.encode("turquoise")), 0);
    assert.equal(getxattr(`${dirs.share}/f`, "user.colour", null), 9);
    assert.equal(sizeAnswer(getx(d, node, "user.colour", 0)), 9);
    const value = getx(d, node, "user.colour", 9);
    assert.equal(value.error, 0);
    assert.equal(dec.decode(value.payload), "turquoise");
    assert.equal(getx(d, node, "user.colour", 8).error, ERANGE);
    assert.equal(getx(d, node, "user.missing", 64).error, ENODATA);
    assert.equal(setx(d, node, "user.colour", enc.encode("x"), { flags: XATTR_CREATE }), EEXIST);
    const listSize = sizeAnswer(listx(d, node, 0));
    assert.equal(listSize, "user.colour\0user.from-host\0".length);
    const list = listx(d, node, listSize);
    assert.equal(list.error, 0);
    assert.deepEqual(splitXattrList(list.payload).map((n) => dec.decode(n)).sort(), [
      "user.colour",
      "user.from-host",
    ]);
    assert.equal(listx(d, node, listSize - 1).error, ERANGE);
    assert.equal(removex(d, node, "user.colour"), 0);
    assert.equal(removex(d, node, "user.colour"), ENODATA);
    assert.deepEqual(hostNames(`${dirs.share}/f`), ["user.from-host"]);
    // A value past XATTR_SIZE_MAX is E2BIG, not a protocol error; the session goes on.
    assert.equal(setx(d, node, "user.big", new Uint8Array(XATTR_SIZE_MAX + 1)), E2BIG);
    assert.equal(sizeAnswer(getx(d, node, "user.from-host", 0)), 4);
  });
});

Deno.test("fs xattr: a symbolic link's own attributes, never its target's", {
  ignore: Deno.uid() !== 0, // trusted.* (the namespace links accept) needs CAP_SYS_ADMIN
}, async () => {
  // The sandbox drops CAP_SYS_ADMIN (as virtiofsd's does): trusted.* needs the daemon unconfined.
  await withVhostdFs(["--xattr", "--sandbox", "none"], (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/target`, "");
    Deno.symlinkSync("target", `${dirs.share}/link`);
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    const link = d.lookup(ROOT, "link").nodeid;
    assert.equal(setx(d, link, "trusted.mark", enc.encode("link")), 0);
    assert.equal(dec.decode(getx(d, link, "trusted.mark", 16).payload), "link");
    assert.deepEqual(hostNames(`${dirs.share}/link`), ["trusted.mark"]);
    assert.deepEqual(hostNames(`${dirs.share}/target`), []);
  });
});

Deno.test("fs xattr: a read-only share reads attributes and refuses changes with EROFS", async () => {
  const dirs = await makeTestDirs();
  Deno.writeTextFileSync(`${dirs.share}/f`, "");
  setxattr(`${dirs.share}/f`, "user.kept", enc.encode("1"), 0);
  await withVhostdFs(["--xattr", "--read-only"], (vhostd) => {
    using fx = FsFixture.open(vhostd.socketPath);
    const node = fx.driver.lookup(ROOT, "f").nodeid;
    assert.equal(dec.decode(getx(fx.driver, node, "user.kept", 8).payload), "1");
    assert.equal(setx(fx.driver, node, "user.new", enc.encode("v")), EROFS);
    assert.equal(removex(fx.driver, node, "user.kept"), EROFS);
    assert.deepEqual(hostNames(`${dirs.share}/f`), ["user.kept"]);
  }, dirs).finally(() => Deno.remove(dirs.root, { recursive: true }));
});

Deno.test("fs xattr: --posix-acl negotiates, takes SETXATTR_EXT, clears setgid on ACL_KILL_SGID", async () => {
  await withVhostdFs(["--posix-acl"], (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/f`, "");
    Deno.chmodSync(`${dirs.share}/f`, 0o2660);
    {
      using refused = FsFixture.open(vhostd.socketPath, { init: false });
      assert.throws(() => refused.driver.init({ flags: LINUX_INIT }), (e: unknown) => {
        assert.equal((e as { errno?: number }).errno, EPROTO);
        return true;
      });
    }
    using fx = FsFixture.open(vhostd.socketPath, { init: false });
    const d = fx.driver;
    const init = d.init({ flags: LINUX_INIT | ACL_INIT });
    assert.equal(init.flags & ACL_INIT, ACL_INIT, "POSIX_ACL, DONT_MASK and SETXATTR_EXT");
    const node = d.lookup(ROOT, "f").nodeid;
    const acl = extendedAcl(1234);
    const flags = { ext: true, setxattrFlags: FuseSetxattrFlag.ACL_KILL_SGID };
    assert.equal(setx(d, node, "system.posix_acl_access", acl, flags), 0);
    assert.deepEqual(getx(d, node, "system.posix_acl_access", 256).payload, acl);
    assert.equal(Deno.statSync(`${dirs.share}/f`).mode! & 0o7777, 0o640, "ACL applied, no setgid");
    assert.equal(setx(d, node, "user.after", enc.encode("v"), { ext: true }), 0);
    assert.deepEqual(hostNames(`${dirs.share}/f`), ["system.posix_acl_access", "user.after"]);
  });
});

Deno.test("fs xattr: a POSIX ACL session moves with DEVICE_STATE; SETXATTR_EXT goes on", async () => {
  await withVhostdFs(["--posix-acl"], async (source, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/f`, "");
    let state: Uint8Array;
    let node: bigint;
    {
      using fx = FsFixture.open(source.socketPath, { init: false });
      fx.driver.init({ flags: LINUX_INIT | ACL_INIT });
      node = fx.driver.lookup(ROOT, "f").nodeid;
      fx.driver.stopAll();
      state = saveToBytes(fx.client);
    }
    /** Loads the state into a fresh `vhostd fs` started with `args`, then runs `use`; false when refused. */
    const loadInto = (args: string[], use: (d: FsDriver) => void) =>
      withVhostd({ command: "fs", args: ["--shared-dir", dirs.share, ...args] }, (target) => {
        const client = VhostUserClient.connect(target.socketPath);
        try {
          negotiateForState(client, FS_PROTOCOL_FEATURES);
          loadFromBytes(client, state);
        } catch (e) {
          client.close();
          if (e instanceof BackendRefused) return false;
          throw e;
        }
        using fx = FsFixture.open(target.socketPath, { client, init: false });
        use(fx.driver);
        return true;
      });
    assert.equal(await loadInto(["--xattr"], () => {}), false, "no --posix-acl: refused");
    const loaded = await loadInto(["--posix-acl"], (d) => {
      // No INIT: the restored session decodes SETXATTR in its extended layout.
      assert.equal(setx(d, node, "system.posix_acl_access", extendedAcl(1234), { ext: true }), 0);
      assert.deepEqual(getx(d, node, "system.posix_acl_access", 64).payload, extendedAcl(1234));
    });
    assert.equal(loaded, true);
  });
});

Deno.test("fs xattr: --xattr-mapping stores renamed names on the host", async () => {
  await withVhostdFs(["--xattr-mapping", ":map::user.virtiofs.:"], (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/f`, "");
    setxattr(`${dirs.share}/f`, "user.host-only", enc.encode("h"), 0);
    using fx = FsFixture.open(vhostd.socketPath);
    const node = fx.driver.lookup(ROOT, "f").nodeid;
    assert.equal(setx(fx.driver, node, "user.guest", enc.encode("g")), 0);
    assert.deepEqual(hostNames(`${dirs.share}/f`), ["user.host-only", "user.virtiofs.user.guest"]);
    const list = listx(fx.driver, node, 256);
    assert.deepEqual(splitXattrList(list.payload).map((n) => dec.decode(n)), ["user.guest"]);
  });
});

Deno.test("fs xattr CLI: a bad --xattr-mapping is one line naming the rule, exit code 2", async () => {
  const dirs = await makeTestDirs();
  try {
    const r = await runVhostdCli([
      "fs",
      "--shared-dir",
      dirs.share,
      "--socket-path",
      `${dirs.root}/never.sock`,
      "--xattr-mapping",
      ":ok:all::: :nope:all:::",
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /^vhostd: --xattr-mapping: rule 2: unknown type "nope"/);
    const help = await runVhostdCli(["fs", "--help"]);
    for (const option of ["--xattr", "--posix-acl", "--xattr-mapping"]) {
      assert.ok(help.stdout.includes(option), option);
    }
  } finally {
    await Deno.remove(dirs.root, { recursive: true });
  }
});
