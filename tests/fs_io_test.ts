/**
 * virtio-fs over a real socket: a `vhostd fs` process, the TypeScript
 * driver, memfd guest memory. INIT, file I/O of 1 byte to 1 MiB through
 * split and indirect descriptors, a 2,000-entry directory listed completely
 * with READDIR and READDIRPLUS, the name operations, and host errnos.
 */

import assert from "node:assert/strict";
import {
  EEXIST,
  EINVAL,
  ENOENT,
  ENOTDIR,
  ENOTEMPTY,
  O_CREAT,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
} from "../ffi/mod.ts";
import { FS_CONFIG_SIZE } from "../src/devices/fs/fs_spec.ts";
import { DirentType, FuseInitFlag } from "../src/devices/fs/fuse/mod.ts";
import { errnoOf, FsFixture, pattern, withVhostdFs } from "./support/fs_fixture.ts";

const ROOT = 1n;
const MiB = 2 ** 20;
const dec = new TextDecoder();

Deno.test("fs: INIT, the configuration space, and a file written and read back at every size", async () => {
  await withVhostdFs(["--tag", "io-tag", "--num-request-queues", "2"], (vhostd, dirs) => {
    using fx = FsFixture.open(vhostd.socketPath, { init: false, numRequestQueues: 2 });
    const d = fx.driver;
    assert.deepEqual(d.config, { tag: "io-tag", numRequestQueues: 2 });
    assert.equal(fx.client.getConfig(0, FS_CONFIG_SIZE).length, FS_CONFIG_SIZE);
    const init = d.init();
    assert.equal(init.major, 7);
    assert.ok(init.minor >= 31, `minor ${init.minor}`);
    assert.ok(init.maxWrite >= 128 * 1024, `max_write ${init.maxWrite}`);
    assert.ok(init.flags & FuseInitFlag.DO_READDIRPLUS, "READDIRPLUS accepted");
    assert.equal(init.flags & FuseInitFlag.WRITEBACK_CACHE, 0, "no writeback cache");

    const { entry, open } = d.create(ROOT, "data.bin", O_RDWR | O_CREAT | O_EXCL, 0o640);
    assert.ok(entry.nodeid > 1n);
    assert.equal(entry.attr.mode & 0o7777, 0o640);
    const sizes = [1, 511, 4096, 65_537, 300_001, MiB];
    let offset = 0;
    for (const [i, size] of sizes.entries()) {
      const data = pattern(size, i + 1);
      // Alternate the request queue, the segment counts and the queue of the read.
      const written = d.write(open.fh, BigInt(offset), data, {
        requestSegments: 1 + (i % 4) * 5,
        queue: 1 + (i % 2),
      });
      assert.equal(written, size);
      const back = d.read(open.fh, BigInt(offset), size, {
        replySegments: 1 + ((i + 1) % 4) * 7,
        queue: 2 - (i % 2),
      });
      assert.equal(back.length, size, `read of ${size}`);
      assert.ok(back.every((b, j) => b === data[j]), `data of ${size} bytes read back`);
      offset += size;
    }
    // The host file holds exactly the same bytes.
    const host = Deno.readFileSync(`${dirs.share}/data.bin`);
    assert.equal(host.length, offset);
    let at = 0;
    for (const [i, size] of sizes.entries()) {
      assert.deepEqual(host.subarray(at, at + size), pattern(size, i + 1), `host bytes at ${at}`);
      at += size;
    }
    assert.equal(d.getattr(entry.nodeid, open.fh).attr.size, BigInt(offset));
    // Reading past the end is short, not an error.
    assert.equal(d.read(open.fh, BigInt(offset - 10), 4096).length, 10);
    assert.equal(d.read(open.fh, BigInt(offset + 10), 4096).length, 0);
    d.flush(open.fh);
    d.fsync(open.fh, true);
    d.release(open.fh);
    // A file written on the host is seen through a fresh lookup.
    Deno.writeFileSync(`${dirs.share}/from-host.txt`, new TextEncoder().encode("host side"));
    const fromHost = d.lookup(ROOT, "from-host.txt");
    const handle = d.open(fromHost.nodeid, O_RDONLY);
    assert.equal(dec.decode(d.read(handle.fh, 0n, 100)), "host side");
    d.release(handle.fh);
  });
});

Deno.test("fs: indirect descriptors and event index carry the same I/O", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    using fx = FsFixture.open(vhostd.socketPath, { indirect: true, eventIdx: true });
    const d = fx.driver;
    const { open } = d.create(ROOT, "ind", O_RDWR | O_CREAT, 0o600);
    const data = pattern(200_000, 9);
    assert.equal(d.write(open.fh, 0n, data, { requestSegments: 33 }), data.length);
    assert.deepEqual(d.read(open.fh, 0n, data.length, { replySegments: 17 }), data);
    d.release(open.fh);
    assert.deepEqual(Deno.readFileSync(`${dirs.share}/ind`), data);
  });
});

Deno.test("fs: a 2,000-entry directory is listed completely by READDIR and READDIRPLUS", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    const dir = d.mkdir(ROOT, "many", 0o755);
    assert.equal(dir.attr.mode & 0o170000, 0o040000);
    const expected = new Set<string>();
    // Half created through the device, half on the host directly.
    for (let i = 0; i < 1000; i++) {
      const name = `f-${String(i).padStart(4, "0")}-${"x".repeat(i % 40)}`;
      const { entry, open } = d.create(dir.nodeid, name, O_WRONLY | O_CREAT | O_EXCL, 0o644);
      d.release(open.fh);
      d.forget(entry.nodeid, 1n);
      expected.add(name);
    }
    for (let i = 0; i < 1000; i++) {
      const name = `h-${i}`;
      Deno.mkdirSync(`${dirs.share}/many/${name}`);
      expected.add(name);
    }
    for (const plus of [false, true]) {
      // Small buffers: many round trips, each resuming from the last offset.
      const entries = d.listDirectory(dir.nodeid, plus, plus ? 4096 : 2048);
      const names = entries.map((e) => dec.decode(e.name));
      const real = names.filter((n) => n !== "." && n !== "..");
      assert.equal(real.length, 2000, `${plus ? "READDIRPLUS" : "READDIR"}: ${real.length}`);
      assert.equal(new Set(real).size, 2000, "no entry twice");
      assert.deepEqual(new Set(real), expected);
      for (const e of entries) {
        const name = dec.decode(e.name);
        if (name.startsWith("f-")) assert.equal(e.type, DirentType.REG, name);
        if (name.startsWith("h-")) assert.equal(e.type, DirentType.DIR, name);
      }
    }
    // READDIRPLUS entries carry real lookups: their node ids work.
    const { fh } = d.opendir(dir.nodeid);
    const batch = d.readdirplus(dir.nodeid, fh, 0n, 8192).filter((e) => e.entryOut.nodeid !== 0n);
    assert.ok(batch.length > 0);
    for (const e of batch) {
      const name = dec.decode(e.dirent.name);
      if (name === "." || name === "..") continue;
      assert.equal(d.getattr(e.entryOut.nodeid).attr.ino, e.entryOut.attr.ino, name);
      d.forget(e.entryOut.nodeid, 1n);
    }
    d.releasedir(fh);
  });
});

Deno.test("fs: rename, unlink, rmdir, symlink, readlink, link, chmod and truncate change the host", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    const s = dirs.share;
    const sub = d.mkdir(ROOT, "sub", 0o750);
    assert.equal(Deno.statSync(`${s}/sub`).mode! & 0o777, 0o750);
    const { entry: file, open } = d.create(sub.nodeid, "a.txt", O_RDWR | O_CREAT, 0o644);
    d.write(open.fh, 0n, new TextEncoder().encode("0123456789"));
    d.release(open.fh);

    d.rename(sub.nodeid, "a.txt", ROOT, "b.txt");
    assert.equal(Deno.readTextFileSync(`${s}/b.txt`), "0123456789");
    assert.throws(() => Deno.statSync(`${s}/sub/a.txt`), Deno.errors.NotFound);
    assert.equal(d.lookup(ROOT, "b.txt").nodeid, file.nodeid, "the same inode after rename");

    const linked = d.link(file.nodeid, sub.nodeid, "hard");
    assert.equal(linked.attr.nlink, 2);
    assert.equal(Deno.statSync(`${s}/sub/hard`).ino, Deno.statSync(`${s}/b.txt`).ino);

    const sym = d.symlink(ROOT, "sym", "sub/hard");
    assert.equal(sym.attr.mode & 0o170000, 0o120000);
    assert.equal(Deno.readLinkSync(`${s}/sym`), "sub/hard");
    assert.equal(dec.decode(d.readlink(sym.nodeid)), "sub/hard");

    const chmodded = d.setattr(file.nodeid, { mode: 0o600 });
    assert.equal(chmodded.attr.mode & 0o7777, 0o600);
    assert.equal(Deno.statSync(`${s}/b.txt`).mode! & 0o7777, 0o600);
    const truncated = d.setattr(file.nodeid, { size: 4n });
    assert.equal(truncated.attr.size, 4n);
    assert.equal(Deno.readTextFileSync(`${s}/b.txt`), "0123");
    const extended = d.setattr(file.nodeid, { size: 100_000n });
    assert.equal(Deno.statSync(`${s}/b.txt`).size, 100_000);
    assert.equal(extended.attr.size, 100_000n);
    const when = { sec: 1_000_000_000n, nsec: 5 };
    d.setattr(file.nodeid, { mtime: when, atime: when });
    assert.equal(Deno.statSync(`${s}/b.txt`).mtime?.getTime(), 1_000_000_000_000);

    // O_TRUNC through OPEN.
    const again = d.open(file.nodeid, O_RDWR | O_TRUNC);
    assert.equal(Deno.statSync(`${s}/b.txt`).size, 0);
    d.release(again.fh);

    d.unlink(sub.nodeid, "hard");
    d.unlink(ROOT, "sym");
    assert.throws(() => Deno.lstatSync(`${s}/sym`), Deno.errors.NotFound);
    d.unlink(ROOT, "b.txt");
    d.rmdir(ROOT, "sub");
    assert.deepEqual([...Deno.readDirSync(s)], []);
    const st = d.statfs();
    assert.ok(st.blocks > 0n && st.namelen >= 255, JSON.stringify(st, (_, v) => `${v}`));
  });
});

Deno.test("fs: failures are the host's errnos", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    assert.equal(errnoOf(() => d.lookup(ROOT, "missing")), ENOENT);
    const dir = d.mkdir(ROOT, "d");
    assert.equal(errnoOf(() => d.mkdir(ROOT, "d")), EEXIST);
    const { open } = d.create(dir.nodeid, "f", O_WRONLY | O_CREAT, 0o644);
    d.release(open.fh);
    assert.equal(errnoOf(() => d.create(dir.nodeid, "f", O_WRONLY | O_CREAT | O_EXCL)), EEXIST);
    assert.equal(errnoOf(() => d.rmdir(ROOT, "d")), ENOTEMPTY);
    assert.equal(errnoOf(() => d.unlink(ROOT, "nothing")), ENOENT);
    assert.equal(errnoOf(() => d.rename(ROOT, "nothing", ROOT, "x")), ENOENT);
    const f = d.lookup(dir.nodeid, "f");
    assert.equal(errnoOf(() => d.lookup(f.nodeid, "below-a-file")), ENOTDIR);
    d.mkdir(ROOT, "d2");
    assert.equal(errnoOf(() => d.rename(ROOT, "d", ROOT, "d2", 1 /* RENAME_NOREPLACE */)), EEXIST);
    assert.equal(errnoOf(() => d.readlink(f.nodeid)), EINVAL);
    // Nothing of that changed the host.
    assert.deepEqual([...Deno.readDirSync(dirs.share)].map((e) => e.name).sort(), ["d", "d2"]);
  });
});
