import assert from "node:assert/strict";
import { DirentType, FuseInitFlag, FuseInitFlag2, FuseOpenOutFlag } from "./fuse_abi.ts";
import { FuseProtocolError } from "./fuse_errors.ts";
import {
  direntPlusSize,
  DirentPlusWriter,
  direntSize,
  DirentWriter,
  encodeAttr,
  encodeAttrOut,
  encodeCreateOut,
  encodeEntryOut,
  encodeErrorReply,
  encodeGetxattrOut,
  encodeInitOut,
  encodeLkOut,
  encodeLseekOut,
  encodeOpenOut,
  encodeOutHeader,
  encodeReadlinkReply,
  encodeReply,
  encodeStatfsOut,
  encodeWriteOut,
  type FuseAttr,
  type FuseEntryOut,
  writeOutHeader,
} from "./fuse_reply.ts";
import {
  decodeAttr,
  decodeAttrOut,
  decodeCreateOut,
  decodeDirents,
  decodeDirentsPlus,
  decodeEntryOut,
  decodeGetxattrOut,
  decodeInitOut,
  decodeLkOut,
  decodeLseekOut,
  decodeOpenOut,
  decodeOutHeader,
  decodeStatfsOut,
  decodeWriteOut,
  splitReply,
} from "./fuse_reply_decode.ts";

const text = (s: string) => new TextEncoder().encode(s);

const ATTR: FuseAttr = {
  ino: 2n,
  size: 4096,
  blocks: 8,
  atime: 1_700_000_000,
  mtime: 1_700_000_100n,
  ctime: -1n,
  atimensec: 11,
  mtimensec: 22,
  ctimensec: 999_999_999,
  mode: 0o100644,
  nlink: 1,
  uid: 1000,
  gid: 100,
  rdev: 0,
  blksize: 4096,
};

/** ATTR as decoding gives it back: 64-bit fields as bigint, flags 0. */
const ATTR_DECODED = {
  ...ATTR,
  ino: 2n,
  size: 4096n,
  blocks: 8n,
  atime: 1_700_000_000n,
  mtime: 1_700_000_100n,
  ctime: -1n,
  flags: 0,
};

const ENTRY: FuseEntryOut = {
  nodeid: 2n,
  generation: 7n,
  entryValid: 1,
  attrValid: 2n,
  entryValidNsec: 500,
  attrValidNsec: 0,
  attr: ATTR,
};

Deno.test("golden bytes: an ENTRY reply laid out by hand from the header", () => {
  // fuse_out_header {len u32, error i32, unique u64} then fuse_entry_out
  // {nodeid, generation, entry_valid, attr_valid u64; entry_valid_nsec, attr_valid_nsec u32;
  //  fuse_attr {ino size blocks atime mtime ctime u64; atimensec mtimensec ctimensec mode nlink
  //  uid gid rdev blksize flags u32}}
  const golden = new Uint8Array(144);
  const view = new DataView(golden.buffer);
  view.setUint32(0, 144, true); // len
  view.setInt32(4, 0, true); // error
  view.setBigUint64(8, 0xabcdefn, true); // unique
  view.setBigUint64(16, 2n, true); // nodeid
  view.setBigUint64(24, 7n, true); // generation
  view.setBigUint64(32, 1n, true); // entry_valid
  view.setBigUint64(40, 2n, true); // attr_valid
  view.setUint32(48, 500, true); // entry_valid_nsec
  view.setUint32(52, 0, true); // attr_valid_nsec
  const attr = 56;
  view.setBigUint64(attr + 0, 2n, true); // ino
  view.setBigUint64(attr + 8, 4096n, true); // size
  view.setBigUint64(attr + 16, 8n, true); // blocks
  view.setBigUint64(attr + 24, 1_700_000_000n, true); // atime
  view.setBigUint64(attr + 32, 1_700_000_100n, true); // mtime
  view.setBigInt64(attr + 40, -1n, true); // ctime
  view.setUint32(attr + 48, 11, true); // atimensec
  view.setUint32(attr + 52, 22, true); // mtimensec
  view.setUint32(attr + 56, 999_999_999, true); // ctimensec
  view.setUint32(attr + 60, 0o100644, true); // mode
  view.setUint32(attr + 64, 1, true); // nlink
  view.setUint32(attr + 68, 1000, true); // uid
  view.setUint32(attr + 72, 100, true); // gid
  view.setUint32(attr + 76, 0, true); // rdev
  view.setUint32(attr + 80, 4096, true); // blksize
  view.setUint32(attr + 84, 0, true); // flags

  assert.deepEqual(encodeReply(0xabcdefn, encodeEntryOut(ENTRY)), golden);
  // Straight into a caller's buffer at an offset, over stale bytes.
  const target = new Uint8Array(160).fill(0xee);
  encodeOutHeader({ len: 144, error: 0, unique: 0xabcdef }, target, 8);
  encodeEntryOut(ENTRY, target, 24);
  assert.deepEqual(target.subarray(8, 152), golden);
  assert.equal(target[7], 0xee);
  assert.equal(target[152], 0xee);
});

Deno.test("error replies carry the NEGATIVE errno and no payload", () => {
  const reply = encodeErrorReply(5n, 2);
  assert.deepEqual([...reply], [16, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 5, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(decodeOutHeader(reply), { len: 16, error: -2, unique: 5n });
  assert.equal(splitReply(reply).payload.byteLength, 0);
  assert.equal(decodeOutHeader(encodeErrorReply(1, 511)).error, -511);
  for (const bad of [0, -2, 512, 1.5, Number.NaN]) {
    assert.throws(() => encodeErrorReply(1n, bad), RangeError, `errno ${bad}`);
  }
});

Deno.test("encodeOutHeader refuses positive errors, errors at or below -512 and short lengths", () => {
  assert.throws(() => encodeOutHeader({ len: 16, error: 2, unique: 1n }), RangeError);
  assert.throws(() => encodeOutHeader({ len: 16, error: -512, unique: 1n }), RangeError);
  assert.throws(() => encodeOutHeader({ len: 15, error: 0, unique: 1n }), RangeError);
  assert.deepEqual(decodeOutHeader(encodeOutHeader({ len: 16, error: -511, unique: 3 })), {
    len: 16,
    error: -511,
    unique: 3n,
  });
});

Deno.test("writeOutHeader writes what encodeOutHeader does, at an offset of a kept view", () => {
  const buffer = new Uint8Array(40).fill(0xee);
  const view = new DataView(buffer.buffer);
  writeOutHeader({ len: 120, error: -2, unique: 0xffff_ffff_ffff_fff0n }, view, 8);
  assert.deepEqual(
    [...buffer.subarray(8, 24)],
    [...encodeOutHeader({ len: 120, error: -2, unique: 0xffff_ffff_ffff_fff0n })],
  );
  assert.equal(buffer[7], 0xee, "nothing before it");
  assert.equal(buffer[24], 0xee, "nothing after it");
  assert.throws(() => writeOutHeader({ len: 16, error: 2, unique: 1n }, view), RangeError);
  assert.throws(() => writeOutHeader({ len: 16, error: 0, unique: 1n }, view, 25), RangeError);
});

Deno.test("encodeReply concatenates parts after a header whose len covers them all", () => {
  const reply = encodeReply(9n, [text("ab"), text("cde")]);
  assert.deepEqual(splitReply(reply), {
    header: { len: 21, error: 0, unique: 9n },
    payload: text("abcde"),
  });
  assert.equal(encodeReply(9n).byteLength, 16);
});

Deno.test("splitReply refuses inconsistent headers", () => {
  const reply = encodeReply(1n, text("xyz"));
  assert.throws(() => splitReply(reply.subarray(0, 18)), FuseProtocolError);
  const positive = reply.slice();
  new DataView(positive.buffer).setInt32(4, 1, true);
  assert.throws(() => splitReply(positive), FuseProtocolError);
  const errorWithPayload = reply.slice();
  new DataView(errorWithPayload.buffer).setInt32(4, -5, true);
  assert.throws(() => splitReply(errorWithPayload), FuseProtocolError);
});

Deno.test("attr, entry and attr_out encoders round-trip through their decoders", () => {
  assert.equal(encodeAttr(ATTR).byteLength, 88);
  assert.deepEqual(decodeAttr(encodeAttr(ATTR)), ATTR_DECODED);
  assert.deepEqual(decodeAttr(encodeAttr({ ...ATTR, flags: 2 })), { ...ATTR_DECODED, flags: 2 });
  assert.deepEqual(decodeEntryOut(encodeEntryOut(ENTRY)), {
    nodeid: 2n,
    generation: 7n,
    entryValid: 1n,
    attrValid: 2n,
    entryValidNsec: 500,
    attrValidNsec: 0,
    attr: ATTR_DECODED,
  });
  const attrOut = encodeAttrOut({ attrValid: 3, attrValidNsec: 4, attr: ATTR });
  assert.equal(attrOut.byteLength, 104);
  assert.deepEqual(decodeAttrOut(attrOut), { attrValid: 3n, attrValidNsec: 4, attr: ATTR_DECODED });
});

Deno.test("open, create, write, statfs, lseek, getxattr and lk encoders round-trip", () => {
  const open = { fh: 0xffff_ffff_ffff_ffffn, openFlags: FuseOpenOutFlag.KEEP_CACHE };
  assert.deepEqual(decodeOpenOut(encodeOpenOut(open)), open);
  const create = encodeCreateOut(ENTRY, open);
  assert.equal(create.byteLength, 144);
  assert.deepEqual(decodeCreateOut(create).open, open);
  assert.equal(decodeCreateOut(create).entry.nodeid, 2n);
  assert.deepEqual(decodeWriteOut(encodeWriteOut({ size: 0xffff_ffff })), { size: 0xffff_ffff });
  const statfs = {
    blocks: 1000n,
    bfree: 500n,
    bavail: 400n,
    files: 100n,
    ffree: 50n,
    bsize: 4096,
    namelen: 255,
    frsize: 4096,
  };
  const statfsBytes = encodeStatfsOut(statfs);
  assert.equal(statfsBytes.byteLength, 80);
  assert.deepEqual(decodeStatfsOut(statfsBytes), statfs);
  assert.deepEqual(decodeLseekOut(encodeLseekOut({ offset: 12345n })), { offset: 12345n });
  assert.deepEqual(decodeGetxattrOut(encodeGetxattrOut({ size: 77 })), { size: 77 });
  const lk = { start: 1n, end: 2n, type: 1, pid: 3 };
  assert.deepEqual(decodeLkOut(encodeLkOut(lk)), lk);
});

Deno.test("init_out defaults major to 7 and round-trips every field", () => {
  const out = {
    minor: 37,
    maxReadahead: 131072,
    // `|` yields a signed int32 once bit 31 is involved: `>>> 0` makes it a u32 again.
    flags: (FuseInitFlag.ASYNC_READ | FuseInitFlag.INIT_EXT | FuseInitFlag.INIT_RESERVED) >>> 0,
    maxBackground: 0xffff,
    congestionThreshold: 12,
    maxWrite: 1 << 20,
    timeGran: 1,
    maxPages: 256,
    mapAlignment: 12,
    flags2: FuseInitFlag2.SECURITY_CTX,
  };
  const bytes = encodeInitOut(out);
  assert.equal(bytes.byteLength, 64);
  assert.deepEqual(decodeInitOut(bytes), { major: 7, ...out });
  assert.equal(decodeInitOut(bytes).flags, 0xc000_0001);
  assert.throws(() => encodeInitOut({ ...out, maxPages: 0x1_0000 }), RangeError);
  assert.throws(() => encodeInitOut({ ...out, flags: out.flags | 0 }), RangeError, "signed flags");
});

Deno.test("readlink replies are the raw target without a NUL", () => {
  const reply = encodeReadlinkReply(4n, text("../target"));
  assert.deepEqual(splitReply(reply).payload, text("../target"));
  assert.throws(() => encodeReadlinkReply(4n, text("a\0b")), RangeError);
  assert.throws(() => encodeReadlinkReply(4n, new Uint8Array(0)), RangeError);
});

Deno.test("dirent records are 24 bytes + name, padded with zeros to 8", () => {
  assert.deepEqual([1, 8, 9, 16, 17, 255].map(direntSize), [32, 32, 40, 40, 48, 280]);
  assert.deepEqual([1, 8, 9].map(direntPlusSize), [160, 160, 168]);
  const buffer = new Uint8Array(64).fill(0xff);
  const writer = new DirentWriter(buffer);
  assert.equal(
    writer.add({ ino: 5n, off: 1, type: DirentType.REG, name: text("abcdefghi") }),
    true,
  );
  assert.equal(writer.length, 40);
  const view = new DataView(buffer.buffer);
  assert.equal(view.getBigUint64(0, true), 5n); // ino
  assert.equal(view.getBigUint64(8, true), 1n); // off
  assert.equal(view.getUint32(16, true), 9); // namelen
  assert.equal(view.getUint32(20, true), DirentType.REG); // type
  assert.deepEqual(buffer.subarray(24, 33), text("abcdefghi"));
  assert.deepEqual([...buffer.subarray(33, 40)], [0, 0, 0, 0, 0, 0, 0], "padding is zero");
  assert.equal(buffer[40], 0xff, "nothing written past the record");
  assert.deepEqual(decodeDirents(writer.bytes()), [
    { ino: 5n, off: 1n, type: DirentType.REG, name: text("abcdefghi") },
  ]);
});

Deno.test("DirentWriter: a buffer that exactly fits N entries takes N and refuses the next", () => {
  const names = ["a", "bb", "ccccccccc", "dddddddd"].map(text); // 32 + 32 + 40 + 32 bytes
  const exact = names.reduce((sum, name) => sum + direntSize(name.byteLength), 0);
  assert.equal(exact, 136);
  const entries = names.map((name, i) => ({
    ino: BigInt(i + 10),
    off: i + 1,
    type: DirentType.DIR,
    name,
  }));

  const full = new DirentWriter(exact);
  for (const entry of entries) assert.equal(full.add(entry), true);
  assert.equal(full.length, exact);
  assert.equal(full.remaining, 0);
  const before = full.bytes().slice();
  assert.equal(full.add({ ino: 1n, off: 9, type: 0, name: text("e") }), false);
  assert.equal(full.count, 4);
  assert.deepEqual(full.bytes(), before);
  assert.deepEqual(decodeDirents(full.bytes()).map((d) => d.name), names);

  const short = new DirentWriter(exact - 1);
  assert.equal(short.add(entries[0]), true);
  assert.equal(short.add(entries[1]), true);
  assert.equal(short.add(entries[2]), true);
  assert.equal(short.add(entries[3]), false, "the last one no longer fits");
  assert.equal(short.length, exact - 32);
  assert.equal(short.count, 3);
  // A smaller entry may still fit after a refusal; the caller decides to stop.
  assert.equal(new DirentWriter(31).add(entries[0]), false);
  assert.equal(new DirentWriter(0).add(entries[0]), false);
});

Deno.test("DirentWriter refuses names the kernel would reject, without writing anything", () => {
  const writer = new DirentWriter(1024);
  for (const name of [text(""), text("a/b"), text("a\0"), new Uint8Array(256).fill(0x61)]) {
    assert.throws(() => writer.add({ ino: 1n, off: 1, type: 0, name }), RangeError);
  }
  assert.throws(() => writer.add({ ino: -1, off: 1, type: 0, name: text("x") }), RangeError);
  assert.equal(writer.length, 0);
  assert.equal(writer.count, 0);
  assert.equal(
    writer.add({ ino: 1n, off: 1, type: 0, name: new Uint8Array(255).fill(0x62) }),
    true,
  );
});

Deno.test("DirentPlusWriter packs entry_out + dirent + padded name and obeys the same fit rule", () => {
  const writer = new DirentPlusWriter(direntPlusSize(1) + direntPlusSize(9));
  assert.equal(writer.add(ENTRY, { ino: 2n, off: 1, type: DirentType.REG, name: text("f") }), true);
  assert.equal(
    writer.add({ ...ENTRY, nodeid: 3n }, {
      ino: 3n,
      off: 2,
      type: DirentType.DIR,
      name: text("directory"),
    }),
    true,
  );
  assert.equal(writer.remaining, 0);
  assert.equal(writer.add(ENTRY, { ino: 4n, off: 3, type: 0, name: text("g") }), false);
  const bytes = writer.bytes();
  assert.equal(bytes.byteLength, 160 + 168);
  // The dirent of the first record follows its 128-byte entry_out; the name its 24-byte header.
  assert.equal(new DataView(bytes.buffer).getUint32(128 + 16, true), 1);
  assert.equal(bytes[152], "f".charCodeAt(0));
  assert.deepEqual([...bytes.subarray(153, 160)], [0, 0, 0, 0, 0, 0, 0]);
  const decoded = decodeDirentsPlus(bytes);
  assert.equal(decoded.length, 2);
  assert.equal(decoded[0].entryOut.nodeid, 2n);
  assert.deepEqual(decoded[0].entryOut.attr, ATTR_DECODED);
  assert.deepEqual(decoded[1].dirent, {
    ino: 3n,
    off: 2n,
    type: DirentType.DIR,
    name: text("directory"),
  });
});

Deno.test("DirentPlusWriter.addFilled writes the record add writes, its entry filled in place", () => {
  const expected = new DirentPlusWriter(direntPlusSize(9) * 2);
  expected.add(ENTRY, {
    ino: 0x1_0000_0003n,
    off: 0x2_0000_0001n,
    type: DirentType.DIR,
    name: text("directory"),
  });
  // ino and off as a linux_dirent64 record holds them, at byte 5 of a larger buffer.
  const source = new DataView(new ArrayBuffer(32));
  source.setBigUint64(5, 0x1_0000_0003n, true);
  source.setBigUint64(13, 0x2_0000_0001n, true);
  const filled = new DirentPlusWriter(new Uint8Array(direntPlusSize(9) * 2).fill(0xee));
  const entry = encodeEntryOut(ENTRY);
  const asked: string[] = [];
  const filler = (answer: boolean) => ({
    fillEntryOut(name: Uint8Array, view: DataView, base: number): boolean {
      asked.push(new TextDecoder().decode(name));
      if (!answer) return false;
      new Uint8Array(view.buffer, base, entry.length).set(entry);
      return true;
    },
  });
  assert.equal(
    filled.addFilled(text("directory"), DirentType.DIR, source, 5, filler(false)),
    false,
  );
  assert.equal(filled.count, 0, "declined: nothing counted");
  assert.equal(filled.addFilled(text("directory"), DirentType.DIR, source, 5, filler(true)), true);
  assert.deepEqual(filled.bytes(), expected.bytes());
  assert.throws(() => filled.addFilled(text("a/b"), 0, source, 5, filler(true)), RangeError);
  assert.deepEqual(asked, ["directory", "directory"], "a bad name is refused before the filler");
  assert.equal(filled.addFilled(text("directory"), DirentType.DIR, source, 5, filler(true)), true);
  assert.equal(filled.addFilled(text("x"), 0, source, 5, filler(true)), false, "full");
  assert.equal(filled.count, 2);
});

Deno.test("decodeDirents refuses records that overrun the payload or have no name", () => {
  const writer = new DirentWriter(64);
  writer.add({ ino: 1n, off: 1, type: 0, name: text("abc") });
  const bytes = writer.bytes();
  assert.throws(() => decodeDirents(bytes.subarray(0, 31)), FuseProtocolError);
  assert.throws(() => decodeDirents(bytes.subarray(0, 10)), FuseProtocolError);
  const noName = bytes.slice();
  new DataView(noName.buffer).setUint32(16, 0, true);
  assert.throws(() => decodeDirents(noName), FuseProtocolError);
  assert.deepEqual(decodeDirents(new Uint8Array(0)), []);
});
