import assert from "node:assert/strict";
import { DirtyLog, LOG_PAGE_SIZE } from "./dirty_log.ts";

function setBits(bits: Uint8Array): number[] {
  const pages: number[] = [];
  bits.forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) pages.push(i * 8 + b);
  });
  return pages;
}

Deno.test("DirtyLog marks exactly the pages a write touches", () => {
  const bits = new Uint8Array(4);
  const log = new DirtyLog(bits);
  log.markWritten(0, 1);
  log.markWritten(LOG_PAGE_SIZE * 3 - 1, 2); // straddles pages 2 and 3
  log.markWritten(LOG_PAGE_SIZE * 9, LOG_PAGE_SIZE); // exactly page 9
  log.markWritten(LOG_PAGE_SIZE * 20, 0); // empty write marks nothing
  assert.deepEqual(setBits(bits), [0, 2, 3, 9]);
  assert.equal(log.takeMarked(), 4);
  assert.equal(log.takeMarked(), 0);
});

Deno.test("DirtyLog keeps bits set by others and ignores pages beyond the log", () => {
  const bits = new Uint8Array(1);
  bits[0] = 0b1000_0000; // the front-end's own bit
  const log = new DirtyLog(bits);
  log.markWritten(LOG_PAGE_SIZE, 1);
  log.markWritten(LOG_PAGE_SIZE * 8, 1); // page 8: outside a one-byte log
  assert.deepEqual(setBits(bits), [1, 7]);
  assert.equal(log.outOfRange, 1);
});

Deno.test("DirtyLog: a write straddling the log's end marks the pages inside, counts those beyond, never writes past the bitmap", () => {
  const backing = new Uint8Array(3);
  const bits = backing.subarray(0, 2); // 16 pages; the byte after is not the log's
  const log = new DirtyLog(bits);
  log.markWritten(LOG_PAGE_SIZE * 14, LOG_PAGE_SIZE * 4); // pages 14..17
  assert.deepEqual(setBits(bits), [14, 15]);
  assert.equal(backing[2], 0, "nothing written past the log");
  assert.equal(log.takeMarked(), 2, "the pages that were marked are reported");
  assert.equal(log.outOfRange, 2);
  log.markWritten(LOG_PAGE_SIZE * 2 ** 33, 1); // far beyond: no wrap-around into the log
  assert.deepEqual(setBits(bits), [14, 15]);
  assert.equal(log.outOfRange, 3);
  assert.equal(log.takeMarked(), 0);
});
