/**
 * Guest users against QEMU 10: a TCG guest mounts a directory served by
 * `vhostd fs` (as root) and runs commands as user 1000 (busybox `su`, with
 * /etc/passwd written at run time). The user creates, writes, chmods,
 * links and truncates its own files; it cannot read, write or remove
 * root's; writing or truncating a setuid program it may write clears the
 * setuid and setgid bits (HANDLE_KILLPRIV_V2); with the guest's own
 * hard-link protection off, the host still refuses it a hard link to root's
 * secret. After the guest has powered off the host checks owners, modes
 * and contents in the directory itself.
 */

import assert from "node:assert/strict";
import { runGuestOnShare } from "./fs_guest_on_share.ts";
import { PRELUDE } from "./fs_guest_scripts.ts";

const USER = 1000;
const SECRET_TEXT = "root only\n";

/** What the host puts in the shared directory before boot. */
function prepare(shared: string): void {
  Deno.chmodSync(shared, 0o755);
  Deno.mkdirSync(`${shared}/home`);
  Deno.chownSync(`${shared}/home`, USER, USER);
  Deno.writeTextFileSync(`${shared}/secret`, SECRET_TEXT);
  Deno.chmodSync(`${shared}/secret`, 0o600);
  Deno.mkdirSync(`${shared}/rootdir`);
  Deno.chmodSync(`${shared}/rootdir`, 0o755);
  Deno.writeTextFileSync(`${shared}/rootdir/keep`, "kept\n");
  Deno.chmodSync(`${shared}/rootdir/keep`, 0o666);
  // Root's setuid/setgid programs that anyone may write, and one of the user's.
  for (const name of ["suid-append", "suid-truncate", "suid-overwrite"]) {
    Deno.writeTextFileSync(`${shared}/${name}`, "#!/bin/sh\n");
    Deno.chmodSync(`${shared}/${name}`, 0o6777);
  }
  Deno.writeTextFileSync(`${shared}/home/own-suid`, "#!/bin/sh\n");
  Deno.chownSync(`${shared}/home/own-suid`, USER, USER);
  Deno.chmodSync(`${shared}/home/own-suid`, 0o4755);
}

/**
 * The host refuses hard links to files the linker may not read and write
 * (fs.protected_hardlinks); the guest, with the protection off, would not.
 */
const hostProtectsHardlinks =
  Deno.readTextFileSync("/proc/sys/fs/protected_hardlinks").trim() === "1";

/**
 * The guest side: every check prints OK or FAIL; exits with the failures.
 * With `hardlinkCheck` the guest turns its own fs.protected_hardlinks off
 * and the user's hard link to root's secret must still fail: only the host
 * (checking as the user) refuses it.
 */
function script(hardlinkCheck: boolean): string {
  return `${PRELUDE}
cd /mnt || exit 11
printf 'root:x:0:0:root:/root:/bin/sh\\nalice:x:${USER}:${USER}:alice:/tmp:/bin/sh\\n' >/etc/passwd
printf 'root:x:0:\\nalice:x:${USER}:\\n' >/etc/group
alice() { su -s /bin/sh alice -c "$1"; }
expect alice-ids "$(alice 'id -u; id -g')" "${USER}
${USER}"

alice 'echo hello >home/made.txt' || bad alice-create
alice 'echo again >>home/made.txt' || bad alice-append
alice 'mkdir home/made-dir' || bad alice-mkdir
alice 'chmod 640 home/made.txt' || bad alice-chmod
alice 'chmod 700 home/made-dir' || bad alice-chmod-dir
alice 'ln -s made.txt home/made-link' || bad alice-symlink
alice 'ln home/made.txt home/made-hard' || bad alice-link
alice 'mv home/made-hard home/renamed' || bad alice-rename
expect alice-owner "$(stat -c %u:%g home/made.txt)" "${USER}:${USER}"
expect alice-mode "$(stat -c %a home/made.txt)" 640
expect alice-read "$(alice 'cat home/made.txt')" "hello
again"

fails_with alice-read-secret "Permission denied" su -s /bin/sh alice -c 'cat secret'
fails_with alice-write-secret "Permission denied" su -s /bin/sh alice -c 'echo x >>secret'
fails_with alice-chmod-secret "Operation not permitted" su -s /bin/sh alice -c 'chmod 666 secret'
fails_with alice-rm-secret "Permission denied" su -s /bin/sh alice -c 'rm -f secret'
fails_with alice-create-in-rootdir "Permission denied" su -s /bin/sh alice -c 'echo x >rootdir/new'
fails_with alice-rm-in-rootdir "Permission denied" su -s /bin/sh alice -c 'rm -f rootdir/keep'
fails_with alice-mkdir-in-rootdir "Permission denied" su -s /bin/sh alice -c 'mkdir rootdir/sub'
expect secret-intact "$(cat secret)" "${SECRET_TEXT.trimEnd()}"
${
    hardlinkCheck
      ? `echo 0 >/proc/sys/fs/protected_hardlinks || bad guest-hardlink-protection-off
fails_with alice-hardlink-secret "Operation not permitted" su -s /bin/sh alice -c 'ln secret home/stolen'`
      : ""
  }

alice 'echo more >>suid-append' || bad alice-write-suid
alice 'truncate -s 1 suid-truncate' || bad alice-truncate-suid
alice 'echo new >suid-overwrite' || bad alice-overwrite-suid
alice 'echo more >>home/own-suid' || bad alice-write-own-suid
# The guest's cached attributes may lag: ask the back-end again.
echo 3 >/proc/sys/vm/drop_caches
expect suid-append-cleared "$(stat -c %a suid-append)" 777
expect suid-truncate-cleared "$(stat -c %a suid-truncate)" 777
expect suid-overwrite-cleared "$(stat -c %a suid-overwrite)" 777
expect own-suid-cleared "$(stat -c %a home/own-suid)" 755

cd /
umount /mnt || bad umount
echo "FAILURES $failures"
exit $failures
`;
}

function modeOf(path: string): number {
  return (Deno.statSync(path).mode ?? 0) & 0o7777;
}

function ownerOf(path: string): [number | null, number | null] {
  const st = Deno.lstatSync(path);
  return [st.uid, st.gid];
}

Deno.test("virtio-fs as a guest user: owners, permission checks and setuid bits, guest and host", async () => {
  await runGuestOnShare({
    prefix: "vhostd-fs-creds-",
    prepare,
    script: script(hostProtectsHardlinks),
  }, (shared) => {
    for (const name of ["made.txt", "made-dir", "made-link", "renamed"]) {
      assert.deepEqual(ownerOf(`${shared}/home/${name}`), [USER, USER], `owner of ${name}`);
    }
    assert.equal(modeOf(`${shared}/home/made.txt`), 0o640);
    assert.equal(modeOf(`${shared}/home/made-dir`), 0o700);
    assert.equal(Deno.readTextFileSync(`${shared}/home/renamed`), "hello\nagain\n");
    assert.equal(Deno.readLinkSync(`${shared}/home/made-link`), "made.txt");
    assert.equal(Deno.readTextFileSync(`${shared}/secret`), SECRET_TEXT);
    assert.equal(modeOf(`${shared}/secret`), 0o600);
    assert.deepEqual([...Deno.readDirSync(`${shared}/rootdir`)].map((e) => e.name), ["keep"]);
    assert.equal(Deno.statSync(`${shared}/secret`).nlink, 1, "no hard link to the secret");
    if (!hostProtectsHardlinks) console.log("host fs.protected_hardlinks is off: check skipped");
    for (const name of ["suid-append", "suid-truncate", "suid-overwrite"]) {
      assert.equal(modeOf(`${shared}/${name}`), 0o777, `${name}: setuid and setgid cleared`);
      assert.deepEqual(ownerOf(`${shared}/${name}`), [0, 0], `${name} still root's`);
    }
    assert.equal(modeOf(`${shared}/home/own-suid`), 0o755);
    assert.equal(Deno.readTextFileSync(`${shared}/suid-overwrite`), "new\n");
  });
});
