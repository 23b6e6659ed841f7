import assert from "node:assert/strict";
import {
  FuseGetattrFlag,
  FuseInitFlag,
  FuseInitFlag2,
  FuseOpcode,
  FuseSetattrValid,
} from "./fuse_abi.ts";
import {
  FuseErrno,
  FuseNameError,
  FuseProtocolError,
  FuseUnsupportedOpcodeError,
} from "./fuse_errors.ts";
import {
  DECODABLE_OPCODES,
  decodeArgs,
  decodeInHeader,
  errnoOfDecodeError,
  type FuseArgsByOpcode,
  type FuseDecodableOpcode,
  type FuseDecodeOptions,
  type FuseRequestArgs,
  isDecodableOpcode,
  splitRequest,
} from "./fuse_request.ts";
import { wellFormedLastName } from "./fuse_names.ts";
import {
  encodeRequest,
  encodeRequestInto,
  type FuseArgsInputByOpcode,
} from "./fuse_request_encode.ts";

const text = (s: string) => new TextEncoder().encode(s);
const HEADER = { unique: 0x1234n, nodeid: 5n, uid: 1000, gid: 100, pid: 77 };

/** One plausible input per decodable opcode, as the kernel would fill it. */
const SAMPLES: { [K in FuseDecodableOpcode]: FuseArgsInputByOpcode[K] } = {
  [FuseOpcode.LOOKUP]: { name: text("hello.txt") },
  [FuseOpcode.FORGET]: { nlookup: 3n },
  [FuseOpcode.GETATTR]: { getattrFlags: FuseGetattrFlag.FH, fh: 0xfeedn },
  [FuseOpcode.SETATTR]: {
    valid: FuseSetattrValid.MODE | FuseSetattrValid.SIZE | FuseSetattrValid.ATIME,
    fh: 9n,
    size: 1n << 40n,
    lockOwner: 0xdead_beef_cafen,
    atime: -86400n,
    mtime: 1_700_000_000n,
    ctime: 1_700_000_001n,
    atimensec: 1,
    mtimensec: 999_999_999,
    ctimensec: 3,
    mode: 0o100600,
    uid: 1001,
    gid: 1002,
  },
  [FuseOpcode.READLINK]: {},
  [FuseOpcode.SYMLINK]: { name: text("link"), target: text("../some/where") },
  [FuseOpcode.MKNOD]: { mode: 0o020644, rdev: 0x0501, umask: 0o022, name: text("tty5") },
  [FuseOpcode.MKDIR]: { mode: 0o755, umask: 0o022, name: text("dir") },
  [FuseOpcode.UNLINK]: { name: text("gone") },
  [FuseOpcode.RMDIR]: { name: text("olddir") },
  [FuseOpcode.RENAME]: { newdir: 8n, oldname: text("a"), newname: text("bee") },
  [FuseOpcode.LINK]: { oldnodeid: 42n, name: text("hard") },
  [FuseOpcode.OPEN]: { flags: 0o2, openFlags: 1 },
  [FuseOpcode.READ]: {
    fh: 11n,
    offset: 4096n,
    size: 65536,
    readFlags: 2,
    lockOwner: 5n,
    flags: 0o100000,
  },
  [FuseOpcode.WRITE]: {
    fh: 12n,
    offset: 1n << 33n,
    writeFlags: 3,
    lockOwner: 6n,
    flags: 0o1,
    data: text("some data to write"),
  },
  [FuseOpcode.STATFS]: {},
  [FuseOpcode.RELEASE]: { fh: 13n, flags: 0o2, releaseFlags: 1, lockOwner: 7n },
  [FuseOpcode.FSYNC]: { fh: 14n, fsyncFlags: 1 },
  [FuseOpcode.SETXATTR]: { flags: 1, name: text("user.mime/type"), value: text("text/plain") },
  [FuseOpcode.GETXATTR]: { size: 256, name: text("user.x") },
  [FuseOpcode.LISTXATTR]: { size: 4096 },
  [FuseOpcode.REMOVEXATTR]: { name: text("user.y") },
  [FuseOpcode.FLUSH]: { fh: 15n, lockOwner: 8n },
  [FuseOpcode.INIT]: {
    major: 7,
    minor: 37,
    maxReadahead: 131072,
    flags: FuseInitFlag.ASYNC_READ | FuseInitFlag.INIT_EXT | FuseInitFlag.MAX_PAGES,
    flags2: FuseInitFlag2.SECURITY_CTX,
  },
  [FuseOpcode.OPENDIR]: { flags: 0o200000, openFlags: 0 },
  [FuseOpcode.READDIR]: {
    fh: 16n,
    offset: 3n,
    size: 4096,
    readFlags: 0,
    lockOwner: 0n,
    flags: 0,
  },
  [FuseOpcode.RELEASEDIR]: { fh: 17n, flags: 0, releaseFlags: 0, lockOwner: 0n },
  [FuseOpcode.FSYNCDIR]: { fh: 18n, fsyncFlags: 0 },
  [FuseOpcode.GETLK]: {
    fh: 19n,
    owner: 20n,
    lk: { start: 0n, end: 0x7fff_ffff_ffff_ffffn, type: 1, pid: 99 },
    lkFlags: 0,
  },
  [FuseOpcode.SETLK]: {
    fh: 21n,
    owner: 22n,
    lk: { start: 5n, end: 9n, type: 0, pid: 1 },
    lkFlags: 1,
  },
  [FuseOpcode.SETLKW]: {
    fh: 23n,
    owner: 24n,
    lk: { start: 1n, end: 2n, type: 2, pid: 3 },
    lkFlags: 0,
  },
  [FuseOpcode.ACCESS]: { mask: 4 },
  [FuseOpcode.CREATE]: {
    flags: 0o101,
    mode: 0o100644,
    umask: 0o022,
    openFlags: 1,
    name: text("new.txt"),
  },
  [FuseOpcode.INTERRUPT]: { unique: 0x99n },
  [FuseOpcode.DESTROY]: {},
  [FuseOpcode.BATCH_FORGET]: {
    entries: [{ nodeid: 2n, nlookup: 1n }, { nodeid: 3n, nlookup: 7n }, {
      nodeid: 4n,
      nlookup: 2n,
    }],
  },
  [FuseOpcode.FALLOCATE]: { fh: 25n, offset: 100n, length: 200n, mode: 3 },
  [FuseOpcode.READDIRPLUS]: {
    fh: 26n,
    offset: 0n,
    size: 8192,
    readFlags: 0,
    lockOwner: 0n,
    flags: 0,
  },
  [FuseOpcode.RENAME2]: { newdir: 9n, flags: 1, oldname: text("x"), newname: text("y") },
  [FuseOpcode.LSEEK]: { fh: 27n, offset: 512n, whence: 3 },
  [FuseOpcode.COPY_FILE_RANGE]: {
    fhIn: 28n,
    offIn: 0n,
    nodeidOut: 29n,
    fhOut: 30n,
    offOut: 4096n,
    len: 1n << 20n,
    flags: 0n,
  },
  [FuseOpcode.SYNCFS]: {},
};

/** What decodeArgs must give for a sample: the sample itself, except where the wire form differs. */
function expectedArgs(opcode: FuseDecodableOpcode, options: FuseDecodeOptions): unknown {
  switch (opcode) {
    case FuseOpcode.WRITE: {
      const { data, ...rest } = SAMPLES[opcode];
      return { ...rest, size: data.byteLength, dataOffset: 40, dataLength: data.byteLength };
    }
    case FuseOpcode.SETXATTR: {
      const { value, ...rest } = SAMPLES[opcode];
      const headSize = options.setxattrExt ? 16 : 8;
      return {
        ...rest,
        size: value.byteLength,
        setxattrFlags: 0,
        valueOffset: headSize + rest.name.byteLength + 1,
        valueLength: value.byteLength,
      };
    }
    case FuseOpcode.BATCH_FORGET: {
      const { entries } = SAMPLES[opcode];
      return { count: entries.length, entries };
    }
    default:
      return SAMPLES[opcode];
  }
}

function requestFor(opcode: FuseDecodableOpcode, options: FuseDecodeOptions = {}): Uint8Array {
  return encodeRequest(opcode, HEADER, SAMPLES[opcode] as never, options);
}

function bodyOf(opcode: FuseDecodableOpcode, options: FuseDecodeOptions = {}): Uint8Array {
  return splitRequest(requestFor(opcode, options)).body;
}

/** Asserts `fn` throws a plain FuseProtocolError (framing), not a name error. */
function assertFramingError(fn: () => unknown, message: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof FuseProtocolError, `${message}: ${error}`);
    assert.ok(!(error instanceof FuseNameError), `${message}: got a name error: ${error}`);
    assert.equal(error.errno, FuseErrno.EINVAL);
    return true;
  }, message);
}

function assertNameError(fn: () => unknown, errno: number, message = ""): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof FuseNameError, `${message}: ${error}`);
    assert.equal(error.errno, errno, `${message}: ${error.message}`);
    return true;
  });
}

Deno.test('golden bytes: a LOOKUP of "foo" in the root, laid out by hand', () => {
  // fuse_in_header: len u32, opcode u32, unique u64, nodeid u64, uid u32, gid u32, pid u32, padding u32
  const golden = new Uint8Array([
    0x2c,
    0x00,
    0x00,
    0x00, // len 44 = 40 + "foo\0"
    0x01,
    0x00,
    0x00,
    0x00, // opcode LOOKUP
    0x08,
    0x07,
    0x06,
    0x05,
    0x04,
    0x03,
    0x02,
    0x01, // unique 0x0102030405060708
    0x01,
    0x00,
    0x00,
    0x00,
    0x00,
    0x00,
    0x00,
    0x00, // nodeid FUSE_ROOT_ID
    0xe8,
    0x03,
    0x00,
    0x00, // uid 1000
    0x64,
    0x00,
    0x00,
    0x00, // gid 100
    0x92,
    0x10,
    0x00,
    0x00, // pid 4242
    0x00,
    0x00,
    0x00,
    0x00, // padding
    0x66,
    0x6f,
    0x6f,
    0x00, // "foo\0"
  ]);
  const { header, body } = splitRequest(golden);
  assert.deepEqual(header, {
    len: 44,
    opcode: FuseOpcode.LOOKUP,
    unique: 0x0102030405060708n,
    nodeid: 1n,
    uid: 1000,
    gid: 100,
    pid: 4242,
    totalExtlen: 0,
    padding: 0,
  });
  assert.deepEqual(decodeArgs(header.opcode, body), {
    opcode: FuseOpcode.LOOKUP,
    args: { name: text("foo") },
  });
  const built = encodeRequest(FuseOpcode.LOOKUP, {
    unique: 0x0102030405060708n,
    nodeid: 1n,
    uid: 1000,
    gid: 100,
    pid: 4242,
  }, { name: text("foo") });
  assert.deepEqual(built, golden);
});

Deno.test("every decodable opcode round-trips through encodeRequest and decodeArgs", () => {
  assert.deepEqual(
    [...DECODABLE_OPCODES].sort((a, b) => a - b),
    Object.keys(SAMPLES).map(Number).sort((a, b) => a - b),
  );
  for (const options of [{}, { setxattrExt: true }] as FuseDecodeOptions[]) {
    for (const opcode of DECODABLE_OPCODES) {
      const request = requestFor(opcode, options);
      const { header, body } = splitRequest(request);
      assert.equal(header.opcode, opcode);
      assert.equal(header.len, request.byteLength);
      assert.equal(header.unique, HEADER.unique);
      assert.equal(header.nodeid, HEADER.nodeid);
      const decoded = decodeArgs(opcode, body, options);
      assert.equal(decoded.opcode, opcode);
      assert.deepEqual(decoded.args, expectedArgs(opcode, options), `opcode ${opcode}`);
    }
  }
});

Deno.test("encodeRequestInto writes encodeRequest's bytes in place and nothing around them", () => {
  for (
    const options of [{}, { setxattrExt: true }, { securityContext: true }] as FuseDecodeOptions[]
  ) {
    for (const opcode of DECODABLE_OPCODES) {
      const expected = requestFor(opcode, options);
      const target = new Uint8Array(expected.byteLength + 16).fill(0xa5);
      const len = encodeRequestInto(opcode, HEADER, SAMPLES[opcode] as never, target, 7, options);
      assert.equal(len, expected.byteLength, `opcode ${opcode}`);
      assert.deepEqual(target.subarray(7, 7 + len), expected, `opcode ${opcode}`);
      assert.ok(target.subarray(0, 7).every((b) => b === 0xa5), `opcode ${opcode}: before`);
      assert.ok(target.subarray(7 + len).every((b) => b === 0xa5), `opcode ${opcode}: after`);
      // One byte short: refused before anything is written.
      const short = new Uint8Array(expected.byteLength - 1).fill(0x5a);
      assert.throws(
        () => encodeRequestInto(opcode, HEADER, SAMPLES[opcode] as never, short, 0, options),
        RangeError,
      );
      assert.ok(short.every((b) => b === 0x5a), `opcode ${opcode}: written when it did not fit`);
    }
  }
});

Deno.test("WRITE data and SETXATTR values are located, not copied", () => {
  const write = bodyOf(FuseOpcode.WRITE);
  const args = decodeArgs(FuseOpcode.WRITE, write).args as FuseArgsByOpcode[16];
  assert.deepEqual(
    write.subarray(args.dataOffset, args.dataOffset + args.dataLength),
    SAMPLES[FuseOpcode.WRITE].data,
  );
  for (const setxattrExt of [false, true]) {
    const body = bodyOf(FuseOpcode.SETXATTR, { setxattrExt });
    const request = decodeArgs(FuseOpcode.SETXATTR, body, { setxattrExt });
    assert.equal(request.opcode, FuseOpcode.SETXATTR);
    if (request.opcode !== FuseOpcode.SETXATTR) return;
    const value = body.subarray(
      request.args.valueOffset,
      request.args.valueOffset + request.args.valueLength,
    );
    assert.deepEqual(value, SAMPLES[FuseOpcode.SETXATTR].value);
  }
});

Deno.test("every decoder refuses every truncation of its input as a framing error", () => {
  let cases = 0;
  for (const opcode of DECODABLE_OPCODES) {
    const body = bodyOf(opcode);
    for (let length = 0; length < body.byteLength; length++) {
      assertFramingError(
        () => decodeArgs(opcode, body.slice(0, length)),
        `opcode ${opcode} cut to ${length} of ${body.byteLength} bytes`,
      );
      cases++;
    }
  }
  assert.ok(cases > 500, `only ${cases} truncations tried`);
});

Deno.test("every decoder refuses one byte too many", () => {
  for (const opcode of DECODABLE_OPCODES) {
    const body = bodyOf(opcode);
    const longer = new Uint8Array(body.byteLength + 1);
    longer.set(body);
    longer[body.byteLength] = 0x41;
    assert.throws(() => decodeArgs(opcode, longer), FuseProtocolError, `opcode ${opcode}`);
  }
});

Deno.test("names without their NUL are framing errors", () => {
  for (
    const opcode of [FuseOpcode.LOOKUP, FuseOpcode.UNLINK, FuseOpcode.RMDIR, FuseOpcode.REMOVEXATTR]
  ) {
    assertFramingError(() => decodeArgs(opcode, text("abc")), `opcode ${opcode}`);
  }
  const mkdirHead = bodyOf(FuseOpcode.MKDIR).subarray(0, 8);
  assertFramingError(
    () => decodeArgs(FuseOpcode.MKDIR, new Uint8Array([...mkdirHead, ...text("dir")])),
    "mkdir name without NUL",
  );
  assertFramingError(
    () => decodeArgs(FuseOpcode.SYMLINK, new Uint8Array([...text("name"), 0, ...text("target")])),
    "symlink target without NUL",
  );
});

Deno.test("entry names: limits, '/', NUL and emptiness have their own errors", () => {
  const lookup = (bytes: Uint8Array) =>
    decodeArgs(FuseOpcode.LOOKUP, new Uint8Array([...bytes, 0]));
  const ok = lookup(new Uint8Array(255).fill(0x61));
  assert.equal((ok.args as { name: Uint8Array }).name.byteLength, 255);
  assertNameError(
    () => lookup(new Uint8Array(256).fill(0x61)),
    FuseErrno.ENAMETOOLONG,
    "256 bytes",
  );
  assertNameError(() => lookup(text("a/b")), FuseErrno.EINVAL, "slash");
  assertNameError(() => lookup(text("")), FuseErrno.EINVAL, "empty");
  assertNameError(() => lookup(text("a\0b")), FuseErrno.EINVAL, "embedded NUL");
  // "." and ".." are the filesystem's business, not the codec's.
  assert.deepEqual(lookup(text(".")).args, { name: text(".") });
  assert.deepEqual(lookup(text("..")).args, { name: text("..") });
  const renameHead = new Uint8Array(8);
  assertNameError(
    () => decodeArgs(FuseOpcode.RENAME, new Uint8Array([...renameHead, ...text("a/x\0b\0")])),
    FuseErrno.EINVAL,
    "slash in old name",
  );
  assertNameError(
    () => decodeArgs(FuseOpcode.RENAME, new Uint8Array([...renameHead, ...text("a\0b/y\0")])),
    FuseErrno.EINVAL,
    "slash in new name",
  );
  assertNameError(
    () => decodeArgs(FuseOpcode.RENAME, new Uint8Array([...renameHead, 0, ...text("b\0")])),
    FuseErrno.EINVAL,
    "empty old name",
  );
});

Deno.test("wellFormedLastName takes exactly the names the LOOKUP decoder takes, in place", () => {
  const bodies = [
    text("a\0"),
    new Uint8Array([...new Uint8Array(255).fill(0x61), 0]),
    new Uint8Array([...new Uint8Array(256).fill(0x61), 0]),
    text("a/b\0"),
    text("\0"),
    text("a\0b\0"),
    text("ab"),
    text(".\0"),
    text("..\0"),
    new Uint8Array([0xff, 0xfe, 0]),
  ];
  for (const body of bodies) {
    // The body after 3 bytes of something else, followed by stale bytes it must not look at.
    const bytes = new Uint8Array([7, 7, 7, ...body, 0x2f, 0]);
    const inPlace = wellFormedLastName(bytes, 3, 3 + body.length);
    let decoded: Uint8Array | undefined;
    try {
      decoded = (decodeArgs(FuseOpcode.LOOKUP, body).args as { name: Uint8Array }).name;
    } catch {
      decoded = undefined;
    }
    assert.deepEqual(inPlace, decoded, JSON.stringify([...body.slice(0, 8)]));
    if (inPlace !== undefined) assert.equal(inPlace.buffer, bytes.buffer, "a view");
  }
  assert.equal(wellFormedLastName(text("a\0"), 0, 3), undefined, "past the end");
});

Deno.test("symlink targets may hold '/' up to 4095 bytes; xattr names may hold '/' up to 255", () => {
  const symlink = (target: Uint8Array) =>
    decodeArgs(FuseOpcode.SYMLINK, new Uint8Array([...text("l"), 0, ...target, 0]));
  assert.deepEqual(symlink(text("/a/b")).args, { name: text("l"), target: text("/a/b") });
  symlink(new Uint8Array(4095).fill(0x2f));
  assertNameError(() => symlink(new Uint8Array(4096).fill(0x61)), FuseErrno.ENAMETOOLONG);
  assertNameError(
    () => decodeArgs(FuseOpcode.SYMLINK, new Uint8Array([...text("a/b"), 0, ...text("t"), 0])),
    FuseErrno.EINVAL,
    "slash in the link's own name",
  );
  const removexattr = (name: Uint8Array) =>
    decodeArgs(FuseOpcode.REMOVEXATTR, new Uint8Array([...name, 0]));
  assert.deepEqual(removexattr(text("user.a/b")).args, { name: text("user.a/b") });
  removexattr(new Uint8Array(255).fill(0x61));
  assertNameError(() => removexattr(new Uint8Array(256).fill(0x61)), FuseErrno.ERANGE);
});

Deno.test("decoded names are copies the guest cannot change afterwards", () => {
  const body = new Uint8Array([...text("abc"), 0]);
  const { args } = decodeArgs(FuseOpcode.LOOKUP, body) as { args: { name: Uint8Array } };
  body[0] = 0x2f;
  assert.deepEqual(args.name, text("abc"));
});

Deno.test("security contexts: taken raw after the names when negotiated, refused otherwise", () => {
  const context = new Uint8Array([8, 0, 0, 0, 0, 0, 0, 0]);
  const options = { securityContext: true };
  for (
    const opcode of [
      FuseOpcode.CREATE,
      FuseOpcode.MKDIR,
      FuseOpcode.MKNOD,
      FuseOpcode.SYMLINK,
    ] as const
  ) {
    const sample = { ...SAMPLES[opcode], securityContext: context };
    const request = encodeRequest(opcode, HEADER, sample as never, options);
    const { body } = splitRequest(request);
    assert.deepEqual(decodeArgs(opcode, body, options).args, sample, `opcode ${opcode}`);
    assertFramingError(() => decodeArgs(opcode, body), `opcode ${opcode} without the option`);
    const bare = splitRequest(requestFor(opcode, options)).body;
    assert.deepEqual(
      decodeArgs(opcode, bare, options).args,
      { ...SAMPLES[opcode], securityContext: new Uint8Array(0) },
    );
  }
});

Deno.test("INIT: the 64-byte form keeps flags2 only with INIT_EXT; the 16-byte form has none", () => {
  const body = bodyOf(FuseOpcode.INIT);
  assert.equal(body.byteLength, 64);
  const init = decodeArgs(FuseOpcode.INIT, body).args as FuseArgsByOpcode[26];
  assert.equal(init.flags2, FuseInitFlag2.SECURITY_CTX);

  const withoutExt = encodeRequest(FuseOpcode.INIT, HEADER, {
    ...SAMPLES[FuseOpcode.INIT],
    flags: FuseInitFlag.ASYNC_READ,
  });
  assert.equal(
    (decodeArgs(26, splitRequest(withoutExt).body).args as FuseArgsByOpcode[26]).flags2,
    0,
  );

  const compat = body.slice(0, 16);
  new DataView(compat.buffer).setUint32(12, FuseInitFlag.ASYNC_READ, true);
  assert.deepEqual(decodeArgs(FuseOpcode.INIT, compat).args, {
    major: 7,
    minor: 37,
    maxReadahead: 131072,
    flags: FuseInitFlag.ASYNC_READ,
    flags2: 0,
  });
  assertFramingError(() => decodeArgs(FuseOpcode.INIT, body.slice(0, 16)), "INIT_EXT in 16 bytes");
});

Deno.test("BATCH_FORGET refuses a count that disagrees with the entries present", () => {
  const body = bodyOf(FuseOpcode.BATCH_FORGET).slice();
  new DataView(body.buffer).setUint32(0, 4, true);
  assertFramingError(() => decodeArgs(FuseOpcode.BATCH_FORGET, body), "count 4 with 3 entries");
  new DataView(body.buffer).setUint32(0, 0xffff_ffff, true);
  assertFramingError(() => decodeArgs(FuseOpcode.BATCH_FORGET, body), "huge count");
  const empty = decodeArgs(FuseOpcode.BATCH_FORGET, new Uint8Array(8));
  assert.deepEqual(empty.args, { count: 0, entries: [] });
});

Deno.test("WRITE refuses a size that disagrees with the data present", () => {
  const body = bodyOf(FuseOpcode.WRITE).slice();
  new DataView(body.buffer).setUint32(16, 0xffff_ffff, true);
  assertFramingError(() => decodeArgs(FuseOpcode.WRITE, body), "size larger than the data");
});

Deno.test("opcodes without a decoder are ENOSYS, not EINVAL", () => {
  const unsupported = [
    FuseOpcode.BMAP,
    FuseOpcode.IOCTL,
    FuseOpcode.POLL,
    FuseOpcode.NOTIFY_REPLY,
    FuseOpcode.SETUPMAPPING,
    FuseOpcode.REMOVEMAPPING,
    FuseOpcode.TMPFILE,
    7,
    0,
    4096,
    0xffff_ffff,
  ];
  for (const opcode of unsupported) {
    assert.equal(isDecodableOpcode(opcode), false);
    assert.throws(() => decodeArgs(opcode, new Uint8Array(64)), (error: unknown) => {
      assert.ok(error instanceof FuseUnsupportedOpcodeError);
      assert.ok(error instanceof FuseProtocolError, "callers can catch one class");
      assert.equal(error.errno, FuseErrno.ENOSYS);
      assert.equal(error.opcode, opcode);
      return true;
    });
  }
});

Deno.test("splitRequest checks len against the header and the bytes, and ignores bytes past len", () => {
  const request = requestFor(FuseOpcode.LOOKUP);
  assertFramingError(() => splitRequest(request.subarray(0, 39)), "shorter than a header");
  const tooLong = request.slice();
  new DataView(tooLong.buffer).setUint32(0, request.byteLength + 1, true);
  assertFramingError(() => splitRequest(tooLong), "len past the bytes");
  const tooShort = request.slice();
  new DataView(tooShort.buffer).setUint32(0, 39, true);
  assertFramingError(() => splitRequest(tooShort), "len inside the header");
  const padded = new Uint8Array(request.byteLength + 16);
  padded.set(request);
  const { body } = splitRequest(padded);
  assert.equal(body.byteLength, request.byteLength - 40);
  assert.deepEqual(decodeArgs(FuseOpcode.LOOKUP, body).args, SAMPLES[FuseOpcode.LOOKUP]);
  assert.equal(decodeInHeader(padded).len, request.byteLength);
});

Deno.test("decodeArgs narrows args by opcode", () => {
  const request: FuseRequestArgs = decodeArgs(FuseOpcode.READ, bodyOf(FuseOpcode.READ));
  if (request.opcode === FuseOpcode.READ) {
    const size: number = request.args.size;
    const offset: bigint = request.args.offset;
    assert.equal(size, 65536);
    assert.equal(offset, 4096n);
  } else {
    assert.fail("opcode did not narrow");
  }
});

Deno.test("errnoOfDecodeError maps our errors to their errno and anything else to EIO", () => {
  assert.equal(errnoOfDecodeError(new FuseNameError("x", FuseErrno.ENAMETOOLONG)), 36);
  assert.equal(errnoOfDecodeError(new FuseProtocolError("x")), 22);
  assert.equal(errnoOfDecodeError(new FuseUnsupportedOpcodeError(99, "UNKNOWN(99)")), 38);
  assert.equal(errnoOfDecodeError(new TypeError("bug")), 5);
});

Deno.test("with namesAsViews decoded names are views of the body, checked as before", () => {
  const body = new Uint8Array([...text("abc"), 0]);
  const { args } = decodeArgs(FuseOpcode.LOOKUP, body, { namesAsViews: true }) as {
    args: { name: Uint8Array };
  };
  assert.deepEqual(args.name, text("abc"));
  assert.equal(args.name.buffer, body.buffer, "no copy");
  body[0] = 0x78;
  assert.equal(args.name[0], 0x78);
  const rename = decodeArgs(
    FuseOpcode.RENAME,
    new Uint8Array([9, 0, 0, 0, 0, 0, 0, 0, ...text("a"), 0, ...text("b"), 0]),
    { namesAsViews: true },
  ) as { args: { oldname: Uint8Array; newname: Uint8Array } };
  assert.deepEqual([rename.args.oldname, rename.args.newname], [text("a"), text("b")]);
  assert.throws(
    () =>
      decodeArgs(FuseOpcode.LOOKUP, new Uint8Array([...text("a/b"), 0]), { namesAsViews: true }),
    FuseNameError,
  );
});
