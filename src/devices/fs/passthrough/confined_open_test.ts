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
import { openCreated, statFd } from "./confined_open.ts";

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

Deno.test("openCreated: the created file by its name", () => {
  withDir((dirFd) => {
    const name = encoder.encode("new");
    const fd = openat(dirFd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600);
    const created = statFd(fd);
    const pathFd = openCreated(dirFd, name, fd, created);
    try {
      const found = statFd(pathFd);
      assert.equal(found.ino, created.ino);
      assert.equal(found.dev, created.dev);
    } finally {
      closeFd(pathFd);
      closeFd(fd);
    }
  });
});

Deno.test("openCreated: a name replaced on the host after the create still yields the created file", () => {
  withDir((dirFd, path) => {
    const name = encoder.encode("new");
    const fd = openat(dirFd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600);
    const created = statFd(fd);
    Deno.writeTextFileSync(`${path}/other`, "someone else's");
    renameat2(dirFd, encoder.encode("other"), dirFd, name, 0);
    const pathFd = openCreated(dirFd, name, fd, created);
    try {
      const found = statFd(pathFd);
      assert.equal(
        found.ino,
        created.ino,
        "the O_PATH fd holds the file created, not the one now named",
      );
      assert.notEqual(found.ino, Deno.statSync(`${path}/new`).ino);
    } finally {
      closeFd(pathFd);
      closeFd(fd);
    }
  });
});

Deno.test("openCreated: a name removed on the host after the create still yields the created file", () => {
  withDir((dirFd, path) => {
    const name = encoder.encode("new");
    const fd = openat(dirFd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600);
    const created = statFd(fd);
    Deno.removeSync(`${path}/new`);
    const pathFd = openCreated(dirFd, name, fd, created);
    try {
      assert.equal(statFd(pathFd).ino, created.ino);
    } finally {
      closeFd(pathFd);
      closeFd(fd);
    }
  });
});
