import assert from "node:assert/strict";
import { EBADF, ENOTDIR, O_RDONLY } from "../../../../ffi/mod.ts";
import { DirentType } from "../fuse/fuse_abi.ts";
import {
  decodeDirents,
  decodeDirentsPlus,
  type FuseDirentPlusValue,
  type FuseDirentValue,
} from "../fuse/fuse_reply_decode.ts";
import {
  assertFsErrno,
  bytes,
  makeShare,
  type Share,
  text,
} from "../../../../tests/support/passthrough_fixture.ts";
import type { PassthroughFs } from "./passthrough_fs.ts";

const ROOT = 1n;
const COUNT = 2000;

function fill(share: Share, count: number): Set<string> {
  const names = new Set<string>();
  for (let i = 0; i < count; i++) {
    const name = `entry-${i.toString().padStart(5, "0")}${"x".repeat(i % 37)}`;
    Deno.writeTextFileSync(`${share.path}/${name}`, "");
    names.add(name);
  }
  return names;
}

/** Window sizes that vary so page boundaries fall everywhere. */
function windowSize(call: number, plus: boolean): number {
  const base = plus ? 400 : 96;
  return base + (call * 53) % (plus ? 700 : 300);
}

/** Lists a whole directory page by page; returns the records in order. */
function listAll(fs: PassthroughFs, fh: bigint, nodeid: bigint, plus: false): FuseDirentValue[];
function listAll(
  fs: PassthroughFs,
  fh: bigint,
  nodeid: bigint,
  plus: true,
): FuseDirentPlusValue[];
function listAll(
  fs: PassthroughFs,
  fh: bigint,
  nodeid: bigint,
  plus: boolean,
): (FuseDirentValue | FuseDirentPlusValue)[] {
  const all: (FuseDirentValue | FuseDirentPlusValue)[] = [];
  let offset = 0n;
  for (let call = 0;; call++) {
    const size = windowSize(call, plus);
    const payload = fs.readdir(nodeid, fh, offset, size, plus);
    assert.ok(payload.length <= size, `reply of ${payload.length} bytes for size ${size}`);
    if (payload.length === 0) break;
    if (plus) {
      const records = decodeDirentsPlus(payload);
      all.push(...records);
      offset = records[records.length - 1].dirent.off;
    } else {
      const records = decodeDirents(payload);
      all.push(...records);
      offset = records[records.length - 1].off;
    }
    assert.ok(call < 10 * COUNT, "the listing ends");
  }
  return all;
}

function assertExactlyOnce(listed: string[], expected: Set<string>): void {
  const counts = new Map<string, number>();
  for (const name of listed) counts.set(name, (counts.get(name) ?? 0) + 1);
  for (const [name, count] of counts) assert.equal(count, 1, `"${name}" listed ${count} times`);
  assert.deepEqual(new Set(listed), new Set([...expected, ".", ".."]));
}

Deno.test("readdir of 2,000 entries through many small windows lists every name exactly once", () => {
  using share = makeShare();
  const { fs } = share;
  const names = fill(share, COUNT);
  const { fh } = fs.opendir(ROOT, O_RDONLY);
  const records = listAll(fs, fh, ROOT, false);
  assertExactlyOnce(records.map((r) => text(r.name)), names);
  for (const record of records) {
    if (record.name.length > 2) {
      assert.equal(record.type, DirentType.REG);
      const ino = BigInt(Deno.lstatSync(`${share.path}/${text(record.name)}`).ino!);
      assert.equal(record.ino, ino, "d_ino is the host inode number");
    }
  }
  assert.equal(fs.counts().inodes, 1, "plain READDIR looks nothing up");

  // Offset 0 on the same handle rewinds; a remembered offset resumes after its entry.
  const again = listAll(fs, fh, ROOT, false);
  assert.deepEqual(again.map((r) => text(r.name)), records.map((r) => text(r.name)));
  const middle = records[1000];
  const tail = decodeDirents(fs.readdir(ROOT, fh, middle.off, 4096, false));
  assert.equal(text(tail[0].name), text(records[1001].name));

  // A second handle starts at the beginning, independent of the first.
  const second = fs.opendir(ROOT, O_RDONLY);
  const first = decodeDirents(fs.readdir(ROOT, second.fh, 0n, 4096, false));
  assert.equal(text(first[0].name), text(records[0].name));
  fs.releasedir(second.fh);
  fs.releasedir(fh);
});

Deno.test("READDIRPLUS adds exactly one lookup per entry sent and leaks none at page ends", () => {
  using share = makeShare();
  const { fs } = share;
  const names = fill(share, COUNT);
  Deno.mkdirSync(`${share.path}/subdir`);
  names.add("subdir");
  const { fh } = fs.opendir(ROOT, O_RDONLY);
  const records = listAll(fs, fh, ROOT, true);
  assertExactlyOnce(records.map((r) => text(r.dirent.name)), names);
  let looked = 0;
  for (const { entryOut, dirent } of records) {
    const name = text(dirent.name);
    if (name === "." || name === "..") {
      assert.equal(entryOut.nodeid, 0n, `"${name}" is sent without a node id`);
      continue;
    }
    looked++;
    assert.notEqual(entryOut.nodeid, 0n);
    assert.equal(fs.inodeInfo(entryOut.nodeid)?.lookups, 1n, `one lookup for "${name}"`);
    assert.equal(entryOut.attr.ino, dirent.ino);
    assert.equal(entryOut.entryValid, 1n);
    if (name === "subdir") assert.equal(dirent.type, DirentType.DIR);
  }
  assert.equal(looked, names.size);
  assert.equal(fs.counts().inodes, names.size + 1, "no inode beyond those sent");
  // Each sent entry is the same inode a LOOKUP finds.
  const sample = records.find((r) => text(r.dirent.name) === "entry-00007xxxxxxx")!;
  assert.equal(fs.lookup(ROOT, bytes("entry-00007xxxxxxx")).nodeid, sample.entryOut.nodeid);
  fs.forget(sample.entryOut.nodeid, 1n);
  for (const { entryOut } of records) if (entryOut.nodeid !== 0n) fs.forget(entryOut.nodeid, 1n);
  assert.equal(fs.counts().inodes, 1, "forgetting each entry once frees everything");
  fs.releasedir(fh);
});

Deno.test("READDIRPLUS of known names writes what the first listing did, counting each entry again", () => {
  using share = makeShare();
  const { fs } = share;
  const names = fill(share, 300);
  Deno.mkdirSync(`${share.path}/subdir`);
  Deno.symlinkSync("entry-00001x", `${share.path}/link`);
  names.add("subdir").add("link");
  const { fh } = fs.opendir(ROOT, O_RDONLY);
  // The first listing adopts every name (entry objects); the second finds each
  // inode recorded where it is listed and writes its entry from one statx.
  const pages = (): Uint8Array[] => {
    const all: Uint8Array[] = [];
    let offset = 0n;
    for (let call = 0;; call++) {
      assert.ok(call < 1000, "the listing ends");
      const payload = fs.readdir(ROOT, fh, offset, windowSize(call, true), true);
      if (payload.length === 0) return all;
      all.push(payload.slice());
      const records = decodeDirentsPlus(payload);
      offset = records[records.length - 1].dirent.off;
    }
  };
  const first = pages();
  assert.equal(fs.counts().inodes, names.size + 1);
  const second = pages();
  assert.deepEqual(second, first, "byte for byte, page for page");
  const records = first.flatMap((page) => decodeDirentsPlus(page));
  assertExactlyOnce(records.map((r) => text(r.dirent.name)), names);
  for (const { entryOut, dirent } of records) {
    if (entryOut.nodeid === 0n) continue;
    assert.equal(
      fs.inodeInfo(entryOut.nodeid)?.lookups,
      2n,
      `"${text(dirent.name)}" counted twice`,
    );
  }
  // A name the host replaced since: the new file's inode, as LOOKUP finds it.
  const old = records.find((r) => text(r.dirent.name) === "entry-00002xx")!;
  Deno.renameSync(`${share.path}/entry-00003xxx`, `${share.path}/entry-00002xx`);
  names.delete("entry-00003xxx");
  const third = pages().flatMap((page) => decodeDirentsPlus(page));
  const now = third.find((r) => text(r.dirent.name) === "entry-00002xx")!;
  assert.notEqual(now.entryOut.nodeid, old.entryOut.nodeid);
  assert.equal(fs.lookup(ROOT, bytes("entry-00002xx")).nodeid, now.entryOut.nodeid);
  assert.equal(now.entryOut.attr.ino, now.dirent.ino);
  // Every reference taken is given back by forgetting each entry as often as it was sent.
  fs.forget(now.entryOut.nodeid, 1n);
  for (const { entryOut } of [...records, ...records, ...third]) {
    if (entryOut.nodeid !== 0n) fs.forget(entryOut.nodeid, 1n);
  }
  assert.equal(fs.counts().inodes, 1);
  fs.releasedir(fh);
});

Deno.test("READDIRPLUS: windows of one record: lookups always match the entries sent", () => {
  using share = makeShare();
  const { fs } = share;
  const names = fill(share, 30);
  const { fh } = fs.opendir(ROOT, O_RDONLY);
  // No record fits in 150 bytes (a direntplus record is at least 160).
  assert.equal(fs.readdir(ROOT, fh, 0n, 150, true).length, 0);
  assert.equal(fs.counts().inodes, 1, "nothing looked up for an entry that did not fit");
  // 300 bytes fit one record, never two: every page sends exactly one.
  let offset = 0n;
  let sent = 0;
  const listed: string[] = [];
  for (;;) {
    const page = decodeDirentsPlus(fs.readdir(ROOT, fh, offset, 300, true));
    if (page.length === 0) break;
    assert.equal(page.length, 1);
    const name = text(page[0].dirent.name);
    listed.push(name);
    if (name !== "." && name !== "..") sent++;
    assert.equal(fs.counts().inodes, 1 + sent, `after "${name}"`);
    offset = page[0].dirent.off;
  }
  assertExactlyOnce(listed, names);
  fs.releasedir(fh);
});

Deno.test("READDIRPLUS skips entries removed after they were listed", () => {
  using share = makeShare();
  const { fs } = share;
  const names = fill(share, 200);
  const { fh } = fs.opendir(ROOT, O_RDONLY);
  const firstPage = decodeDirentsPlus(fs.readdir(ROOT, fh, 0n, 2000, true));
  const seen = new Set(firstPage.map((r) => text(r.dirent.name)));
  // The host removes 20 entries not sent yet (they may already sit in vhostd's buffer).
  const removed = [...names].filter((name) => !seen.has(name)).slice(0, 20);
  for (const name of removed) {
    Deno.removeSync(`${share.path}/${name}`);
    names.delete(name);
  }
  let offset = firstPage[firstPage.length - 1].dirent.off;
  const rest: string[] = [];
  for (;;) {
    const page = decodeDirentsPlus(fs.readdir(ROOT, fh, offset, 3000, true));
    if (page.length === 0) break;
    rest.push(...page.map((r) => text(r.dirent.name)));
    offset = page[page.length - 1].dirent.off;
  }
  assertExactlyOnce([...seen, ...rest], names);
  for (const name of removed) assert.ok(!rest.includes(name), `removed "${name}" not sent`);
  assert.equal(fs.counts().inodes, 1 + names.size, "no lookups for removed entries");
  fs.releasedir(fh);
});

Deno.test("readdir refuses file handles and unknown handles", () => {
  using share = makeShare();
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/f`, "");
  const f = fs.lookup(ROOT, bytes("f"));
  const file = fs.open(f.nodeid, O_RDONLY);
  assertFsErrno(() => fs.readdir(f.nodeid, file.fh, 0n, 4096, false), ENOTDIR);
  assertFsErrno(() => fs.readdir(ROOT, 4242n, 0n, 4096, false), EBADF);
  assertFsErrno(() => fs.opendir(f.nodeid, O_RDONLY), ENOTDIR);
  const dir = fs.opendir(ROOT, O_RDONLY);
  assertFsErrno(() => fs.readdir(f.nodeid, dir.fh, 0n, 4096, false), EBADF, "wrong node id");
  fs.releasedir(dir.fh);
  assertFsErrno(() => fs.readdir(ROOT, dir.fh, 0n, 4096, false), EBADF, "released");
});

Deno.test("a page built in the reused page buffer holds only its own records", () => {
  using share = makeShare();
  const { fs } = share;
  fill(share, 50);
  Deno.mkdirSync(`${share.path}/small`);
  Deno.writeTextFileSync(`${share.path}/small/a`, "");
  const big = fs.opendir(ROOT, O_RDONLY);
  const full = fs.readdir(ROOT, big.fh, 0n, 8192, true).slice();
  assert.ok(decodeDirentsPlus(full).length > 10);
  const small = fs.lookup(ROOT, bytes("small")).nodeid;
  const { fh } = fs.opendir(small, O_RDONLY);
  const page = fs.readdir(small, fh, 0n, 8192, true);
  const records = decodeDirentsPlus(page);
  assert.deepEqual(records.map((r) => text(r.dirent.name)).sort(), [".", "..", "a"]);
  // Three records and nothing else: no tail of the bigger page before it.
  const length = records.reduce(
    (sum, r) => sum + Math.ceil((152 + r.dirent.name.length) / 8) * 8,
    0,
  );
  assert.equal(page.length, length);
  const plain = fs.readdir(small, fh, 0n, 8192, false);
  assert.deepEqual(decodeDirents(plain).map((r) => text(r.name)).sort(), [".", "..", "a"]);
});
