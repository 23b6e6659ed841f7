/**
 * Malformed FUSE requests over a real socket: short headers, lengths that
 * disagree, bad names, unknown opcodes, no room for a reply, random bytes.
 * Each gets an error reply (or, without room, an empty used element) and
 * the next request works; the back-end never goes down.
 */

import assert from "node:assert/strict";
import { EINVAL, EIO, ENAMETOOLONG, ENOENT, ENOSYS, O_CREAT, O_RDWR } from "../ffi/mod.ts";
import {
  decodeEntryOut,
  decodeOutHeader,
  encodeInHeader,
  encodeRequest,
  FuseOpcode,
  splitReply,
} from "../src/devices/fs/fuse/mod.ts";
import type { FsDriver } from "../src/frontend/mod.ts";
import { errnoOf, FsFixture, pattern, withVhostdFs } from "./support/fs_fixture.ts";

const ROOT = 1n;
const enc = new TextEncoder();

/** Sends raw bytes with room for a 4 KiB reply; returns the errno (0 for success) and unique. */
function sendRaw(
  d: FsDriver,
  bytes: Uint8Array,
  replySize = 4096,
): { error: number; unique: bigint; written: number } {
  const raw = d.send(bytes, replySize);
  if (raw.written === 0) return { error: 0, unique: 0n, written: 0 };
  const { header } = splitReply(raw.bytes);
  assert.equal(header.len, raw.written, "used length is the reply length");
  return {
    error: header.error === 0 ? 0 : -header.error,
    unique: header.unique,
    written: raw.written,
  };
}

function lookupBytes(unique: bigint, name: Uint8Array): Uint8Array {
  return encodeRequest(FuseOpcode.LOOKUP, { unique, nodeid: ROOT }, { name });
}

function withLen(bytes: Uint8Array, len: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(0, len, true);
  return copy;
}

Deno.test("fs: malformed requests get error replies and the next request works", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/present`, "x");
    using fx = FsFixture.open(vhostd.socketPath, { init: false });
    const d = fx.driver;
    const good = lookupBytes(5n, enc.encode("present"));
    const works = () => assert.ok(d.lookup(ROOT, "present").nodeid > 1n, "the next request works");

    // Before INIT nothing but INIT is served.
    assert.equal(sendRaw(d, good).error, EIO);
    d.init();
    works();

    // A header cut short: the reply still carries the unique that was there.
    const short = sendRaw(d, good.subarray(0, 20));
    assert.deepEqual([short.error, short.unique, short.written], [EINVAL, 5n, 16]);
    works();
    assert.equal(sendRaw(d, good.subarray(0, 3)).error, EINVAL);
    works();
    // len larger than what was sent, shorter than the header, absurdly large.
    for (const len of [good.length + 1, good.length + 4096, 39, 0, 0xffff_ffff]) {
      assert.equal(sendRaw(d, withLen(good, len)).error, EINVAL, `len ${len}`);
      works();
    }
    // Bytes past len are ignored (the name is cut at len, so its NUL is missing: EINVAL).
    const padded = new Uint8Array(good.length + 100);
    padded.set(good);
    assert.equal(sendRaw(d, padded).error, 0);
    assert.equal(sendRaw(d, withLen(good, good.length - 1)).error, EINVAL);
    // Bad names.
    const noNul = withLen(good.subarray(0, good.length - 1), good.length - 1);
    assert.equal(sendRaw(d, noNul).error, EINVAL);
    assert.equal(errnoOf(() => d.lookup(ROOT, "a/b")), EINVAL);
    assert.equal(errnoOf(() => d.lookup(ROOT, "")), EINVAL);
    assert.equal(errnoOf(() => d.lookup(ROOT, "n".repeat(256))), ENAMETOOLONG);
    assert.equal(errnoOf(() => d.mkdir(ROOT, "a\0b")), EINVAL);
    assert.equal(errnoOf(() => d.lookup(ROOT, "n".repeat(255))), ENOENT);
    works();
    // Unknown and unsupported opcodes.
    for (const opcode of [0, 7, 21, 37, 39, 47, 51, 999, 0x1a000000]) {
      const request = encodeInHeader({ unique: 77n, nodeid: ROOT }, opcode, 40);
      const reply = sendRaw(d, request);
      assert.deepEqual([reply.error, reply.unique], [ENOSYS, 77n], `opcode ${opcode}`);
    }
    works();
    // A WRITE whose size disagrees with its length writes nothing.
    const { open } = d.create(ROOT, "w", O_RDWR | O_CREAT, 0o600);
    const write = encodeRequest(FuseOpcode.WRITE, { unique: 9n, nodeid: ROOT }, {
      fh: open.fh,
      offset: 0n,
      data: pattern(1000, 1),
      writeFlags: 0,
      lockOwner: 0n,
      flags: 0,
    });
    assert.equal(sendRaw(d, withLen(write, write.length - 10)).error, EINVAL);
    assert.equal(sendRaw(d, write.subarray(0, 500)).error, EINVAL);
    assert.equal(Deno.statSync(`${dirs.share}/w`).size, 0);
    // No room for any reply: the chain comes back empty. Too little room: EIO.
    assert.equal(sendRaw(d, good, 0).written, 0);
    assert.equal(sendRaw(d, good, 8).written, 0);
    const tight = sendRaw(d, good, 40);
    assert.deepEqual([tight.error, tight.written], [EIO, 16]);
    works();
    // Requests on the high-priority queue are served too.
    const hi = d.send(good, 4096, { queue: 0 });
    assert.equal(decodeOutHeader(hi.bytes).error, 0);
    assert.ok(decodeEntryOut(hi.bytes, 16).nodeid > 1n);
    d.release(open.fh);
  });
});

Deno.test("fs: random garbage never takes the back-end down", async () => {
  await withVhostdFs([], (vhostd, dirs) => {
    Deno.writeTextFileSync(`${dirs.share}/present`, "x");
    using fx = FsFixture.open(vhostd.socketPath);
    const d = fx.driver;
    for (let i = 0; i < 300; i++) {
      const bytes = pattern(1 + (i * 37) % 300, i + 100);
      // Plausible headers with random opcodes and bodies, and plain noise.
      if (i % 2 === 0) {
        const view = new DataView(bytes.buffer);
        if (bytes.length >= 8) {
          view.setUint32(0, bytes.length, true);
          view.setUint32(4, 1 + (i % 52), true);
        }
      }
      const raw = d.send(bytes, i % 5 === 0 ? 10 : 512, {
        requestSegments: 1 + (i % 3),
        replySegments: 1 + (i % 4),
      });
      if (raw.written > 0) {
        const header = decodeOutHeader(raw.bytes);
        assert.equal(header.len, raw.written);
      }
    }
    assert.ok(d.lookup(ROOT, "present").nodeid > 1n);
    assert.ok(vhostd.exitStatus === undefined, "still running");
  });
});
