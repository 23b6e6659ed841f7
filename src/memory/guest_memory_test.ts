import assert from "node:assert/strict";
import { arrayBufferRegion, GuestMemory, type GuestRegion } from "./guest_memory.ts";

const PAGE = 4096;

/** Counts reads of `guestAddr` and `userAddr`: a lookup must not scan the table. */
class ReadCounter {
  reads = 0;

  /**
   * A region whose address fields count their reads. The bytes are shared
   * (only translation is under test).
   */
  region(guestAddr: number, size: number, userAddr: number, hostAddr: number): GuestRegion {
    const bytes = new Uint8Array(1);
    const view = new DataView(bytes.buffer);
    // deno-lint-ignore no-this-alias
    const counter = this;
    return {
      get guestAddr() {
        counter.reads++;
        return guestAddr;
      },
      get userAddr() {
        counter.reads++;
        return userAddr;
      },
      size,
      hostAddr,
      bytes,
      view,
    };
  }
}

interface Layout {
  guestAddr: number;
  size: number;
  userAddr: number;
  hostAddr: number;
}

/**
 * `n` regions of 1 to 3 pages from guest 1 MiB up: adjacent except for a
 * one-page gap after every third; user addresses in the reverse order (so
 * the two sort orders differ), each followed by a gap; host addresses apart.
 */
function layout(n: number): Layout[] {
  const out: Layout[] = [];
  let gpa = 0x10_0000;
  for (let i = 0; i < n; i++) {
    const size = PAGE * (1 + (i % 3));
    out.push({
      guestAddr: gpa,
      size,
      userAddr: 0x7f00_0000_0000 + (n - i) * 4 * PAGE,
      hostAddr: 0x5500_0000_0000 + i * 8 * PAGE,
    });
    gpa += size + (i % 3 === 2 ? PAGE : 0);
  }
  return out;
}

/** The same lookup as a linear scan (the reference). */
function linear(
  regions: readonly Layout[],
  key: "guestAddr" | "userAddr",
  addr: number,
  len: number,
) {
  for (const r of regions) {
    const offset = addr - r[key];
    if (offset >= 0 && offset < r.size) return offset + len <= r.size ? { r, offset } : undefined;
  }
  return undefined;
}

/** A memory over `regions` given in a shuffled order, with its read counter. */
function build(regions: readonly Layout[]): { memory: GuestMemory; counter: ReadCounter } {
  const counter = new ReadCounter();
  const shuffled = regions.map((r, i) => ({ r, k: (i * 7919) % regions.length }))
    .sort((a, b) => a.k - b.k)
    .map(({ r }) => counter.region(r.guestAddr, r.size, r.userAddr, r.hostAddr));
  const memory = new GuestMemory(shuffled);
  counter.reads = 0;
  return { memory, counter };
}

/** Runs `lookup` and checks it read at most two regions' addresses (the cached one and the found one). */
function cheap<T>(counter: ReadCounter, lookup: () => T): T {
  counter.reads = 0;
  const result = lookup();
  assert.ok(counter.reads <= 2, `a lookup read ${counter.reads} region addresses`);
  return result;
}

for (const n of [1, 2, 3, 509]) {
  Deno.test(`GuestMemory with ${n} regions: first and last byte of each, gaps, straddles, both address spaces, no scan`, () => {
    const regions = layout(n);
    const { memory, counter } = build(regions);
    assert.deepEqual(memory.regions.map((r) => r.hostAddr), regions.map((r) => r.hostAddr));
    const last = regions[n - 1];
    assert.equal(memory.guestEnd, last.guestAddr + last.size);
    for (const [i, r] of regions.entries()) {
      const end = r.guestAddr + r.size;
      const at = (gpa: number, len = 1) => cheap(counter, () => memory.resolve(gpa, len));
      assert.equal(at(r.guestAddr)?.region.hostAddr, r.hostAddr, `first byte of ${i}`);
      assert.equal(at(r.guestAddr)?.offset, 0);
      assert.equal(at(end - 1)?.region.hostAddr, r.hostAddr, `last byte of ${i}`);
      assert.equal(at(end - 1)?.offset, r.size - 1);
      assert.equal(at(r.guestAddr, r.size)?.offset, 0, "the whole region");
      assert.equal(
        at(end, 0)?.region.hostAddr,
        regions[i + 1]?.guestAddr === end ? regions[i + 1].hostAddr : undefined,
      );
      assert.equal(at(end - 1, 2), undefined, `a range leaving ${i} (into the next or a gap)`);
      assert.equal(at(r.guestAddr, r.size + 1), undefined);
      assert.equal(
        cheap(counter, () => memory.hostAddress(end - 1, 1)),
        r.hostAddr + r.size - 1,
      );
      const next = regions[i + 1];
      if (next && next.guestAddr > end) {
        assert.equal(at(end), undefined, `gap after ${i}`);
        assert.equal(at(next.guestAddr - 1), undefined, `gap before ${i + 1}`);
      }
      const uend = r.userAddr + r.size;
      const user = (ua: number, len = 1) => cheap(counter, () => memory.resolveUserAddr(ua, len));
      assert.equal(user(r.userAddr)?.region.hostAddr, r.hostAddr, `first user byte of ${i}`);
      assert.equal(user(uend - 1)?.offset, r.size - 1, `last user byte of ${i}`);
      assert.equal(user(uend - 1, 2), undefined);
      assert.equal(user(uend), undefined, "user addresses have a gap after each region");
      assert.equal(user(r.userAddr - 1), undefined);
      assert.equal(cheap(counter, () => memory.userToGuest(uend - 1)), end - 1);
    }
    const first = regions[0];
    assert.equal(memory.resolve(first.guestAddr - 1, 1), undefined, "below the first region");
    assert.equal(memory.resolve(0, 1), undefined);
    assert.equal(memory.resolve(memory.guestEnd, 0), undefined, "past the last region");
    assert.equal(memory.resolve(2 ** 60, 1), undefined);
    assert.equal(memory.resolve(-1, 1), undefined);
    assert.equal(memory.resolve(first.guestAddr, -1), undefined);
    assert.equal(memory.resolve(NaN, 1), undefined);
    assert.equal(memory.userToGuest(0), undefined);
    assert.equal(memory.userToGuest(2 ** 52), undefined);
  });
}

Deno.test("GuestMemory with 509 regions: random lookups agree with a linear scan and never scan", () => {
  const regions = layout(509);
  const { memory, counter } = build(regions);
  const lo = regions[0].guestAddr - PAGE;
  const span = memory.guestEnd + PAGE - lo;
  const ulo = Math.min(...regions.map((r) => r.userAddr)) - PAGE;
  const uspan = Math.max(...regions.map((r) => r.userAddr + r.size)) + PAGE - ulo;
  let x = 0x2545f491;
  const random = (m: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % m;
  };
  for (let k = 0; k < 20_000; k++) {
    const len = [0, 1, 512, PAGE, 3 * PAGE][random(5)];
    const gpa = lo + random(span);
    const want = linear(regions, "guestAddr", gpa, len);
    const got = cheap(counter, () => memory.resolve(gpa, len));
    assert.equal(got?.region.hostAddr, want?.r.hostAddr, `gpa 0x${gpa.toString(16)} +${len}`);
    assert.equal(got?.offset, want?.offset);
    const ua = ulo + random(uspan);
    const uwant = linear(regions, "userAddr", ua, len);
    const ugot = cheap(counter, () => memory.resolveUserAddr(ua, len));
    assert.equal(ugot?.region.hostAddr, uwant?.r.hostAddr, `uaddr 0x${ua.toString(16)} +${len}`);
    assert.equal(ugot?.offset, uwant?.offset);
  }
});

Deno.test("GuestMemory refuses regions overlapping in guest or in user addresses; an empty table resolves nothing", () => {
  const r = (guestAddr: number, userAddr: number) => ({
    guestAddr,
    size: 2 * PAGE,
    userAddr,
    hostAddr: 0x5500_0000_0000 + guestAddr,
    bytes: new Uint8Array(1),
    view: new DataView(new ArrayBuffer(1)),
  });
  assert.throws(() => new GuestMemory([r(0, 0x10_0000), r(PAGE, 0x20_0000)]), /overlap at 0x1000/);
  assert.throws(
    () => new GuestMemory([r(0, 0x10_0000), r(0x10_0000, 0x10_1000)]),
    /overlap in user addresses at 0x101000/,
  );
  // Adjacent in both spaces is fine.
  const ok = new GuestMemory([r(2 * PAGE, 0x10_2000), r(0, 0x10_0000)]);
  assert.equal(ok.userToGuest(0x10_2000), 2 * PAGE);
  assert.equal(ok.guestEnd, 4 * PAGE);
  const empty = new GuestMemory([]);
  assert.equal(empty.guestEnd, 0);
  assert.equal(empty.resolve(0, 0), undefined);
  assert.equal(empty.resolveUserAddr(0, 0), undefined);
});

Deno.test("GuestMemory.copyIn writes inside one region and refuses a straddle or a gap without writing", () => {
  const memory = new GuestMemory([arrayBufferRegion(0, 4096), arrayBufferRegion(4096, 4096)]);
  assert.equal(memory.copyIn(4090, new Uint8Array([1, 2, 3])), true);
  assert.deepEqual([...memory.regions[0].bytes.subarray(4089, 4094)], [0, 1, 2, 3, 0]);
  assert.equal(memory.copyIn(4094, new Uint8Array([9, 9, 9, 9])), false, "straddles two regions");
  assert.equal(memory.copyIn(8190, new Uint8Array([9, 9, 9])), false, "runs past the end");
  assert.deepEqual([...memory.regions[0].bytes.subarray(4094)], [0, 0], "nothing written");
  assert.deepEqual([...memory.regions[1].bytes.subarray(0, 2)], [0, 0]);
  assert.deepEqual([...memory.regions[1].bytes.subarray(8190 - 4096)], [0, 0]);
});

Deno.test("GuestMemory.copyOut copies short and long ranges exactly and refuses a straddle or no room", () => {
  const memory = new GuestMemory([arrayBufferRegion(0, 4096), arrayBufferRegion(4096, 4096)]);
  for (const region of memory.regions) {
    region.bytes.forEach((_, i) => region.bytes[i] = (region.guestAddr + i) % 251);
  }
  const expected = (gpa: number, len: number) =>
    Array.from({ length: len }, (_, i) => (gpa + i) % 251);
  // Both ways of copying: byte by byte (short) and through a view (long).
  for (const [gpa, len] of [[4000, 16], [4100, 48], [5000, 49], [100, 1000]]) {
    const dest = new Uint8Array(len + 4);
    assert.equal(memory.copyOut(gpa, dest, 2, len), true, `${len} bytes at ${gpa}`);
    assert.deepEqual([...dest.subarray(2, 2 + len)], expected(gpa, len));
    assert.deepEqual([dest[0], dest[1], dest[len + 2], dest[len + 3]], [0, 0, 0, 0]);
  }
  const dest = new Uint8Array(64);
  assert.equal(memory.copyOut(4090, dest, 0, 10), false, "straddles two regions");
  assert.equal(memory.copyOut(8190, dest, 0, 4), false, "runs past the end");
  assert.equal(memory.copyOut(0, dest, 60, 8), false, "no room in dest");
  assert.equal(memory.copyOut(0, dest, -1, 8), false, "negative position in dest");
  assert.deepEqual([...dest], new Array(64).fill(0), "nothing copied");
});

Deno.test("GuestMemory.contains agrees with resolve", () => {
  const memory = new GuestMemory([arrayBufferRegion(0, 4096), arrayBufferRegion(8192, 4096)]);
  for (
    const [gpa, len] of [[0, 4096], [4095, 1], [4095, 2], [5000, 1], [8192, 0], [12287, 1], [
      12287,
      2,
    ], [-1, 1]]
  ) {
    assert.equal(
      memory.contains(gpa, len),
      memory.resolve(gpa, len) !== undefined,
      `${len} at ${gpa}`,
    );
  }
  assert.equal(memory.contains(4095, 2), false);
  assert.equal(memory.contains(8192, 4096), true);
});
