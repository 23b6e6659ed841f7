import assert from "node:assert/strict";
import { EMFILE, ESTALE, memfdCreate, SyscallError } from "../../../../ffi/mod.ts";
import { FdCache, MIN_FD_CACHE_SIZE } from "./fd_cache.ts";

/** What each fd number was last opened as here (test files run in parallel in one process). */
const openedAs = new Map<number, string>();

/** A new fd of its own (a memfd with a unique name), recorded in {@linkcode openedAs}. */
function openRoot(): number {
  const name = `fd-cache-test-${crypto.randomUUID()}`;
  const fd = memfdCreate(name);
  openedAs.set(fd, name);
  return fd;
}

/**
 * True while `fd` is still what this file opened as that number: once it
 * is closed, another test may get the same number for something else.
 */
function isOpen(fd: number): boolean {
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`).includes(`memfd:${openedAs.get(fd)} `);
  } catch {
    return false;
  }
}

Deno.test("FdCache opens on a miss, reuses on a hit, and closes the least recently used", () => {
  const cache = new FdCache<string>(MIN_FD_CACHE_SIZE);
  const opened: string[] = [];
  const open = (key: string) => () => {
    opened.push(key);
    return openRoot();
  };
  const fds = new Map<string, number>();
  for (let i = 0; i < MIN_FD_CACHE_SIZE; i++) fds.set(`k${i}`, cache.get(`k${i}`, open(`k${i}`)));
  assert.equal(cache.size, MIN_FD_CACHE_SIZE);
  // A hit opens nothing and makes k0 the most recently used.
  assert.equal(cache.get("k0", open("k0")), fds.get("k0"));
  assert.equal(opened.length, MIN_FD_CACHE_SIZE);
  // One more key: k1 (now the least recently used) goes, and its fd is closed.
  const extra = cache.get("extra", open("extra"));
  assert.equal(cache.size, MIN_FD_CACHE_SIZE);
  assert.ok(!cache.has("k1"));
  assert.ok(cache.has("k0"));
  assert.ok(!isOpen(fds.get("k1")!));
  assert.ok(isOpen(fds.get("k0")!) && isOpen(extra));
  // k1 again: opened anew.
  cache.get("k1", open("k1"));
  assert.equal(opened.at(-1), "k1");
  assert.ok(!cache.has("k2"), "k2 was the least recently used");
  cache.clear();
  assert.equal(cache.size, 0);
  assert.ok(!isOpen(fds.get("k0")!) && !isOpen(extra));
});

Deno.test("FdCache.put replaces and closes a key's previous fd; drop closes; a failed open caches nothing", () => {
  const cache = new FdCache<object>(MIN_FD_CACHE_SIZE);
  const key = {};
  const first = openRoot();
  cache.put(key, first);
  const second = openRoot();
  cache.put(key, second);
  assert.equal(cache.size, 1);
  assert.ok(!isOpen(first));
  assert.equal(cache.get(key, () => assert.fail("cached")), second);
  cache.drop(key);
  assert.ok(!isOpen(second));
  cache.drop(key); // unknown: nothing happens
  assert.throws(() =>
    cache.get(key, () => {
      throw new Error("gone");
    }), /gone/);
  assert.equal(cache.size, 0);
});

Deno.test("FdCache out of fds (EMFILE) halves itself, closing its oldest fds, and opens once more", () => {
  const cache = new FdCache<number>(4 * MIN_FD_CACHE_SIZE);
  const fds: number[] = [];
  for (let i = 0; i < 4 * MIN_FD_CACHE_SIZE; i++) fds.push(cache.get(i, openRoot));
  let calls = 0;
  const fd = cache.get(-1, () => {
    if (calls++ === 0) throw new SyscallError("open_by_handle_at", EMFILE);
    return openRoot();
  });
  assert.equal(calls, 2);
  assert.equal(cache.capacity, 2 * MIN_FD_CACHE_SIZE);
  assert.equal(cache.size, 2 * MIN_FD_CACHE_SIZE);
  assert.ok(cache.has(-1) && isOpen(fd));
  assert.ok(!cache.has(0), "the oldest went");
  assert.ok(isOpen(fds.at(-1)!) && cache.has(fds.length - 1), "the newest stayed");
  // Another error, or no room left to make: the error passes through.
  assert.throws(
    () =>
      cache.get(-2, () => {
        throw new SyscallError("open_by_handle_at", ESTALE);
      }),
    /ESTALE/,
  );
  const small = new FdCache<number>(MIN_FD_CACHE_SIZE);
  for (let i = 0; i < MIN_FD_CACHE_SIZE; i++) small.get(i, openRoot);
  assert.throws(
    () =>
      small.get(-1, () => {
        throw new SyscallError("open_by_handle_at", EMFILE);
      }),
    /EMFILE/,
  );
  assert.equal(small.size, MIN_FD_CACHE_SIZE);
  cache.clear();
  small.clear();
});

Deno.test("FdCache refuses a capacity below the minimum", () => {
  assert.throws(() => new FdCache(MIN_FD_CACHE_SIZE - 1), RangeError);
  assert.throws(() => new FdCache(MIN_FD_CACHE_SIZE + 0.5), RangeError);
  assert.equal(new FdCache().capacity >= MIN_FD_CACHE_SIZE, true);
});
