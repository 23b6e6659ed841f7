/**
 * virtio-fs credentials over a real socket: FUSE requests sent straight to
 * `vhostd fs` (no guest kernel, so none of its permission checks) in the
 * name of an unprivileged uid. Files are born owned by that uid, and the
 * host refuses it what it would refuse that user: a root-only file cannot
 * be opened, truncated, chmodded or unlinked, a root directory cannot be
 * created in, a group it could only have through an ACL entry is not
 * given to it, and the supplementary group of FUSE_CREATE_SUPP_GROUP opens
 * a directory writable for that group. (Access through the group of the
 * file or directory involved: fs_supplementary_groups_test.ts.) With
 * HANDLE_KILLPRIV_V2 its writes, truncations and O_TRUNC opens clear the
 * setuid and setgid bits and `security.capability`, as the host kernel does
 * for an unprivileged writer.
 *
 * Needs root (vhostd must be able to switch ids); skipped otherwise.
 */

import assert from "node:assert/strict";
import {
  EACCES,
  EPERM,
  O_CREAT,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  setxattr,
} from "../ffi/mod.ts";
import type { FsDriver } from "../src/frontend/mod.ts";
import {
  decodeCreateOut,
  decodeOpenOut,
  encodeGroupsExtension,
  encodeRequest,
  FUSE_OUT_HEADER,
  FuseInitFlag,
  FuseInitFlag2,
  FuseOpcode,
  FuseOpenInFlag,
  FuseSetattrValid,
  FuseWriteFlag,
  splitReply,
} from "../src/devices/fs/fuse/mod.ts";
import { as, initWith, modeOf, owner, setattrRaw } from "./support/fs_callers.ts";
import { namedGroupAcl } from "./support/posix_acl.ts";
import { errnoOf, FsFixture, type FsTestDirs, withVhostdFs } from "./support/fs_fixture.ts";

const ROOT = 1n;
const USER = 1000;
const TEAM = 2000;
const isRoot = Deno.uid() === 0;
const SKIP = isRoot ? "" : " (skipped: vhostd switches ids only as root)";

/** The share writable by anyone, plus root-only things inside it. */
function prepare(dirs: FsTestDirs): void {
  Deno.chmodSync(dirs.share, 0o777);
  Deno.writeTextFileSync(`${dirs.share}/secret`, "root only\n");
  Deno.chmodSync(`${dirs.share}/secret`, 0o600);
  // Readable for group 0 only through a named ACL entry: the group a refused
  // caller may claim from it is its owning group, 3000, which grants nothing.
  Deno.writeTextFileSync(`${dirs.share}/group-root`, "root's group only\n");
  Deno.chownSync(`${dirs.share}/group-root`, 0, 3000);
  setxattr(`${dirs.share}/group-root`, "system.posix_acl_access", namedGroupAcl(0, 4), 0);
  Deno.mkdirSync(`${dirs.share}/locked`);
  Deno.chmodSync(`${dirs.share}/locked`, 0o755);
  Deno.writeTextFileSync(`${dirs.share}/locked/inside`, "");
  Deno.chmodSync(`${dirs.share}/locked/inside`, 0o666);
}

function withCredentialsShare(body: (d: FsDriver, dirs: FsTestDirs) => void): Promise<void> {
  return withVhostdFs([], (vhostd, dirs) => {
    prepare(dirs);
    using fx = FsFixture.open(vhostd.socketPath, { init: false });
    initWith(fx.driver);
    body(fx.driver, dirs);
  });
}

Deno.test({
  name: `fs credentials: what a non-root caller creates is born with its owner${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withCredentialsShare((d, dirs) => {
      as(d, USER, USER, () => {
        const { open } = d.create(ROOT, "file", O_RDWR | O_CREAT | O_EXCL, 0o640);
        d.release(open.fh);
        d.mkdir(ROOT, "dir", 0o750);
        d.symlink(ROOT, "link", "file");
        d.mknod(ROOT, "fifo", 0o10600);
      });
      for (const name of ["file", "dir", "link", "fifo"]) {
        assert.deepEqual(owner(`${dirs.share}/${name}`), [USER, USER], name);
      }
      assert.equal(modeOf(`${dirs.share}/file`), 0o640);
      assert.equal(modeOf(`${dirs.share}/dir`), 0o750);
      // Its own file: it may chmod and truncate it, but not give it away.
      const file = d.lookup(ROOT, "file").nodeid;
      as(d, USER, USER, () => {
        d.setattr(file, { mode: 0o600 });
        d.setattr(file, { size: 3n });
        assert.equal(errnoOf(() => d.setattr(file, { uid: 0 })), EPERM, "chown to root");
      });
      assert.equal(modeOf(`${dirs.share}/file`), 0o600);
      assert.equal(Deno.statSync(`${dirs.share}/file`).size, 3);
      // Root requests still run as root: a chown works.
      d.setattr(file, { uid: 4321 });
      assert.deepEqual(owner(`${dirs.share}/file`), [4321, USER]);
    });
  },
});

Deno.test({
  name: `fs credentials: a non-root caller cannot touch root-only files or directories${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withCredentialsShare((d, dirs) => {
      const secret = d.lookup(ROOT, "secret").nodeid;
      const groupRoot = d.lookup(ROOT, "group-root").nodeid;
      const locked = d.lookup(ROOT, "locked").nodeid;
      const inside = d.lookup(locked, "inside").nodeid;
      as(d, USER, USER, () => {
        assert.equal(errnoOf(() => d.open(secret, O_RDONLY)), EACCES, "read a 0600 root file");
        assert.equal(errnoOf(() => d.open(secret, O_WRONLY)), EACCES, "write it");
        assert.equal(errnoOf(() => d.open(secret, O_RDWR | O_TRUNC)), EACCES, "truncate it");
        assert.equal(errnoOf(() => d.setattr(secret, { size: 0n })), EACCES, "SETATTR size");
        assert.equal(errnoOf(() => d.setattr(secret, { mode: 0o666 })), EPERM, "chmod it");
        assert.equal(
          errnoOf(() => d.setattr(secret, { mtime: { sec: 1n, nsec: 0 } })),
          EPERM,
          "set its times",
        );
        // Only the groups of the inodes involved are claimed, not every group.
        assert.equal(errnoOf(() => d.open(groupRoot, O_RDONLY)), EACCES, "group 0 by ACL only");
        // A root 0755 directory: no creating, removing or renaming in it.
        const inLocked = [
          () => d.create(locked, "new", O_RDWR | O_CREAT, 0o644),
          () => d.mkdir(locked, "sub"),
          () => d.mknod(locked, "node", 0o10644),
          () => d.symlink(locked, "ln", "x"),
          () => d.unlink(locked, "inside"),
          () => d.rename(locked, "inside", ROOT, "stolen"),
          () => d.link(inside, locked, "hard"), // a 0666 file: only the directory refuses
        ];
        for (const [i, attempt] of inLocked.entries()) {
          assert.equal(errnoOf(attempt), EACCES, `change #${i} in the root directory`);
        }
        // Hard links to a file it may not read are refused (protected_hardlinks).
        assert.equal(errnoOf(() => d.link(secret, ROOT, "hard")), EPERM, "hard link to secret");
      });
      assert.equal(Deno.readTextFileSync(`${dirs.share}/secret`), "root only\n");
      assert.equal(modeOf(`${dirs.share}/secret`), 0o600);
      assert.deepEqual([...Deno.readDirSync(`${dirs.share}/locked`)].map((e) => e.name), [
        "inside",
      ]);
      // The same requests from root succeed.
      const opened = d.open(secret, O_RDWR);
      d.release(opened.fh);
      d.unlink(locked, "inside");
    });
  },
});

Deno.test({
  name: `fs credentials: the FUSE_CREATE_SUPP_GROUP extension lets a group member create${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withCredentialsShare((d, dirs) => {
      // Writable for TEAM through a named ACL entry only: no inode involved
      // has TEAM as its group, so only the extension can tell vhostd.
      Deno.mkdirSync(`${dirs.share}/team`);
      setxattr(`${dirs.share}/team`, "system.posix_acl_access", namedGroupAcl(TEAM, 7), 0);
      const team = d.lookup(ROOT, "team").nodeid;
      const createIn = (name: string, groups: number[] | null): number => {
        const request = encodeRequest(FuseOpcode.CREATE, {
          unique: d.nextUnique(),
          nodeid: team,
          uid: USER,
          gid: USER,
        }, {
          flags: O_RDWR | O_CREAT | O_EXCL,
          mode: 0o664,
          umask: 0,
          openFlags: 0,
          name: new TextEncoder().encode(name),
        });
        const bytes = groups === null ? request : extended(request, encodeGroupsExtension(groups));
        const raw = d.send(bytes, FUSE_OUT_HEADER.size + 144);
        const { header, payload } = splitReply(raw.bytes);
        if (header.error === 0) d.release(decodeCreateOut(payload).open.fh);
        return header.error === 0 ? 0 : -header.error;
      };
      assert.equal(createIn("without", null), EACCES, "not a member as far as vhostd knows");
      assert.equal(createIn("other", [TEAM + 1]), EACCES, "a group that does not help");
      assert.equal(createIn("with", [TEAM]), 0);
      assert.deepEqual(owner(`${dirs.share}/team/with`), [USER, USER]);
      assert.deepEqual([...Deno.readDirSync(`${dirs.share}/team`)].map((e) => e.name), ["with"]);
    });
  },
});

/** `request` with `extension` appended, counted in `len` and `total_extlen`. */
function extended(request: Uint8Array, extension: Uint8Array): Uint8Array {
  const out = new Uint8Array(request.length + extension.length);
  out.set(request);
  out.set(extension, request.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, out.length, true);
  view.setUint16(36, extension.length / 8, true);
  return out;
}

/** SETATTR of the size with FATTR_KILL_SUIDGID, as a guest sends it for a caller without CAP_FSETID. */
function truncateKilling(d: FsDriver, nodeid: bigint, size: bigint): void {
  setattrRaw(d, nodeid, FuseSetattrValid.SIZE | FuseSetattrValid.KILL_SUIDGID, size);
}

function hasFileCapability(path: string): boolean {
  const out = new Deno.Command("getcap", { args: [path] }).outputSync();
  if (!out.success) throw new Error(`getcap ${path}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).includes("cap_net_raw");
}

function setFileCapability(path: string): void {
  const out = new Deno.Command("setcap", { args: ["cap_net_raw+ep", path] }).outputSync();
  if (!out.success) throw new Error(`setcap ${path}: ${new TextDecoder().decode(out.stderr)}`);
}

const haveSetcap = (() => {
  try {
    return new Deno.Command("setcap", { args: ["-v"] }).outputSync() !== undefined;
  } catch {
    return false;
  }
})();

Deno.test({
  name: `fs credentials: HANDLE_KILLPRIV_V2 clears setuid/setgid and file capabilities${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withVhostdFs([], (vhostd, dirs) => {
      using fx = FsFixture.open(vhostd.socketPath, { init: false });
      const d = fx.driver;
      const init = initWith(d);
      assert.notEqual(init.flags & FuseInitFlag.HANDLE_KILLPRIV_V2, 0, "KILLPRIV_V2 accepted");
      assert.notEqual(init.flags2 & FuseInitFlag2.CREATE_SUPP_GROUP, 0, "SUPP_GROUP accepted");
      assert.equal(init.flags & FuseInitFlag.HANDLE_KILLPRIV, 0, "not v1");
      // Setuid/setgid programs, root's, that anyone may write.
      const names = ["write", "truncate", "otrunc", "root-write", "root-plain"];
      for (const name of names) {
        Deno.writeTextFileSync(`${dirs.share}/${name}`, "#!/bin/sh\n");
        Deno.chmodSync(`${dirs.share}/${name}`, 0o6777);
        if (haveSetcap) setFileCapability(`${dirs.share}/${name}`);
        assert.equal(modeOf(`${dirs.share}/${name}`), 0o6777, "setcap keeps the mode");
      }
      const node = (name: string) => d.lookup(ROOT, name).nodeid;
      const openWith = (nodeid: bigint, flags: number, openFlags: number) =>
        decodeOpenOut(d.call(FuseOpcode.OPEN, { flags, openFlags }, { nodeid })).fh;
      const data = new TextEncoder().encode("echo\n");
      as(d, USER, USER, () => {
        const fh = openWith(node("write"), O_WRONLY, 0);
        d.write(fh, 0n, data, { writeFlags: FuseWriteFlag.KILL_SUIDGID });
        d.release(fh);
        truncateKilling(d, node("truncate"), 1n);
        d.release(openWith(node("otrunc"), O_WRONLY | O_TRUNC, FuseOpenInFlag.KILL_SUIDGID));
      });
      // A root writer without CAP_FSETID: the guest says so with the flag.
      const rootFh = openWith(node("root-write"), O_WRONLY, 0);
      d.write(rootFh, 0n, data, { writeFlags: FuseWriteFlag.KILL_SUIDGID });
      // A root writer with CAP_FSETID: no flag, the bits stay.
      const plainFh = openWith(node("root-plain"), O_WRONLY, 0);
      d.write(plainFh, 0n, data);
      for (const name of ["write", "truncate", "otrunc", "root-write"]) {
        assert.equal(modeOf(`${dirs.share}/${name}`), 0o777, `${name}: setuid and setgid cleared`);
        if (haveSetcap) assert.equal(hasFileCapability(`${dirs.share}/${name}`), false, name);
      }
      assert.equal(modeOf(`${dirs.share}/root-plain`), 0o6777, "a privileged write keeps them");
      // setgid without group execute is not a setgid program: it stays.
      Deno.chmodSync(`${dirs.share}/write`, 0o6767);
      as(d, USER, USER, () => {
        const fh = openWith(node("write"), O_WRONLY, 0);
        d.write(fh, 0n, data, { writeFlags: FuseWriteFlag.KILL_SUIDGID });
      });
      assert.equal(modeOf(`${dirs.share}/write`), 0o2767);
      // SETATTR with FATTR_KILL_SUIDGID from a root caller without CAP_FSETID.
      Deno.chmodSync(`${dirs.share}/truncate`, 0o6777);
      truncateKilling(d, node("truncate"), 0n);
      assert.equal(modeOf(`${dirs.share}/truncate`), 0o777, "root truncate with the flag");
    });
  },
});
