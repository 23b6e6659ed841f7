/**
 * End to end against QEMU 10: `vhostd fs --posix-acl` and a TCG guest
 * running Debian's setfattr/getfattr/setfacl/getfacl (see
 * scripts/build_guest.sh). The guest reads a user.* attribute and an ACL the
 * host set, and the ACL is enforced (a user it names reads a file whose mode
 * alone would refuse him, another user is refused); the guest sets, lists
 * and removes attributes, sets an ACL and a default ACL, and creates a file
 * that inherits it with the umask ignored. After power-off the host finds
 * each of those in the shared directory's own attributes.
 */

import assert from "node:assert/strict";
import { ENODATA, getxattr, setxattr, SyscallError } from "../../ffi/mod.ts";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import type { GuestRunResult } from "./harness.ts";
import { startFsBackend, stopBackend, vhostUserFsArgs } from "./fs_backend.ts";
import { PRELUDE } from "./fs_guest_scripts.ts";
import { type AclEntry, AclTag, decodeAcl, extendedAcl } from "../support/posix_acl.ts";

const HOST_TEXT = "guarded by an ACL";
/** The uid the host's ACL and the guest's ACLs name. */
const ACL_UID = 1234;
/** A uid no ACL names. */
const OTHER_UID = 4321;

/** Fills the shared directory: `host-file`, mode 0600 until its ACL grants ACL_UID read access. */
async function prepare(shared: string): Promise<void> {
  await Deno.chmod(shared, 0o755); // the guest's users must be able to search the root
  await Deno.writeTextFile(`${shared}/host-file`, HOST_TEXT);
  await Deno.chmod(`${shared}/host-file`, 0o600);
  setxattr(`${shared}/host-file`, "user.host", new TextEncoder().encode("from-host"), 0);
  setxattr(`${shared}/host-file`, "system.posix_acl_access", extendedAcl(ACL_UID), 0);
}

function guestScript(): string {
  return `${PRELUDE}
for tool in setfattr getfattr setfacl getfacl; do
  command -v $tool >/dev/null || { echo "NO-TOOL $tool: rebuild the guest (bash scripts/build_guest.sh)"; exit 12; }
done
printf 'root:x:0:0::/root:/bin/sh\\nacl:x:${ACL_UID}:${ACL_UID}::/tmp:/bin/sh\\nother:x:${OTHER_UID}:${OTHER_UID}::/tmp:/bin/sh\\n' >/etc/passwd
printf 'root:x:0:\\nacl:x:${ACL_UID}:\\nother:x:${OTHER_UID}:\\n' >/etc/group
cd /mnt || exit 11

expect host-xattr "$(getfattr --only-values -n user.host host-file)" "from-host"
expect host-acl "$(getfacl -cnp host-file | grep '^user:${ACL_UID}:')" "user:${ACL_UID}:r--"
expect acl-grants "$(su -s /bin/sh -c 'cat /mnt/host-file' acl)" "${HOST_TEXT}"
fails_with acl-refuses "Permission denied" su -s /bin/sh -c 'cat /mnt/host-file' other

echo data >guest-file
setfattr -n user.guest -v from-guest guest-file || bad setfattr
expect guest-xattr "$(getfattr --only-values -n user.guest guest-file)" "from-guest"
setfattr -n user.gone -v soon guest-file || bad setfattr-gone
setfattr -x user.gone guest-file || bad removexattr
fails_with removed "No such attribute" getfattr -n user.gone guest-file
expect listed "$(getfattr -m '^user\\.' guest-file | grep '^user' | tr '\\n' ' ')" "user.guest "
setfacl -m u:${ACL_UID}:rw guest-file || bad setfacl
expect guest-acl "$(getfacl -cnp guest-file | grep '^user:${ACL_UID}:')" "user:${ACL_UID}:rw-"

mkdir acl-dir || bad mkdir
setfacl -d -m u:${ACL_UID}:rwx acl-dir || bad setfacl-default
(umask 077 && echo inherited >acl-dir/inherited) || bad create-inherited
expect inherited-mode "$(stat -c %a acl-dir/inherited)" "664"
expect inherited-acl "$(getfacl -cnp acl-dir/inherited | grep '^user:${ACL_UID}:' | cut -f1)" "user:${ACL_UID}:rwx"
echo "FAILURES $failures"
exit $failures
`;
}

/** An attribute's value on the host (not following links), or undefined when it has none. */
function hostXattr(path: string, name: string): Uint8Array | undefined {
  try {
    const value = new Uint8Array(getxattr(path, name, null, "nofollow"));
    return value.subarray(0, getxattr(path, name, value, "nofollow"));
  } catch (error) {
    if (error instanceof SyscallError && error.errno === ENODATA) return undefined;
    throw error;
  }
}

function namedUser(acl: AclEntry[], uid: number): AclEntry | undefined {
  return acl.find((entry) => entry.tag === AclTag.USER && entry.id === uid);
}

Deno.test("virtio-fs xattrs and POSIX ACLs through vhostd --posix-acl, both ways", async () => {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-fs-xattr-e2e-" });
  const shared = `${dir}/shared`;
  const backend = await (async () => {
    await Deno.mkdir(shared);
    await prepare(shared);
    return startFsBackend("vhostd", {
      sharedDir: shared,
      socket: `${dir}/fs.sock`,
      logPath: `${dir}/backend.log`,
      vhostdArgs: ["--posix-acl"],
    });
  })();
  let result: GuestRunResult | undefined;
  try {
    result = await runGuest({
      script: guestScript(),
      chardevs: vhostUserFsArgs(backend.socket),
      timeoutMs: 100_000,
    });
    assert.equal(result.timedOut, false, "the guest timed out");
    assert.doesNotMatch(result.scriptOutput, /^(FAIL|NO-TOOL) /m);
    assert.match(result.scriptOutput, /^FAILURES 0$/m, "the script did not run to its end");
    assert.equal(result.exitCode, 0, "the guest script reported failures");
    assert.equal((await stopBackend(backend)).code, 0, "vhostd exit status");

    const text = (bytes: Uint8Array | undefined) => bytes && new TextDecoder().decode(bytes);
    assert.equal(text(hostXattr(`${shared}/guest-file`, "user.guest")), "from-guest");
    assert.equal(hostXattr(`${shared}/guest-file`, "user.gone"), undefined);
    const fileAcl = decodeAcl(hostXattr(`${shared}/guest-file`, "system.posix_acl_access")!);
    assert.equal(namedUser(fileAcl, ACL_UID)?.perm, 6, "u:1234:rw- stored on the host");
    const defaultAcl = decodeAcl(hostXattr(`${shared}/acl-dir`, "system.posix_acl_default")!);
    assert.equal(namedUser(defaultAcl, ACL_UID)?.perm, 7, "default u:1234:rwx on the host");
    const inherited = `${shared}/acl-dir/inherited`;
    const inheritedAcl = decodeAcl(hostXattr(inherited, "system.posix_acl_access")!);
    assert.equal(namedUser(inheritedAcl, ACL_UID)?.perm, 7, "the new file inherited the ACL");
    assert.equal((await Deno.stat(inherited)).mode! & 0o777, 0o664, "umask 077 not applied");
  } catch (error) {
    backend.kill("SIGKILL");
    console.error(
      [
        `--- guest console (tail) ---\n${result?.output.slice(-6000) ?? "(no run)"}`,
        `--- QEMU stderr ---\n${result?.qemuStderr ?? ""}`,
        `--- vhostd log (tail) ---\n${(await backend.log()).slice(-6000)}`,
      ].join("\n"),
    );
    throw error;
  } finally {
    await backend.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
