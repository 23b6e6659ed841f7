import assert from "node:assert/strict";
import { AT_FDCWD, EIO, nameToHandleAt, O_RDONLY } from "../../../../ffi/mod.ts";
import { toHex } from "./fs_names.ts";
import {
  assertFsErrno,
  bytes,
  makeShare,
  readAll,
  rootTest,
  type Share,
} from "../../../../tests/support/passthrough_fixture.ts";
import { FsRestoreError, type FsSnapshot, PassthroughFs } from "./passthrough_fs.ts";

const ROOT = 1n;
function viaJson(snapshot: FsSnapshot): FsSnapshot {
  return JSON.parse(JSON.stringify(snapshot));
}

function destination(share: Share, onError: "abort" | "guest-error"): PassthroughFs {
  return new PassthroughFs({ sharedDir: share.path, readOnly: false, migrationOnError: onError });
}

/**
 * The guest holds `gone` open (then unlinked on the host) and knows `moved`
 * (then renamed on the host): neither can be found by its recorded path.
 */
function holdLostFiles(share: Share): { gone: bigint; goneFh: bigint; moved: bigint } {
  const { fs } = share;
  Deno.writeTextFileSync(`${share.path}/gone`, "still open");
  Deno.writeTextFileSync(`${share.path}/moved`, "moved behind the guest");
  const gone = fs.lookup(ROOT, bytes("gone")).nodeid;
  const goneFh = fs.open(gone, O_RDONLY).fh;
  const moved = fs.lookup(ROOT, bytes("moved")).nodeid;
  Deno.removeSync(`${share.path}/gone`);
  Deno.renameSync(`${share.path}/moved`, `${share.path}/elsewhere`);
  return { gone, goneFh, moved };
}

rootTest(
  "file-handles: an unlinked open file and a file renamed on the host migrate by handle",
  () => {
    using share = makeShare({ migrationMode: "file-handles" });
    const held = holdLostFiles(share);
    const snapshot = viaJson(share.fs.snapshot());
    assert.ok(snapshot.inodes.every((record) => typeof record.handle === "string"));
    const fs = destination(share, "abort");
    try {
      assert.deepEqual(fs.restore(snapshot).errors, []);
      assert.equal(readAll(fs, held.goneFh), "still open");
      assert.equal(fs.getattr(held.moved).attr.size, "moved behind the guest".length);
      // The renamed file is still known under its old recorded name.
      assert.equal(fs.inodeInfo(held.moved)!.name?.length, "moved".length);
    } finally {
      fs.close();
    }
  },
);

rootTest("find-paths (the default): the same files cannot be restored", () => {
  using share = makeShare();
  const held = holdLostFiles(share);
  const snapshot = viaJson(share.fs.snapshot());
  assert.ok(snapshot.inodes.every((record) => record.handle === undefined));
  const strict = destination(share, "abort");
  try {
    assert.throws(() => strict.restore(snapshot), FsRestoreError);
  } finally {
    strict.close();
  }
  const lenient = destination(share, "guest-error");
  try {
    assert.equal(lenient.restore(snapshot).errors.length, 3, "two inodes and the handle");
    assertFsErrno(() => lenient.getattr(held.moved), EIO, "getattr of the lost file");
  } finally {
    lenient.close();
  }
});

rootTest("a handle naming a file outside the shared directory is refused", () => {
  using share = makeShare({ migrationMode: "file-handles" });
  Deno.writeTextFileSync(`${share.path}/decoy`, "decoy");
  const decoy = share.fs.lookup(ROOT, bytes("decoy")).nodeid;
  const snapshot = viaJson(share.fs.snapshot());
  // A forged record: the outside file's handle, type and inode number, under a name that is gone.
  const secret = Deno.statSync(`${share.outside}/secret`);
  const record = snapshot.inodes.find((r) => r.nodeid === decoy.toString())!;
  record.handle = toHex(nameToHandleAt(AT_FDCWD, `${share.outside}/secret`, 0).handle);
  record.ino = String(secret.ino);
  Deno.removeSync(`${share.path}/decoy`);
  const fs = destination(share, "guest-error");
  try {
    const { errors } = fs.restore(snapshot);
    assert.equal(errors.length, 1, errors.join("\n"));
    assertFsErrno(() => fs.getattr(decoy), EIO, "getattr of the forged inode");
  } finally {
    fs.close();
  }
});

Deno.test("a malformed handle in a snapshot is refused as malformed", () => {
  using share = makeShare({ migrationMode: "file-handles" });
  Deno.writeTextFileSync(`${share.path}/a`, "a");
  share.fs.lookup(ROOT, bytes("a"));
  const snapshot = viaJson(share.fs.snapshot());
  for (const bad of ["zz", "00", "0".repeat(2 * 200)]) {
    snapshot.inodes[0].handle = bad;
    const fs = destination(share, "guest-error");
    try {
      assert.throws(() => fs.restore(snapshot), /handle is not a file handle/);
    } finally {
      fs.close();
    }
  }
});

Deno.test("an unknown migrationMode is refused", () => {
  assert.throws(
    () => makeShare({ migrationMode: "teleport" as "find-paths" }),
    /find-paths or file-handles/,
  );
});
