import assert from "node:assert/strict";
import { S_IFDIR, S_IFREG, type StatxResult } from "../../../../ffi/mod.ts";
import { bytes } from "../../../../tests/support/passthrough_fixture.ts";
import { InodeTable } from "./inode_table.ts";

/** A status for a made-up file; fds are -1 so nothing real is closed. */
function stat(ino: number, mode = S_IFDIR | 0o755): StatxResult {
  return {
    mode,
    nlink: 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    ino: BigInt(ino),
    dev: 7,
    size: 0,
    blocks: 0,
    blksize: 4096,
    atimeSec: 0,
    atimeNsec: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    ctimeSec: 0,
    ctimeNsec: 0,
  };
}

Deno.test("inodes are found by node id and identity; ids count up from 2", () => {
  const table = new InodeTable(-1, stat(100));
  assert.equal(table.root.nodeid, 1n);
  const a = table.insert(-1, stat(101), { parent: table.root, name: bytes("a") });
  assert.equal(a.nodeid, 2n);
  assert.equal(table.get(2n), a);
  assert.equal(table.find(7, 101n), a);
  assert.equal(table.find(8, 101n), undefined, "the device is part of the identity");
  assert.equal(a.type, S_IFDIR);
  assert.throws(() => table.insert(-1, stat(101), null), /already/);
  assert.throws(() => table.insert(-1, stat(102), null, 2n), /already/);
  const restored = table.insert(-1, stat(103), null, 50n);
  assert.equal(restored.nodeid, 50n);
  assert.equal(table.insert(-1, stat(104), null).nodeid, 51n, "ids continue past restored ones");
  table.reserveNodeids(100n);
  assert.equal(table.nextNodeid, 100n);
});

Deno.test("an inode lives while looked up, held, or the parent of a located inode", () => {
  const table = new InodeTable(-1, stat(1));
  const a = table.insert(-1, stat(2), { parent: table.root, name: bytes("a") });
  const b = table.insert(-1, stat(3), { parent: a, name: bytes("b") });
  const c = table.insert(-1, stat(4, S_IFREG | 0o644), { parent: b, name: bytes("c") });
  for (const inode of [a, b, c]) table.addLookups(inode);
  table.forget(a.nodeid, 1n);
  table.forget(b.nodeid, 1n);
  assert.equal(table.size, 4, "a and b stay as c's ancestors");
  assert.equal(a.refs, 1);
  table.hold(c);
  table.forget(c.nodeid, 10n);
  assert.equal(table.size, 4, "an open handle keeps c");
  table.release(c);
  assert.equal(table.size, 1, "c goes, then b, then a");
  assert.equal(table.get(a.nodeid), undefined);
  assert.equal(table.find(7, 2n), undefined);
  assert.equal(table.root.refs, 0);
  table.forget(1n, 5n);
  assert.equal(table.get(1n), table.root, "the root stays");
});

Deno.test("locations move parent references; loops are refused; clearLocationIf matches exactly", () => {
  const table = new InodeTable(-1, stat(1));
  const a = table.insert(-1, stat(2), { parent: table.root, name: bytes("a") });
  const b = table.insert(-1, stat(3), { parent: a, name: bytes("b") });
  table.addLookups(a);
  table.addLookups(b);
  // b moves to the root: a loses its child reference.
  table.setLocation(b, { parent: table.root, name: bytes("b2") });
  assert.equal(a.refs, 0);
  assert.equal(table.root.refs, 2);
  // a under b under a would be a loop: ignored.
  table.setLocation(b, { parent: a, name: bytes("b") });
  table.setLocation(a, { parent: b, name: bytes("a") });
  assert.equal(a.location?.parent, table.root, "the loop was refused");
  table.setLocation(a, { parent: a, name: bytes("self") });
  assert.equal(a.location?.parent, table.root);

  table.clearLocationIf(b, a, bytes("other"));
  assert.notEqual(b.location, null);
  table.clearLocationIf(b, table.root, bytes("b"));
  assert.notEqual(b.location, null, "another parent");
  table.clearLocationIf(b, a, bytes("b"));
  assert.equal(b.location, null);
  assert.equal(a.refs, 0);

  table.clear();
  assert.equal(table.size, 1);
  assert.equal(table.root.refs, 0);
});

Deno.test("broken placeholders keep node id and lookups, and are not found by identity", () => {
  const table = new InodeTable(-1, stat(1));
  const broken = table.insertBroken(9n, S_IFREG, 42n, 3n, "gone");
  assert.equal(table.get(9n), broken);
  assert.equal(broken.broken, "gone");
  assert.equal(table.find(-1, 42n), undefined);
  table.forget(9n, 3n);
  assert.equal(table.get(9n), undefined);
  assert.equal(table.nextNodeid, 10n);
});

Deno.test("locatedAt finds the inode recorded at exactly that name; moves and drops update it", () => {
  const table = new InodeTable(-1, stat(1));
  const a = table.insert(-1, stat(2), { parent: table.root, name: bytes("a") });
  const f = table.insert(-1, stat(3, S_IFREG | 0o644), { parent: a, name: bytes("f") });
  table.addLookups(f);
  assert.equal(table.locatedAt(table.root, bytes("a")), a);
  assert.equal(table.locatedAt(a, bytes("f")), f);
  assert.equal(table.locatedAt(table.root, bytes("f")), undefined, "another directory");
  assert.equal(table.locatedAt(a, bytes("ff")), undefined);
  assert.equal(table.locatedAt(f, bytes("f")), undefined, "nothing is located in a file");

  table.setLocation(f, { parent: table.root, name: bytes("g") });
  assert.equal(table.locatedAt(a, bytes("f")), undefined, "moved away");
  assert.equal(table.locatedAt(table.root, bytes("g")), f);
  table.clearLocationIf(f, table.root, bytes("g"));
  assert.equal(table.locatedAt(table.root, bytes("g")), undefined, "no known name");

  // Two inodes recorded under one name (the host replaced the file): the later one is the hint.
  table.setLocation(f, { parent: a, name: bytes("x") });
  const replacement = table.insert(-1, stat(4, S_IFREG | 0o644), { parent: a, name: bytes("x") });
  table.addLookups(replacement);
  assert.equal(table.locatedAt(a, bytes("x")), replacement);
  table.forget(replacement.nodeid, 1n);
  assert.equal(table.get(replacement.nodeid), undefined);
  assert.notEqual(table.locatedAt(a, bytes("x")), replacement, "a dropped inode is no hint");

  table.clear();
  assert.equal(table.locatedAt(table.root, bytes("a")), undefined, "cleared with the table");
});

Deno.test("identities that do not fit one number key are still told apart", () => {
  const table = new InodeTable(-1, stat(1));
  const big = { ...stat(0), ino: 0x1_0000_0001n, dev: 7 };
  const small = { ...stat(1), ino: 1n, dev: 8 };
  const wideDev = { ...stat(0), ino: 5n, dev: 0x10_0000 };
  const a = table.insert(-1, big, null);
  const b = table.insert(-1, small, null);
  const c = table.insert(-1, wideDev, null);
  assert.equal(table.find(7, 0x1_0000_0001n), a);
  assert.equal(table.find(8, 1n), b, "dev 8 ino 1 is not dev 7 ino 2^32 + 1");
  assert.equal(table.find(0x10_0000, 5n), c);
  assert.equal(table.find(0, 5n), undefined);
  assert.throws(() => table.insert(-1, { ...big }, null), /host file 7:4294967297 is already/);
});
