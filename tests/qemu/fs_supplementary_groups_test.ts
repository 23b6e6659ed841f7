/**
 * A guest user whose access comes through a supplementary group, against
 * QEMU 10: a TCG guest (Linux 6.1, so no FUSE_CREATE_SUPP_GROUP) mounts a
 * directory served by `vhostd fs` (as root) and runs commands as user 1000,
 * a member of group 2000 in the guest's /etc/group only. Through that group
 * it writes, truncates and touches root's group-writable file, creates,
 * removes, renames and hard-links in root's group-writable directory, gives
 * its own file to the group and sets its setgid bit. FUSE never tells the
 * back-end about group 2000: vhostd retries the host's refusals with the
 * groups of the inodes involved. After the guest has powered off the host
 * checks owners, modes and contents.
 */

import assert from "node:assert/strict";
import { runGuestOnShare } from "./fs_guest_on_share.ts";
import { PRELUDE } from "./fs_guest_scripts.ts";

const USER = 1000;
const TEAM = 2000;

/** What the host puts in the shared directory before boot. */
function prepare(shared: string): void {
  Deno.chmodSync(shared, 0o755);
  Deno.mkdirSync(`${shared}/team`);
  Deno.chownSync(`${shared}/team`, 0, TEAM);
  Deno.chmodSync(`${shared}/team`, 0o770);
  for (const name of ["doc", "old", "gone"]) {
    Deno.writeTextFileSync(`${shared}/team/${name}`, "0123456789\n");
    Deno.chownSync(`${shared}/team/${name}`, 0, TEAM);
    Deno.chmodSync(`${shared}/team/${name}`, 0o660);
  }
  Deno.utimeSync(`${shared}/team/doc`, 1, 1);
  Deno.mkdirSync(`${shared}/home`);
  Deno.chownSync(`${shared}/home`, USER, USER);
  Deno.writeTextFileSync(`${shared}/home/mine`, "#!/bin/sh\n");
  Deno.chownSync(`${shared}/home/mine`, USER, USER);
  Deno.chmodSync(`${shared}/home/mine`, 0o755);
}

/** The guest side: every check prints OK or FAIL; exits with the failures. */
const SCRIPT = `${PRELUDE}
cd /mnt || exit 11
printf 'root:x:0:0:root:/root:/bin/sh\\nalice:x:${USER}:${USER}:alice:/tmp:/bin/sh\\n' >/etc/passwd
printf 'root:x:0:\\nalice:x:${USER}:\\nteam:x:${TEAM}:alice\\n' >/etc/group
alice() { su -s /bin/sh alice -c "$1"; }
expect alice-groups "$(alice 'id -u; id -G')" "${USER}
${USER} ${TEAM}"

alice 'echo more >>team/doc' || bad alice-append-group-file
alice 'touch team/doc' || bad alice-touch-group-file
alice 'truncate -s 16 team/doc' || bad alice-truncate-group-file
alice 'echo new >team/new' || bad alice-create-in-group-dir
alice 'mkdir team/sub && rmdir team/sub' || bad alice-mkdir-rmdir-in-group-dir
alice 'mv team/old team/renamed' || bad alice-rename-in-group-dir
alice 'rm team/gone' || bad alice-unlink-in-group-dir
alice 'ln team/doc team/hard' || bad alice-hardlink-group-file
alice 'chgrp team home/mine' || bad alice-chgrp-own-file
alice 'chmod 2755 home/mine' || bad alice-setgid-own-file
# The guest's cached attributes may lag: ask the back-end again.
echo 3 >/proc/sys/vm/drop_caches
expect mine-group "$(stat -c %g home/mine)" ${TEAM}
expect mine-mode "$(stat -c %a home/mine)" 2755
fails_with alice-chmod-group-file "Operation not permitted" su -s /bin/sh alice -c 'chmod 666 team/doc'

cd /
umount /mnt || bad umount
echo "FAILURES $failures"
exit $failures
`;

function ownerOf(path: string): [number | null, number | null] {
  const st = Deno.lstatSync(path);
  return [st.uid, st.gid];
}

Deno.test("virtio-fs as a guest user with a supplementary group: group access on the host", async () => {
  await runGuestOnShare({ prefix: "vhostd-fs-groups-", prepare, script: SCRIPT }, (shared) => {
    const names = [...Deno.readDirSync(`${shared}/team`)].map((e) => e.name).sort();
    assert.deepEqual(names, ["doc", "hard", "new", "renamed"]);
    assert.equal(Deno.readTextFileSync(`${shared}/team/doc`), "0123456789\nmore\n".slice(0, 16));
    assert.ok(Deno.statSync(`${shared}/team/doc`).mtime!.getTime() > 1000, "touched");
    assert.equal(Deno.statSync(`${shared}/team/doc`).nlink, 2);
    assert.deepEqual(ownerOf(`${shared}/team/doc`), [0, TEAM]);
    assert.deepEqual(ownerOf(`${shared}/team/new`), [USER, USER]);
    assert.deepEqual(ownerOf(`${shared}/home/mine`), [USER, TEAM]);
    assert.equal((Deno.statSync(`${shared}/home/mine`).mode ?? 0) & 0o7777, 0o2755);
  });
});
