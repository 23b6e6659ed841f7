import assert from "node:assert/strict";
import {
  closeFd,
  dupFd,
  ftruncate,
  isErrno,
  lseek,
  memfdCreate,
  O_CLOEXEC,
  O_RDONLY,
  openFile,
  pwrite,
  SEEK_DATA,
} from "../../ffi/mod.ts";
import { releaseFileInBackground } from "./background_release.ts";
import { probeIoUring } from "./open_engine.ts";

const MiB = 1024 * 1024;

/** True when `fd` has no data left (SEEK_DATA finds none). */
function holeOnly(fd: number): boolean {
  try {
    lseek(fd, 0, SEEK_DATA);
    return false;
  } catch (error) {
    if (isErrno(error, "ENXIO")) return true;
    throw error;
  }
}

/** Whether fd number `fd` still names the memfd called `name`. */
function namesMemfd(fd: number, name: string): boolean {
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`).includes(`memfd:${name}`);
  } catch {
    return false;
  }
}

/** Polls `done` until it holds; fails after 30 s (never hit when it works). */
async function eventually(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 3000 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(done(), what);
}

Deno.test({
  name: "a released memfd loses its pages and its fd number, without this thread closing it",
  ignore: probeIoUring() !== undefined,
  fn: async () => {
    const name = `release-${crypto.randomUUID()}`;
    const size = 8 * MiB;
    const fd = memfdCreate(name);
    ftruncate(fd, size);
    pwrite(fd, new Uint8Array(MiB).fill(7), 3 * MiB);
    const watcher = dupFd(fd); // a second reference: the file outlives the release
    try {
      assert.equal(holeOnly(watcher), false);
      releaseFileInBackground(fd, size);
      await eventually(() => holeOnly(watcher), "the pages were punched out");
      await eventually(() => !namesMemfd(fd, name), "the fd was closed");
    } finally {
      closeFd(watcher);
    }
  },
});

Deno.test({
  name: "a release whose punch fails (a read-only fd) still closes the fd",
  ignore: probeIoUring() !== undefined,
  fn: async () => {
    const name = `release-ro-${crypto.randomUUID()}`;
    const fd = memfdCreate(name);
    try {
      ftruncate(fd, MiB);
      const readOnly = openFile(`/proc/self/fd/${fd}`, O_RDONLY | O_CLOEXEC);
      assert.ok(namesMemfd(readOnly, name));
      releaseFileInBackground(readOnly, MiB);
      await eventually(() => !namesMemfd(readOnly, name), "the read-only fd was closed");
    } finally {
      closeFd(fd);
    }
  },
});

Deno.test("releasing no fd does nothing", () => {
  releaseFileInBackground(-1, MiB);
});
