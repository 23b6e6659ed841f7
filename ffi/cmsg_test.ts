import assert from "node:assert/strict";
import { cmsgLen, cmsgSpace, collectRights, writeRights } from "./cmsg.ts";
import { SCM_CREDENTIALS, SOL_SOCKET } from "./constants.ts";

Deno.test("cmsg sizes follow the x86-64 CMSG_LEN/CMSG_SPACE macros", () => {
  assert.equal(cmsgLen(4), 20);
  assert.equal(cmsgSpace(4), 24);
  assert.equal(cmsgSpace(8), 24);
  assert.equal(cmsgSpace(12), 32);
  assert.equal(cmsgSpace(0), 16);
});

Deno.test("writeRights packs one SCM_RIGHTS message that collectRights reads back", () => {
  const view = new DataView(new ArrayBuffer(64));
  new Uint8Array(view.buffer).fill(0xee);
  const space = writeRights(view, 0, [3, 4, 5]);
  assert.equal(space, 32);
  assert.equal(view.getBigUint64(0, true), 28n);
  assert.equal(view.getInt32(8, true), 1);
  assert.equal(view.getInt32(12, true), 1);
  assert.equal(view.getUint32(28, true), 0, "padding zeroed");
  assert.deepEqual(collectRights(view, space), [3, 4, 5]);
});

Deno.test("collectRights gathers several messages and skips other types", () => {
  const view = new DataView(new ArrayBuffer(128));
  let offset = writeRights(view, 0, [10]);
  // An SCM_CREDENTIALS message (12 bytes of ucred) between two rights messages.
  view.setBigUint64(offset, BigInt(cmsgLen(12)), true);
  view.setInt32(offset + 8, SOL_SOCKET, true);
  view.setInt32(offset + 12, SCM_CREDENTIALS, true);
  view.setInt32(offset + 16, 999, true);
  offset += cmsgSpace(12);
  offset += writeRights(view, offset, [11, 12]);
  assert.deepEqual(collectRights(view, offset), [10, 11, 12]);
});

Deno.test("collectRights stops at malformed or truncated data", () => {
  const view = new DataView(new ArrayBuffer(64));
  writeRights(view, 0, [7, 8, 9]);
  // Control length cut inside the data: only whole fds count.
  assert.deepEqual(collectRights(view, 24), [7, 8]);
  assert.deepEqual(collectRights(view, 15), []);
  view.setBigUint64(0, 3n, true); // cmsg_len smaller than a header
  assert.deepEqual(collectRights(view, 64), []);
});
