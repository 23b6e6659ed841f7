import assert from "node:assert/strict";
import { closeFd } from "../../ffi/mod.ts";
import { MemorySink } from "./byte_stream.ts";
import {
  diffStates,
  diffToJson,
  indexStateFile,
  RANGE_MERGE_GAP,
  StateDiffInputError,
} from "./state_diff.ts";
import { StateWriter } from "./state_writer.ts";
import {
  makeDisk,
  pattern,
  SAMPLE_EXTENTS,
  SAMPLE_IDENTITY,
  SAMPLE_SIZE,
  SAMPLE_STATE,
  writeAt,
} from "./testdata/sample_stream.ts";

const MiB = 1024 * 1024;

interface Variant {
  createdAt?: number;
  state?: Record<string, unknown>;
  identity?: Record<string, unknown>;
  /** Changes to the disk: [offset, bytes]. */
  writes?: [number, Uint8Array][];
  extraSection?: Uint8Array;
  ramDisk?: boolean;
}

/** A state file of the sample disk with `variant`'s changes; returns its path. */
async function stateFile(dir: string, name: string, variant: Variant = {}): Promise<string> {
  const fd = makeDisk();
  try {
    for (const [offset, bytes] of variant.writes ?? []) writeAt(fd, bytes, offset);
    const identity = variant.identity ?? SAMPLE_IDENTITY;
    const sink = new MemorySink();
    const writer = new StateWriter(sink, {
      kind: "blk",
      identity,
      createdAt: variant.createdAt ?? 1000,
    });
    writer.writeMetadata({
      vhostd: "test",
      kind: "blk",
      identity,
      state: variant.state ?? SAMPLE_STATE,
    });
    if (variant.extraSection) {
      writer.beginSection(0x4321, false);
      writer.writeChunk(variant.extraSection);
      writer.endSection();
    }
    if (variant.ramDisk ?? true) {
      writer.writeRamDiskFromFd(fd, SAMPLE_SIZE, { chunkSize: 64 * 1024 });
    }
    writer.finish();
    const path = `${dir}/${name}`;
    await Deno.writeFile(path, sink.bytes());
    return path;
  } finally {
    closeFd(fd);
  }
}

async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vhostd-diff-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function diffFiles(a: string, b: string) {
  return diffStates(indexStateFile(a), indexStateFile(b));
}

Deno.test("state diff: two saves of the same state are identical, creation times aside", () =>
  inTempDir(async (dir) => {
    const a = await stateFile(dir, "a", { createdAt: 1000 });
    const b = await stateFile(dir, "b", { createdAt: 2000 });
    const diff = diffFiles(a, b);
    assert.equal(diff.identical, true);
    assert.deepEqual(diff.header, []);
    assert.deepEqual(diff.metadata, []);
    assert.equal(diff.sections.differ, false);
    assert.equal(diff.ramDisk?.rangeCount, 0);
    assert.equal(diff.ramDisk?.size, SAMPLE_SIZE);
    assert.notEqual(diff.createdAt.a, diff.createdAt.b);
  }));

Deno.test("state diff: RAM disk differences as exact byte ranges, across windows and zero blocks", () =>
  inTempDir(async (dir) => {
    const a = await stateFile(dir, "a");
    const [dataOffset] = SAMPLE_EXTENTS[3]; // 70 000 bytes of data at 2 MiB
    const writes: [number, Uint8Array][] = [
      [5, new Uint8Array([0])], // one byte of the first extent (its data bytes are never 0)
      [MiB - 3000, pattern(6000, 40)], // a range over the first window boundary, in a zero area
      [dataOffset + 100, new Uint8Array(4096 * 3)], // data zeroed: B leaves those blocks out
      [3 * MiB, pattern(10, 41)], // inside an all-zero area of A
      [3 * MiB + 10 + RANGE_MERGE_GAP - 1, new Uint8Array([7])], // close enough to merge
    ];
    const b = await stateFile(dir, "b", { writes });
    const ram = diffFiles(a, b).ramDisk!;
    // The patterned bytes differ from what was there except where they happen to match:
    // count the truth from the disks themselves.
    const diskA = new Uint8Array(SAMPLE_SIZE);
    const diskB = new Uint8Array(SAMPLE_SIZE);
    for (const [offset, length, seed] of SAMPLE_EXTENTS) {
      diskA.set(pattern(length, seed), offset);
      diskB.set(pattern(length, seed), offset);
    }
    for (const [offset, bytes] of writes) diskB.set(bytes, offset);
    const differing = diskA.reduce((n, byte, i) => n + (byte !== diskB[i] ? 1 : 0), 0);
    assert.equal(ram.differingBytes, differing);
    const first = (from: number) => {
      let i = from;
      while (diskA[i] === diskB[i]) i++;
      return i;
    };
    const last = (to: number) => {
      let i = to - 1;
      while (diskA[i] === diskB[i]) i--;
      return i + 1;
    };
    const expected = [
      { offset: 5, length: 1 },
      { offset: first(MiB - 3000), length: last(MiB + 3000) - first(MiB - 3000) },
      {
        offset: first(dataOffset + 100),
        length: last(dataOffset + 100 + 4096 * 3) - first(dataOffset + 100),
      },
      { offset: first(3 * MiB), length: RANGE_MERGE_GAP + 10 - (first(3 * MiB) - 3 * MiB) },
    ];
    assert.deepEqual(ram.ranges, expected);
    assert.equal(ram.rangeCount, 4);
    assert.equal(ram.rangeBytes, expected.reduce((n, r) => n + r.length, 0));
    assert.equal(diffFiles(a, b).identical, false);
  }));

Deno.test("state diff: metadata values, header fields and sections that differ", () =>
  inTempDir(async (dir) => {
    const a = await stateFile(dir, "a");
    const b = await stateFile(dir, "b", {
      state: { ...SAMPLE_STATE, generation: 8, added: [1, 2] },
      identity: { ...SAMPLE_IDENTITY, serial: "other" },
      extraSection: new Uint8Array([1, 2, 3]),
    });
    const diff = diffFiles(a, b);
    assert.equal(diff.identical, false);
    assert.deepEqual(diff.header.map((d) => d.field), ["fingerprint"]);
    assert.deepEqual(diff.metadata, [
      { path: "identity.serial", a: "sample-disk", b: "other" },
      { path: "state.added", a: undefined, b: [1, 2] },
      { path: "state.generation", a: 7, b: 8 },
    ]);
    assert.deepEqual(diff.sections, {
      a: ["METADATA", "RAM_DISK"],
      b: ["METADATA", "type 17185", "RAM_DISK"],
      differ: true,
    });
    assert.equal(diff.ramDisk?.rangeCount, 0, "the disks are the same");
    const json = diffToJson(diff, indexStateFile(a), indexStateFile(b));
    assert.deepEqual((json.metadata as unknown[])[1], { path: "state.added", a: null, b: [1, 2] });

    const c = await stateFile(dir, "c", { extraSection: new Uint8Array([1, 2, 4]) });
    const d = await stateFile(dir, "d", { extraSection: new Uint8Array([1, 2, 3]) });
    const payloads = diffFiles(c, d).payloads;
    assert.deepEqual(payloads.map((p) => [p.index, p.name]), [[1, "type 17185"]]);

    const noDisk = await stateFile(dir, "e", { ramDisk: false });
    const withoutDisk = diffFiles(a, noDisk);
    assert.equal(withoutDisk.ramDisk, undefined);
    assert.equal(withoutDisk.sections.differ, true);
  }));

Deno.test("state diff: a file that is missing, not a state file, truncated or corrupt is bad input", () =>
  inTempDir(async (dir) => {
    const a = await stateFile(dir, "a");
    const bytes = await Deno.readFile(a);
    await Deno.writeFile(`${dir}/cut`, bytes.subarray(0, bytes.length - 30));
    const flipped = bytes.slice();
    flipped[bytes.length - 5000] ^= 1;
    await Deno.writeFile(`${dir}/flipped`, flipped);
    await Deno.writeTextFile(`${dir}/text`, "hello\n");
    const cases: [string, RegExp][] = [
      [`${dir}/missing`, /cannot open/],
      [`${dir}/text`, /not a vhostd state file/],
      [`${dir}/cut`, /truncated/],
      [`${dir}/flipped`, /checksum mismatch/],
    ];
    for (const [path, why] of cases) {
      assert.throws(
        () => indexStateFile(path),
        (e) => e instanceof StateDiffInputError && why.test(e.message),
        path,
      );
    }
  }));
