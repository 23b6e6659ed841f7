/**
 * Helpers for the passthrough filesystem tests: a shared directory in a
 * temporary tree with an "outside" sibling to try escaping into, and
 * assertions on FsError.
 *
 * @module
 */

import assert from "node:assert/strict";
import { errnoName, pread, pwrite } from "../../ffi/mod.ts";
import type { FuseSetattrArgs } from "../../src/devices/fs/fuse/fuse_request.ts";
import {
  FsError,
  type FsOptions,
  PassthroughFs,
} from "../../src/devices/fs/passthrough/passthrough_fs.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a name. */
export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Text of UTF-8 bytes. */
export function text(data: Uint8Array): string {
  return decoder.decode(data);
}

/** A temporary tree: `share` (served) and `outside` (its sibling, holding a file "secret"). */
export interface Share {
  /** Temporary base directory. */
  base: string;
  /** The shared directory. */
  path: string;
  /** A directory next to the share, never to be reachable from it. */
  outside: string;
  /** The filesystem serving `path`. */
  fs: PassthroughFs;
  /** Closes the filesystem and removes the tree. */
  [Symbol.dispose](): void;
}

/** Creates a share; `options` override the defaults (read-write, abort on migration errors). */
export function makeShare(options: Partial<FsOptions> = {}): Share {
  const base = Deno.makeTempDirSync({ prefix: "vhostd-passthrough-" });
  const path = `${base}/share`;
  const outside = `${base}/outside`;
  Deno.mkdirSync(path);
  Deno.mkdirSync(outside);
  Deno.writeTextFileSync(`${outside}/secret`, "outside the share");
  const fs = new PassthroughFs({
    sharedDir: path,
    readOnly: false,
    migrationOnError: "abort",
    ...options,
  });
  return {
    base,
    path,
    outside,
    fs,
    [Symbol.dispose]() {
      fs.close();
      Deno.removeSync(base, { recursive: true });
    },
  };
}

/** Asserts that `operation` throws FsError with `errno`. */
export function assertFsErrno(operation: () => unknown, errno: number, context = ""): void {
  assert.throws(operation, (error: unknown) => {
    assert.ok(error instanceof FsError, `${context} threw ${String(error)}, not an FsError`);
    assert.equal(
      error.errno,
      errno,
      `${context} failed with ${errnoName(error.errno)} (${error.message}), ` +
        `expected ${errnoName(errno)}`,
    );
    return true;
  }, `${context} should fail with ${errnoName(errno)}`);
}

/** A SETATTR argument block with nothing valid; override what the test sets. */
export function setattrArgs(fields: Partial<FuseSetattrArgs>): FuseSetattrArgs {
  return {
    valid: 0,
    fh: 0n,
    size: 0n,
    lockOwner: 0n,
    atime: 0n,
    mtime: 0n,
    ctime: 0n,
    atimensec: 0,
    mtimensec: 0,
    ctimensec: 0,
    mode: 0,
    uid: 0,
    gid: 0,
    ...fields,
  };
}

/** Reads a whole open handle's file through its host fd (as the handler would with preadv). */
export function readAll(fs: PassthroughFs, fh: bigint): string {
  const fd = fs.readFd(fh);
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(4096);
  for (let offset = 0;;) {
    const n = pread(fd, buf, offset);
    if (n === 0) break;
    chunks.push(buf.slice(0, n));
    offset += n;
  }
  const all = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return text(all);
}

/** Writes `data` at `offset` through an open handle's host fd. */
export function writeAt(fs: PassthroughFs, fh: bigint, data: string, offset = 0): void {
  const fd = fs.readFd(fh);
  const payload = bytes(data);
  let done = 0;
  while (done < payload.length) done += pwrite(fd, payload.subarray(done), offset + done);
}

/** A test that needs CAP_DAC_READ_SEARCH (file handles); its name says why when it is skipped. */
export function rootTest(name: string, fn: () => void): void {
  const asRoot = Deno.uid() === 0;
  const why = "open_by_handle_at needs CAP_DAC_READ_SEARCH (run as root)";
  Deno.test({ name: asRoot ? name : `${name} (skipped: ${why})`, ignore: !asRoot, fn });
}
