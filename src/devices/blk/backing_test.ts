import assert from "node:assert/strict";
import {
  closeQuietly,
  fstat,
  getStatusFlags,
  O_ACCMODE,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  pread,
  pwrite,
} from "../../../ffi/mod.ts";
import { type Backing, BackingError, closeBacking, openBacking } from "./backing.ts";

/** Fds of this process open on `path` (a leak check other threads cannot disturb). */
function fdsOpenOn(path: string): number[] {
  const found: number[] = [];
  for (const entry of [...Deno.readDirSync("/proc/self/fd")]) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`) === path) found.push(Number(entry.name));
    } catch {
      // Closed since the listing.
    }
  }
  return found;
}

function withTempDir(body: (dir: string) => void): () => void {
  return () => {
    const dir = Deno.makeTempDirSync({ prefix: "vhostd-backing-test-" });
    try {
      body(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  };
}

function expectBackingError(open: () => Backing, pattern: RegExp, path?: string): void {
  assert.throws(open, (e) => {
    assert.ok(e instanceof BackingError, `expected BackingError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
  if (path !== undefined) assert.deepEqual(fdsOpenOn(path), [], `an fd on ${path} was leaked`);
}

Deno.test("RAM backing: a zero-filled memfd of the requested size", () => {
  const backing = openBacking({ kind: "ram", size: 1 << 20, readOnly: false });
  try {
    assert.equal(backing.kind, "ram");
    assert.equal(backing.size, 1 << 20);
    assert.equal(backing.readOnly, false);
    assert.equal(fstat(backing.fd).size, 1 << 20);
    const buf = new Uint8Array(512).fill(1);
    assert.equal(pread(backing.fd, buf, (1 << 20) - 512), 512);
    assert.deepEqual(buf, new Uint8Array(512));
    assert.equal(pwrite(backing.fd, Uint8Array.of(7), 0), 1);
  } finally {
    closeQuietly(backing.fd);
  }
});

Deno.test("RAM backing: sizes that are zero, negative or not whole sectors are refused", () => {
  for (const size of [0, -512, 1, 511, 513, 1000, 1.5 * 512, Number.NaN, 2 ** 60]) {
    expectBackingError(
      () => openBacking({ kind: "ram", size, readOnly: false }),
      /positive multiple of 512/,
    );
  }
});

Deno.test(
  "file backing: a missing file gives a readable BackingError",
  withTempDir((dir) => {
    const path = `${dir}/missing.img`;
    expectBackingError(
      () => openBacking({ kind: "file", path, readOnly: false }),
      new RegExp(`cannot open image ${path}: .*(No such file|ENOENT)`),
    );
    expectBackingError(
      () => openBacking({ kind: "file", path, readOnly: true }),
      /ENOENT/,
    );
  }),
);

Deno.test(
  "file backing: a directory is refused whichever the mode",
  withTempDir((dir) => {
    // Read-write open fails in the kernel (EISDIR); read-only opens and is refused after fstat.
    expectBackingError(
      () => openBacking({ kind: "file", path: dir, readOnly: false }),
      new RegExp(dir),
      dir,
    );
    expectBackingError(
      () => openBacking({ kind: "file", path: dir, readOnly: true }),
      /not a regular file/,
      dir,
    );
  }),
);

Deno.test(
  "file backing: a trailing partial sector is not part of the disk",
  withTempDir((dir) => {
    const path = `${dir}/odd.img`;
    Deno.writeFileSync(path, new Uint8Array(3 * 512 + 100));
    const backing = openBacking({ kind: "file", path, readOnly: false });
    try {
      assert.equal(backing.size, 3 * 512);
      assert.equal(backing.kind, "file");
      assert.equal(backing.path, path);
    } finally {
      closeQuietly(backing.fd);
    }
    // Less than one sector is no disk at all.
    Deno.writeFileSync(path, new Uint8Array(511));
    expectBackingError(
      () => openBacking({ kind: "file", path, readOnly: false }),
      /smaller than one 512-byte sector/,
      path,
    );
    Deno.writeFileSync(path, new Uint8Array(0));
    expectBackingError(
      () => openBacking({ kind: "file", path, readOnly: true }),
      /smaller than one/,
      path,
    );
  }),
);

Deno.test(
  "file backing: read-only opens O_RDONLY, writable opens O_RDWR",
  withTempDir((dir) => {
    const path = `${dir}/disk.img`;
    Deno.writeFileSync(path, new Uint8Array(4096).fill(3));
    const ro = openBacking({ kind: "file", path, readOnly: true });
    try {
      assert.equal(ro.readOnly, true);
      assert.equal(getStatusFlags(ro.fd) & O_ACCMODE, O_RDONLY);
      assert.throws(() => pwrite(ro.fd, Uint8Array.of(1), 0));
    } finally {
      closeQuietly(ro.fd);
    }
    const rw = openBacking({ kind: "file", path, readOnly: false });
    try {
      assert.equal(rw.readOnly, false);
      assert.equal(getStatusFlags(rw.fd) & O_ACCMODE, O_RDWR);
      assert.equal(rw.size, 4096);
    } finally {
      closeQuietly(rw.fd);
    }
    // A file without write permission can still be served read-only (root ignores modes).
    Deno.chmodSync(path, 0o444);
    const again = openBacking({ kind: "file", path, readOnly: true });
    closeQuietly(again.fd);
  }),
);

Deno.test("file backing with cache none: O_DIRECT with the file system's alignment", () => {
  // /var/tmp: a disk file system on most machines (tmpfs would not exercise O_DIRECT).
  const dir = Deno.makeTempDirSync({ dir: "/var/tmp", prefix: "vhostd-backing-test-" });
  try {
    const path = `${dir}/direct.img`;
    Deno.writeFileSync(path, new Uint8Array(8192));
    let backing: Backing;
    try {
      backing = openBacking({ kind: "file", path, readOnly: false, cache: "none" });
    } catch (e) {
      // The refusal must then be the one-line file-system message.
      assert.ok(e instanceof BackingError);
      assert.match(e.message, /cannot use --cache none on .*: its file system \(/);
      console.log(`O_DIRECT not available in /var/tmp: ${e.message}`);
      return;
    }
    try {
      assert.ok(backing.direct, "no direct-I/O description");
      assert.ok((getStatusFlags(backing.fd) & O_DIRECT) !== 0, "fd without O_DIRECT");
      assert.ok(backing.direct.memAlign >= 1 && backing.direct.offsetAlign >= 1);
      // The buffered fallback fd exists only when the offset alignment is above a sector.
      assert.equal(backing.direct.bufferedFd >= 0, backing.direct.offsetAlign > 512);
      assert.deepEqual(
        fdsOpenOn(path),
        [backing.fd, backing.direct.bufferedFd].filter((fd) => fd >= 0).sort((a, b) => a - b),
      );
    } finally {
      closeBacking(backing);
    }
    assert.deepEqual(fdsOpenOn(path), [], "closeBacking left an fd open");
    // Writeback (the default) does not use O_DIRECT.
    const buffered = openBacking({ kind: "file", path, readOnly: false });
    assert.equal(getStatusFlags(buffered.fd) & O_DIRECT, 0);
    assert.equal(buffered.direct, undefined);
    closeBacking(buffered);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("file backing with cache none: a file system that refuses O_DIRECT is named", () => {
  // sysfs files are regular files of 4096 bytes whose open refuses O_DIRECT.
  const path = "/sys/kernel/mm/transparent_hugepage/enabled";
  try {
    Deno.statSync(path);
  } catch {
    console.log(`${path} missing: test skipped`);
    return;
  }
  expectBackingError(
    () => openBacking({ kind: "file", path, readOnly: true, cache: "none" }),
    /^cannot use --cache none on .*enabled: its file system \(sysfs\) refuses O_DIRECT \(EINVAL\); use --cache writeback$/,
    path,
  );
});
