import assert from "node:assert/strict";
import {
  AT_FDCWD,
  closeFd,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_PATH,
  O_RDWR,
  openat,
  renameat2,
} from "../../../../ffi/mod.ts";
import { openCreated, openCreatedByName, statEntryQuietly, statFd } from "./confined_open.ts";
import type { StatxResult } from "../../../../ffi/mod.ts";

const encoder = new TextEncoder();

function withDir(run: (dirFd: number, path: string) => void): void {
  const path = Deno.makeTempDirSync({ prefix: "vhostd-confined-" });
  const dirFd = openat(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    run(dirFd, path);
  } finally {
    closeFd(dirFd);
    Deno.removeSync(path, { recursive: true });
  }
}

const NAME = encoder.encode("new");

/**
 * Creates "new" in a fresh directory, lets `meanwhile` act as a host process
 * would between the create and `open` (openCreated or its fallback), and
 * returns the status of the file the O_PATH fd holds, beside the created file's.
 */
function openCreatedAfter(
  open: typeof openCreated,
  meanwhile: (dirFd: number, path: string) => void,
): { found: StatxResult; created: StatxResult; nowNamed?: bigint } {
  let result: { found: StatxResult; created: StatxResult; nowNamed?: bigint } | undefined;
  withDir((dirFd, path) => {
    const fd = openat(dirFd, NAME, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600);
    try {
      const created = statFd(fd);
      meanwhile(dirFd, path);
      const pathFd = open(dirFd, NAME, fd, created);
      const nowNamed = statEntryQuietly(dirFd, NAME)?.ino;
      result = { found: statFd(pathFd), created, nowNamed };
      closeFd(pathFd);
    } finally {
      closeFd(fd);
    }
  });
  return result!;
}

for (const open of [openCreated, openCreatedByName]) {
  Deno.test(`${open.name}: the created file, under its name`, () => {
    const { found, created } = openCreatedAfter(open, () => {});
    assert.equal(found.ino, created.ino);
    assert.equal(found.dev, created.dev);
  });

  Deno.test(`${open.name}: a name replaced on the host after the create still yields the created file`, () => {
    const { found, created, nowNamed } = openCreatedAfter(open, (dirFd, path) => {
      Deno.writeTextFileSync(`${path}/other`, "someone else's");
      renameat2(dirFd, encoder.encode("other"), dirFd, NAME, 0);
    });
    assert.equal(
      found.ino,
      created.ino,
      "the O_PATH fd holds the file created, not the one now named",
    );
    assert.notEqual(nowNamed, undefined);
    assert.notEqual(found.ino, nowNamed);
  });

  Deno.test(`${open.name}: a name removed on the host after the create still yields the created file`, () => {
    const { found, created, nowNamed } = openCreatedAfter(open, (_dirFd, path) => {
      Deno.removeSync(`${path}/new`);
    });
    assert.equal(nowNamed, undefined);
    assert.equal(found.ino, created.ino);
  });
}
