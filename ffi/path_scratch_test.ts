import assert from "node:assert/strict";
import { fstatat, openat, unlinkat } from "./fs.ts";
import { closeQuietly } from "./fd.ts";
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_PATH,
  O_RDWR,
} from "./constants.ts";
import { scratchPath } from "./path_scratch.ts";

const enc = new TextEncoder();

Deno.test("scratchPath: a shorter path after a longer one ends at its own NUL", () => {
  const long = scratchPath("test", enc.encode("a-rather-long-file-name"));
  const short = scratchPath("test", "ab");
  assert.equal(short.buffer, long.buffer, "one buffer reused");
  assert.deepEqual([...short.subarray(0, 3)], [0x61, 0x62, 0]);
  assert.deepEqual([...scratchPath("test", "")].slice(0, 1), [0]);
  assert.deepEqual([...scratchPath("test", enc.encode("x")).subarray(0, 2)], [0x78, 0]);
});

Deno.test("scratchPath: NUL inside a name is EINVAL; an over-long path gets its own buffer", () => {
  assert.throws(() => scratchPath("test", "a\0b"), /NUL/);
  assert.throws(() => scratchPath("test", new Uint8Array([0x61, 0, 0x62])), /NUL/);
  const scratch = scratchPath("test", "x");
  const huge = scratchPath("test", "y".repeat(5000));
  assert.notEqual(huge.buffer, scratch.buffer);
  assert.equal(huge.length, 5001);
  assert.equal(huge[5000], 0);
});

Deno.test("syscalls through the reused path see each name exactly", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhostd-path-scratch-" });
  try {
    const dirFd = openat(AT_FDCWD, dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    try {
      const longName = "long-name-created-first";
      closeQuietly(openat(dirFd, longName, O_RDWR | O_CREAT | O_CLOEXEC, 0o600));
      closeQuietly(openat(dirFd, "l", O_RDWR | O_CREAT | O_CLOEXEC, 0o600));
      // "l" after the longer name: a stale tail would name another (missing) file.
      assert.equal(fstatat(dirFd, longName, AT_SYMLINK_NOFOLLOW).nlink, 1);
      assert.equal(fstatat(dirFd, "l", AT_SYMLINK_NOFOLLOW).nlink, 1);
      unlinkat(dirFd, enc.encode("l"));
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [longName]);
    } finally {
      closeQuietly(dirFd);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
