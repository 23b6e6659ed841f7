import assert from "node:assert/strict";
import { AT_FDCWD, AT_SYMLINK_NOFOLLOW, fstatat, statxViewOrErrno } from "../../../../ffi/mod.ts";
import { encodeAttr } from "../fuse/fuse_reply.ts";
import { FUSE_ATTR } from "../fuse/fuse_layouts.ts";
import { attrFromStatx, writeAttrFromStat, writeAttrFromStatx } from "./fs_attr.ts";

Deno.test("writeAttrFromStatx and writeAttrFromStat write what encodeAttr(attrFromStatx) writes, for every kind of file", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhostd-attr-" });
  try {
    Deno.writeTextFileSync(`${dir}/file`, "some bytes");
    Deno.chmodSync(`${dir}/file`, 0o4751);
    Deno.symlinkSync("file", `${dir}/link`);
    Deno.mkdirSync(`${dir}/sub`);
    // Before 1970, and a sparse size past 2^32.
    Deno.writeFileSync(`${dir}/old`, new Uint8Array(0));
    Deno.utimeSync(`${dir}/old`, new Date(-86_400_500), new Date(-3_000_000_250));
    using big = Deno.openSync(`${dir}/big`, { write: true, create: true });
    big.truncateSync(5 * 2 ** 32 + 3);
    const paths = [
      `${dir}/file`,
      `${dir}/link`,
      `${dir}/sub`,
      `${dir}/old`,
      `${dir}/big`,
      "/dev/null", // a character device: rdev
    ];
    const writers = [
      (path: string, view: DataView) => {
        const statx = statxViewOrErrno(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW);
        assert.ok(typeof statx !== "number", path);
        writeAttrFromStatx(statx, view, 4);
      },
      (path: string, view: DataView) =>
        writeAttrFromStat(fstatat(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW), view, 4),
    ];
    for (const [path, write] of paths.flatMap((path) => writers.map((w) => [path, w] as const))) {
      const expected = encodeAttr(attrFromStatx(fstatat(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW)));
      const target = new Uint8Array(FUSE_ATTR.size + 8).fill(0xee);
      write(path, new DataView(target.buffer));
      assert.deepEqual(target.subarray(4, 4 + FUSE_ATTR.size), expected, path);
      assert.deepEqual([...target.subarray(0, 4), ...target.subarray(4 + FUSE_ATTR.size)], [
        0xee,
        0xee,
        0xee,
        0xee,
        0xee,
        0xee,
        0xee,
        0xee,
      ]);
    }
    assert.equal(statxViewOrErrno(AT_FDCWD, `${dir}/missing`, 0), -2, "ENOENT, negated");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
