/**
 * Guest shell scripts (busybox `sh`, run as `/test.sh` by the test guest)
 * for the virtio-fs end-to-end tests, and the host-side facts
 * they are checked against: the files the host puts in the shared directory
 * before boot, the names of the large directory, SHA-256 as `sha256sum`
 * prints it.
 *
 * Conventions of every script here: it mounts the tag at /mnt first (exit
 * 10 if that fails), prints one line per check, `OK name` or
 * `FAIL name: why`, prints values the host compares as `KEY value` lines,
 * and exits with the number of failed checks.
 *
 * @module
 */

/** The mount tag every script mounts. */
export const FS_TAG = "vhostd";
/** Entries of the host-made directory `many/` (and of the guest-made `guest-many/`). */
export const MANY_ENTRIES = 2000;
/** Size of the file the guest writes from /dev/urandom, in MiB. */
export const BIG_FILE_MIB = 64;
/** Contents of `from-host.txt`, put there by the host before boot. */
export const HOST_FILE_TEXT = "written by the host\n";
/** What `created.txt` holds at the end: two guest writes, then one through its hard link. */
export const CREATED_TEXT = "hello from the guest\nsecond line\nthrough the hard link\n";
/** The mtime the guest sets with `touch -d` (the guest clock runs in UTC). */
export const TOUCHED_MTIME = "2001-02-03T04:05:06Z";
/** Bytes of `seq 1 1000` that `truncate -s` keeps. */
export const TRUNCATED_SIZE = 100;
/** Size `truncate -s` grows `grown` to. */
export const GROWN_SIZE = 1024 * 1024;

/** The check helpers every script uses (`ok`, `bad`, `expect`, `fails_with`, `hash_of`). */
export const CHECK_HELPERS = `
failures=0
ok() { echo "OK $1"; }
bad() { echo "FAIL $*"; failures=$((failures + 1)); }
# expect NAME ACTUAL WANTED
expect() {
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got [$2], want [$3]"; fi
}
# fails_with NAME MESSAGE COMMAND...: COMMAND must fail and say MESSAGE on stderr.
fails_with() {
  name=$1; message=$2; shift 2
  if "$@" 2>/tmp/err; then
    bad "$name: succeeded"
  elif grep -q "$message" /tmp/err; then
    ok "$name"
  else
    bad "$name: $(cat /tmp/err)"
  fi
}
hash_of() { sha256sum "$@" | cut -d' ' -f1; }
`;

/** Lines shared by every script: check helpers and the mount (also used by fs_xattr_test.ts). */
export const PRELUDE =
  `${CHECK_HELPERS}mount -t virtiofs ${FS_TAG} /mnt || { echo "MOUNT-FAILED"; exit 10; }
`;

/**
 * Name `i` of the host-made directory `many/`: lengths vary from 8 to about
 * 140 bytes so that READDIR answers end at every possible point of an entry.
 */
export function manyEntryName(i: number): string {
  return `e${String(i).padStart(5, "0")}-${"n".repeat((i * 37) % 131)}`;
}

/** Whether entry `i` of `many/` is a directory (every 50th) rather than a file. */
export function manyEntryIsDir(i: number): boolean {
  return i % 50 === 0;
}

/** Name `i` of the directory `guest-many/` that the guest fills (`g-$i` in the script). */
export function guestManyEntryName(i: number): string {
  return `g-${i}`;
}

/** Lower-case hex SHA-256 of `bytes`, as `sha256sum` prints it. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes.slice().buffer as ArrayBuffer),
  );
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 of `names` sorted bytewise, one per line: what `ls DIR | sort | sha256sum` prints. */
export function sortedNamesHash(names: string[]): Promise<string> {
  const sorted = [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return sha256Hex(new TextEncoder().encode(sorted.map((name) => `${name}\n`).join("")));
}

/** The first {@linkcode TRUNCATED_SIZE} bytes of `seq 1 1000`: what `trunc` holds in the end. */
export function truncatedSeq(): Uint8Array {
  const all = Array.from({ length: 1000 }, (_, i) => `${i + 1}\n`).join("");
  return new TextEncoder().encode(all).subarray(0, TRUNCATED_SIZE);
}

/**
 * Fills `dir` with what {@linkcode fileOpsScript} expects from the host:
 * `from-host.txt` and the directory `many/`.
 */
export async function prepareFileOpsDir(dir: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/from-host.txt`, HOST_FILE_TEXT);
  await Deno.mkdir(`${dir}/many`);
  for (let i = 0; i < MANY_ENTRIES; i++) {
    const path = `${dir}/many/${manyEntryName(i)}`;
    if (manyEntryIsDir(i)) await Deno.mkdir(path);
    else await Deno.writeTextFile(path, `${i}\n`);
  }
}

/**
 * The file-operation suite: create, write, append, read, rename (also over
 * an existing file), unlink, mkdir, rmdir (also of a non-empty directory),
 * symlink, hard link, chmod, utimes, truncate (shrink and grow), listing
 * the 2,000-entry `many/`, creating and listing 2,000 entries, and a
 * 64 MiB file from /dev/urandom read back after dropping caches.
 *
 * Prints `MANY-HASH`, `GUEST-MANY-HASH` (sorted names) and `BIG-HASH` (the
 * data as generated, before it went through virtio-fs) for the host.
 */
export function fileOpsScript(): string {
  return `${PRELUDE}
cd /mnt || exit 11
expect host-file "$(cat from-host.txt)" "${HOST_FILE_TEXT.trimEnd()}"

echo "hello from the guest" >created.txt || bad create
echo "second line" >>created.txt || bad append
expect read "$(cat created.txt)" "hello from the guest
second line"
expect size "$(stat -c %s created.txt)" 33

echo "renamed content" >old-name
mv old-name new-name || bad rename
[ ! -e old-name ] && ok rename-source-gone || bad rename-source-gone
expect rename-content "$(cat new-name)" "renamed content"
echo "loser" >victim
echo "winner" >mover
mv mover victim || bad rename-replace
expect rename-replace "$(cat victim)" "winner"

echo "short-lived" >doomed
rm doomed || bad unlink
[ ! -e doomed ] && ok unlink-gone || bad unlink-gone
fails_with unlink-open-fails "No such file or directory" cat doomed

mkdir made || bad mkdir
mkdir made/sub || bad mkdir-nested
echo "inner" >made/sub/file || bad create-nested
expect mkdir-type "$(stat -c %F made/sub)" "directory"
mkdir gone && rmdir gone || bad rmdir
[ ! -e gone ] && ok rmdir-gone || bad rmdir-gone
fails_with rmdir-not-empty "Directory not empty" rmdir made/sub
fails_with mkdir-exists "File exists" mkdir made

ln -s created.txt sym || bad symlink
expect readlink "$(readlink sym)" "created.txt"
case "$(ls -l sym)" in
  *"sym -> created.txt") ok symlink-ls ;;
  *) bad "symlink-ls: $(ls -l sym)" ;;
esac
expect symlink-type "$(stat -c %F sym)" "symbolic link"
expect symlink-follow "$(cat sym)" "$(cat created.txt)"
ln -s /nowhere/at/all dangling || bad symlink-dangling
fails_with symlink-dangling-open "No such file or directory" cat dangling

ln created.txt hard || bad link
expect hardlink-inode "$(stat -c %i hard)" "$(stat -c %i created.txt)"
expect hardlink-count "$(stat -c %h created.txt)" 2
echo "through the hard link" >>hard || bad hardlink-append
expect hardlink-shared "$(tail -n 1 created.txt)" "through the hard link"

echo "mode" >modes
chmod 640 modes || bad chmod
expect chmod-file "$(stat -c %a modes)" 640
chmod 751 made || bad chmod-dir
expect chmod-dir "$(stat -c %a made)" 751
touch -d "2001-02-03 04:05:06" modes || bad touch
expect touch "$(stat -c %Y modes)" "$(date -u -d "2001-02-03 04:05:06" +%s)"

seq 1 1000 >trunc
truncate -s ${TRUNCATED_SIZE} trunc || bad truncate
expect truncate-size "$(stat -c %s trunc)" ${TRUNCATED_SIZE}
seq 1 1000 | head -c ${TRUNCATED_SIZE} >/tmp/trunc
cmp -s /tmp/trunc trunc && ok truncate-content || bad truncate-content
echo "x" >grown
truncate -s ${GROWN_SIZE} grown || bad truncate-grow
expect truncate-grow-size "$(stat -c %s grown)" ${GROWN_SIZE}
expect truncate-grow-zeros "$(tail -c 4 grown | od -An -tx1 | tr -d ' ')" 00000000

expect many-count "$(ls many | wc -l)" ${MANY_ENTRIES}
expect many-dirs "$(find many -mindepth 1 -type d | wc -l)" ${MANY_ENTRIES / 50}
echo "MANY-HASH $(ls many | sort | hash_of)"

mkdir guest-many || bad mkdir-guest-many
i=0
while [ $i -lt ${MANY_ENTRIES} ]; do
  : >"guest-many/g-$i" || { bad "create guest-many $i"; break; }
  i=$((i + 1))
done
expect guest-many-count "$(ls guest-many | wc -l)" ${MANY_ENTRIES}
echo "GUEST-MANY-HASH $(ls guest-many | sort | hash_of)"

dd if=/dev/urandom of=/tmp/big bs=1M count=${BIG_FILE_MIB} 2>/tmp/err || bad "urandom: $(cat /tmp/err)"
echo "BIG-HASH $(hash_of /tmp/big)"
dd if=/tmp/big of=big bs=1M conv=fsync 2>/tmp/err || bad "big-write: $(cat /tmp/err)"
rm /tmp/big
sync
echo 3 >/proc/sys/vm/drop_caches
expect big-size "$(stat -c %s big)" $((${BIG_FILE_MIB} * 1024 * 1024))
echo "BIG-READ-HASH $(hash_of big)"

cd /
umount /mnt || bad umount
echo "FAILURES $failures"
exit $failures
`;
}

/** What {@linkcode readOnlyScript} expects the host to have put in the shared directory. */
export const READ_ONLY_FILE_TEXT = "kept by the host\n";

/** Fills `dir` for {@linkcode readOnlyScript}: `kept.txt` and an empty `kept-dir/`. */
export async function prepareReadOnlyDir(dir: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/kept.txt`, READ_ONLY_FILE_TEXT);
  await Deno.chmod(`${dir}/kept.txt`, 0o644);
  await Deno.mkdir(`${dir}/kept-dir`);
}

/**
 * Against a read-only share: reading and listing work; every kind of change
 * fails with EROFS ("Read-only file system").
 */
export function readOnlyScript(): string {
  return `${PRELUDE}
expect ro-read "$(cat /mnt/kept.txt)" "${READ_ONLY_FILE_TEXT.trimEnd()}"
expect ro-list "$(ls /mnt | tr '\\n' ' ')" "kept-dir kept.txt "
EROFS="Read-only file system"
fails_with ro-create "$EROFS" sh -c 'echo new >/mnt/new.txt'
fails_with ro-append "$EROFS" sh -c 'echo more >>/mnt/kept.txt'
fails_with ro-open-truncate "$EROFS" sh -c ': >/mnt/kept.txt'
fails_with ro-truncate "$EROFS" truncate -s 0 /mnt/kept.txt
fails_with ro-mkdir "$EROFS" mkdir /mnt/new-dir
fails_with ro-unlink "$EROFS" rm /mnt/kept.txt
fails_with ro-rmdir "$EROFS" rmdir /mnt/kept-dir
fails_with ro-rename "$EROFS" mv /mnt/kept.txt /mnt/moved.txt
fails_with ro-symlink "$EROFS" ln -s kept.txt /mnt/sym
fails_with ro-link "$EROFS" ln /mnt/kept.txt /mnt/hard
fails_with ro-chmod "$EROFS" chmod 600 /mnt/kept.txt
fails_with ro-touch "$EROFS" touch -d "2001-02-03 04:05:06" /mnt/kept.txt
expect ro-read-after "$(cat /mnt/kept.txt)" "${READ_ONLY_FILE_TEXT.trimEnd()}"
echo "FAILURES $failures"
exit $failures
`;
}

/** Size of `held.bin`, the file the guest holds open across a migration (several FUSE READs). */
export const HELD_FILE_SIZE = 300 * 1024;
/** Contents of `other.txt`, read by the guest on both sides of a migration. */
export const OTHER_FILE_TEXT = "another file\n";
/** Entries of `listed/`, listed by the guest after a migration. */
export const LISTED_ENTRIES = 300;
/** What the guest writes through its held-open `appended.txt` fd, before and after a migration. */
export const APPENDED_TEXT = "before migration\nafter migration\n";
/** What the guest writes to the new file `created-after.txt` after a migration. */
export const CREATED_AFTER_TEXT = "created after migration\n";
/** The line the host types on the guest's console once the migration is over. */
export const MIGRATED_COMMAND = "MIGRATED";

/** The contents of `held.bin`: a pattern whose every 4 KiB page differs. */
export function heldFileBytes(): Uint8Array {
  const bytes = new Uint8Array(HELD_FILE_SIZE);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >>> 12) * 13) & 0xff;
  return bytes;
}

/**
 * Fills `dir` for {@linkcode migrationScript}: `held.bin`, `other.txt` and
 * `listed/` with {@linkcode LISTED_ENTRIES} files.
 */
export async function prepareMigrationDir(dir: string): Promise<void> {
  await Deno.writeFile(`${dir}/held.bin`, heldFileBytes());
  await Deno.writeTextFile(`${dir}/other.txt`, OTHER_FILE_TEXT);
  await Deno.mkdir(`${dir}/listed`);
  for (let i = 0; i < LISTED_ENTRIES; i++) {
    await Deno.writeTextFile(`${dir}/listed/${manyEntryName(i)}`, `${i}\n`);
  }
}

/**
 * The guest side of a migration: opens `held.bin` on fd 3 (read, never
 * touched before the migration, so no page of it is cached and the read
 * after it must reach the destination back-end with the migrated handle)
 * and `appended.txt` on fd 4 (append), looks up `other.txt` and lists
 * `listed/`, prints `HELD-OPEN`, then waits until the host types
 * {@linkcode MIGRATED_COMMAND} on the console. Then it reads fd 3
 * (`HELD-READ hash` or `HELD-ERROR message`), appends through fd 4, reads
 * `other.txt`, lists `listed/`, creates `created-after.txt` and unmounts.
 */
export function migrationScript(): string {
  return `${PRELUDE}
while read -r line; do
  case "$line" in ${MIGRATED_COMMAND}) : >/tmp/ctl-migrated ;; esac
done </dev/ttyS0 &
exec 3</mnt/held.bin || { echo "OPEN-FAILED held.bin"; exit 11; }
exec 4>>/mnt/appended.txt || { echo "OPEN-FAILED appended.txt"; exit 12; }
echo "before migration" >&4 || bad append-before
expect other-size-before "$(stat -c %s /mnt/other.txt)" ${OTHER_FILE_TEXT.length}
expect listed-count-before "$(ls /mnt/listed | wc -l)" ${LISTED_ENTRIES}
echo "HELD-OPEN"
while [ ! -e /tmp/ctl-migrated ]; do sleep 0.1; done
echo "RESUMED"
if cat <&3 >/tmp/held 2>/tmp/err; then
  echo "HELD-READ $(hash_of /tmp/held)"
else
  echo "HELD-ERROR $(cat /tmp/err)"
fi
exec 3<&-
echo "after migration" >&4 && ok append-after || bad append-after
exec 4>&-
expect other-read "$(cat /mnt/other.txt)" "${OTHER_FILE_TEXT.trimEnd()}"
expect listed-count "$(ls /mnt/listed | wc -l)" ${LISTED_ENTRIES}
echo "LISTED-HASH $(ls /mnt/listed | sort | hash_of)"
echo "${CREATED_AFTER_TEXT.trimEnd()}" >/mnt/created-after.txt || bad create-after
expect appended "$(cat /mnt/appended.txt)" "$(printf '${APPENDED_TEXT.replaceAll("\n", "\\n")}')"
umount /mnt || bad umount
echo "FAILURES $failures"
exit $failures
`;
}
