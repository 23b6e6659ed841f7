/**
 * virtio-fs callers whose access comes through a supplementary group, over
 * a real socket: FUSE requests sent straight to `vhostd fs` as uid 1000,
 * gid 1000, where the files and directories belong to group 2000. A FUSE
 * request never names the caller's groups, so vhostd retries a refused
 * operation with the groups of the inodes it involves (the guest kernel
 * checked the real groups before sending it): writing, truncating and
 * touching a group-writable file, creating, removing, renaming and linking
 * in a group-writable directory, giving one's file to such a group and
 * keeping its setgid bit work; what no group can grant (a 0600 file, a
 * chmod or chgrp of someone else's file, explicit times on it) stays
 * refused.
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
import { FuseSetattrValid } from "../src/devices/fs/fuse/mod.ts";
import { as, initWith, modeOf, owner, setattrRaw } from "./support/fs_callers.ts";
import {
  errnoOf,
  FsFixture,
  type FsTestDirs,
  makeTestDirs,
  withVhostdFs,
} from "./support/fs_fixture.ts";
import { namedGroupAcl } from "./support/posix_acl.ts";
import { withVhostd } from "./support/vhostd_process.ts";

const ROOT = 1n;
const USER = 1000;
const TEAM = 2000;
const OTHER_TEAM = 3000;
/** A supplementary group vhostd itself runs with in the leak test. */
const VHOSTD_GROUP = 4000;
const isRoot = Deno.uid() === 0;
const SKIP = isRoot ? "" : " (skipped: vhostd switches ids only as root)";
const haveSetpriv = (() => {
  try {
    return new Deno.Command("setpriv", { args: ["--version"] }).outputSync().success;
  } catch {
    return false;
  }
})();

/** A host file with `mode`, owned by `uid`:`gid`. */
function file(path: string, uid: number, gid: number, mode: number): void {
  Deno.writeTextFileSync(path, "0123456789\n");
  Deno.chownSync(path, uid, gid);
  Deno.chmodSync(path, mode);
}

/** A host directory with `mode`, owned by `uid`:`gid`. */
function dir(path: string, uid: number, gid: number, mode: number): void {
  Deno.mkdirSync(path);
  Deno.chownSync(path, uid, gid);
  Deno.chmodSync(path, mode);
}

/**
 * The share (0755, root's): `team/` (root:TEAM 0770) holding `doc`, `old`
 * and `moved` (root:TEAM 0660), `team-doc` (root:TEAM 0660), `secret`
 * (root:root 0600), `mine` (USER's, 0644, group USER), `read-team/`
 * (root:TEAM 0750) and `sgid-team/` (root:TEAM 02770).
 */
function prepare(dirs: FsTestDirs): void {
  const share = dirs.share;
  Deno.chmodSync(share, 0o755);
  dir(`${share}/team`, 0, TEAM, 0o770);
  for (const name of ["doc", "old", "moved"]) file(`${share}/team/${name}`, 0, TEAM, 0o660);
  file(`${share}/team-doc`, 0, TEAM, 0o660);
  file(`${share}/secret`, 0, 0, 0o600);
  file(`${share}/mine`, USER, USER, 0o644);
  dir(`${share}/read-team`, 0, TEAM, 0o750);
  dir(`${share}/sgid-team`, 0, TEAM, 0o2770);
}

function withGroupShare(body: (d: FsDriver, share: string) => void): Promise<void> {
  return withVhostdFs([], (vhostd, dirs) => {
    prepare(dirs);
    using fx = FsFixture.open(vhostd.socketPath, { init: false });
    initWith(fx.driver);
    body(fx.driver, dirs.share);
  });
}

/** SETATTR of both times to "now": allowed to anyone who may write the file. */
function touch(d: FsDriver, nodeid: bigint): void {
  const now = FuseSetattrValid.ATIME_NOW | FuseSetattrValid.MTIME_NOW;
  setattrRaw(d, nodeid, now | FuseSetattrValid.ATIME | FuseSetattrValid.MTIME);
}

Deno.test({
  name: `fs supplementary groups: a group-writable file opens, truncates and touches${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withGroupShare((d, share) => {
      const doc = d.lookup(ROOT, "team-doc").nodeid;
      Deno.utimeSync(`${share}/team-doc`, 1, 1);
      as(d, USER, USER, () => {
        d.release(d.open(doc, O_WRONLY).fh);
        d.release(d.open(doc, O_RDWR | O_TRUNC).fh);
        const fh = d.open(doc, O_WRONLY).fh;
        d.write(fh, 0n, new TextEncoder().encode("ab"));
        d.release(fh);
        d.setattr(doc, { size: 1n });
        touch(d, doc);
      });
      assert.equal(Deno.readTextFileSync(`${share}/team-doc`), "a");
      assert.ok(Deno.statSync(`${share}/team-doc`).mtime!.getTime() > 1000, "touched");
      assert.deepEqual(owner(`${share}/team-doc`), [0, TEAM]);
    });
  },
});

Deno.test({
  name: `fs supplementary groups: create, unlink, mkdir, rmdir, rename, link in a group dir${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withGroupShare((d, share) => {
      const team = d.lookup(ROOT, "team").nodeid;
      const doc = d.lookup(team, "doc").nodeid;
      as(d, USER, USER, () => {
        d.release(d.create(team, "new", O_RDWR | O_CREAT | O_EXCL, 0o640).open.fh);
        d.mkdir(team, "sub", 0o750);
        d.mknod(team, "fifo", 0o10640);
        d.symlink(team, "link", "doc");
        d.unlink(team, "old");
        d.rmdir(team, "sub");
        d.rename(team, "moved", team, "renamed");
        d.link(doc, team, "hard"); // not its file: protected_hardlinks wants group rw
        // With no O_EXCL, an existing group-writable file opens.
        d.release(d.create(team, "doc", O_RDWR | O_CREAT, 0o640).open.fh);
      });
      const names = [...Deno.readDirSync(`${share}/team`)].map((e) => e.name).sort();
      assert.deepEqual(names, ["doc", "fifo", "hard", "link", "new", "renamed"]);
      assert.deepEqual(owner(`${share}/team/new`), [USER, USER], "born with the caller's ids");
      assert.equal(Deno.statSync(`${share}/team/hard`).nlink, 2);
    });
  },
});

Deno.test({
  name: `fs supplementary groups: one's file goes to the group and keeps a setgid bit${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withGroupShare((d, share) => {
      const mine = d.lookup(ROOT, "mine").nodeid;
      const sgid = d.lookup(ROOT, "sgid-team").nodeid;
      as(d, USER, USER, () => {
        d.setattr(mine, { gid: TEAM });
        // The host clears a setgid bit for a caller outside the file's group,
        // without an error; the guest would have cleared it itself.
        d.setattr(mine, { mode: 0o2755 });
        d.release(d.create(sgid, "prog", O_RDWR | O_CREAT | O_EXCL, 0o2750).open.fh);
        d.mknod(sgid, "node", 0o102750);
      });
      assert.deepEqual(owner(`${share}/mine`), [USER, TEAM]);
      assert.equal(modeOf(`${share}/mine`), 0o2755);
      // What the host takes on trust: the guest sends a chgrp only for a
      // member of the new group, and FUSE cannot say which groups those are,
      // so any group the owner names is granted (not the owner, see below).
      as(d, USER, USER, () => d.setattr(mine, { gid: OTHER_TEAM }));
      assert.deepEqual(owner(`${share}/mine`), [USER, OTHER_TEAM]);
      for (const name of ["prog", "node"]) {
        assert.deepEqual(owner(`${share}/sgid-team/${name}`), [USER, TEAM], name);
        assert.equal(modeOf(`${share}/sgid-team/${name}`), 0o2750, name);
      }
    });
  },
});

Deno.test({
  name: `fs supplementary groups: what no involved group grants stays refused${SKIP}`,
  ignore: !isRoot,
  async fn() {
    await withGroupShare((d, share) => {
      const secret = d.lookup(ROOT, "secret").nodeid;
      const teamDoc = d.lookup(ROOT, "team-doc").nodeid;
      const readTeam = d.lookup(ROOT, "read-team").nodeid;
      const mine = d.lookup(ROOT, "mine").nodeid;
      as(d, USER, USER, () => {
        // A 0600 root file: its group bits grant nothing, group or not.
        assert.equal(errnoOf(() => d.open(secret, O_WRONLY)), EACCES, "write a 0600 file");
        assert.equal(errnoOf(() => d.setattr(secret, { size: 0n })), EACCES, "truncate it");
        assert.equal(errnoOf(() => touch(d, secret)), EACCES, "touch it");
        // A group that may read a directory may not create or remove in it.
        const create = () => d.create(readTeam, "new", O_RDWR | O_CREAT | O_EXCL, 0o644);
        assert.equal(errnoOf(create), EACCES, "create in a 0750 group directory");
        assert.equal(errnoOf(() => d.mkdir(readTeam, "sub")), EACCES, "mkdir there");
        // Owner checks: the group's file is not the caller's.
        assert.equal(errnoOf(() => d.setattr(teamDoc, { mode: 0o666 })), EPERM, "chmod");
        assert.equal(errnoOf(() => d.setattr(teamDoc, { gid: USER })), EPERM, "chgrp");
        assert.equal(errnoOf(() => d.setattr(teamDoc, { gid: TEAM })), EPERM, "chgrp, same");
        const times = { mtime: { sec: 1n, nsec: 0 } };
        assert.equal(errnoOf(() => d.setattr(teamDoc, times)), EPERM, "explicit times");
        // Its own file still cannot be given to another user.
        assert.equal(errnoOf(() => d.setattr(mine, { uid: 0 })), EPERM, "chown to root");
        assert.equal(errnoOf(() => d.setattr(mine, { uid: 0, gid: OTHER_TEAM })), EPERM);
      });
      assert.equal(Deno.readTextFileSync(`${share}/secret`), "0123456789\n");
      assert.deepEqual([...Deno.readDirSync(`${share}/read-team`)], []);
      assert.deepEqual(owner(`${share}/team-doc`), [0, TEAM]);
      assert.equal(modeOf(`${share}/team-doc`), 0o660);
      assert.deepEqual(owner(`${share}/mine`), [USER, USER]);
    });
  },
});

Deno.test({
  name: `fs supplementary groups: vhostd's own groups never reach a caller${
    SKIP || (haveSetpriv ? "" : " (skipped: no setpriv to give vhostd a group)")
  }`,
  ignore: !isRoot || !haveSetpriv,
  async fn() {
    const dirs = await makeTestDirs();
    try {
      prepare(dirs);
      // Readable for VHOSTD_GROUP through a named ACL entry only: no inode
      // involved has it as its group, so only a leak would let USER read it.
      file(`${dirs.share}/vhostd-group`, 0, OTHER_TEAM, 0o600);
      const acl = namedGroupAcl(VHOSTD_GROUP, 4);
      setxattr(`${dirs.share}/vhostd-group`, "system.posix_acl_access", acl, 0);
      const start = {
        command: "fs" as const,
        args: ["--shared-dir", dirs.share],
        dir: dirs.root,
        groups: [VHOSTD_GROUP],
      };
      await withVhostd(start, (vhostd) => {
        const status = Deno.readTextFileSync(`/proc/${vhostd.pid}/status`);
        assert.match(status, new RegExp(`^Groups:\\s*${VHOSTD_GROUP}\\s*$`, "m"));
        using fx = FsFixture.open(vhostd.socketPath, { init: false });
        const d = fx.driver;
        initWith(d);
        const guarded = d.lookup(ROOT, "vhostd-group").nodeid;
        const teamDoc = d.lookup(ROOT, "team-doc").nodeid;
        as(d, USER, USER, () => {
          assert.equal(errnoOf(() => d.open(guarded, O_RDONLY)), EACCES, "vhostd's group");
          d.release(d.open(teamDoc, O_RDWR).fh); // the claimed group still works
        });
        d.release(d.open(guarded, O_RDONLY).fh); // root's own requests keep vhostd's groups
      });
    } finally {
      await Deno.remove(dirs.root, { recursive: true });
    }
  },
});
