import assert from "node:assert/strict";
import { describeFsState } from "./fs_state_view.ts";

const hex = (s: string) =>
  [...new TextEncoder().encode(s)].map((b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("describeFsState shows inodes as paths and handles with their flags", () => {
  const lines = describeFsState({
    fs: {
      init: { minor: 37 },
      inodes: [
        { nodeid: "2", parent: "1", name: hex("dir"), lookups: "1", type: 0o040000 },
        { nodeid: "3", parent: "2", name: hex("a b.txt"), lookups: "2", type: 0o100000 },
        { nodeid: "4", parent: null, name: null, lookups: "1", type: 0o100000 },
        { nodeid: "5", parent: "1", name: "ff", lookups: "1", type: 0o120000 },
      ],
      handles: [{ fh: "7", nodeid: "3", flags: 0o2002, isDir: false }, {
        fh: "8",
        nodeid: "2",
        flags: 0,
        isDir: true,
      }],
    },
  });
  assert.match(lines[0], /FUSE 7\.37, 4 inode\(s\) besides the root, 2 open handle\(s\)/);
  assert.ok(
    lines.some((l) => /inode 3 +file +\/dir\/a b\.txt +\(lookups 2\)/.test(l)),
    lines.join("\n"),
  );
  assert.ok(lines.some((l) => /inode 4 .*<unlinked>/.test(l)));
  assert.ok(lines.some((l) => /link +\/\\xff/.test(l)), "non-UTF-8 names are escaped");
  assert.ok(lines.some((l) => /file handle 7 +\/dir\/a b\.txt +O_RDWR\|O_APPEND/.test(l)));
  assert.ok(lines.some((l) => /dir handle +8 +\/dir/.test(l)));
});

Deno.test("describeFsState never throws on malformed state", () => {
  assert.deepEqual(describeFsState(null), ["  fs state: not in the expected form"]);
  const lines = describeFsState({
    fs: { init: null, inodes: [3, { nodeid: "9", parent: "77", name: "zz" }], handles: [null] },
  });
  assert.match(lines[0], /before INIT/);
  assert.ok(lines.some((l) => l.includes("<unlinked>")));
});
