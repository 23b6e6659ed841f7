/**
 * The JSON documents of `state inspect --json` and `state diff --json` have
 * exactly the fields README's "JSON output" tables document, and the
 * schema version the README names.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { closeFd } from "../ffi/mod.ts";
import {
  INSPECT_JSON_SCHEMA_VERSION,
  inspectState,
  MemorySink,
  MemorySource,
  StateWriter,
  summaryToJson,
} from "../src/migration/mod.ts";
import {
  DIFF_JSON_SCHEMA_VERSION,
  diffStates,
  diffToJson,
  indexStateFile,
} from "../src/migration/state_diff.ts";
import { makeDisk, sampleStream, writeAt } from "../src/migration/testdata/sample_stream.ts";

const README = fileURLToPath(new URL("../README.md", import.meta.url));

/** The field column of the table after the line containing `title`, and its schema version. */
function documentedFields(readme: string, title: string): { fields: Set<string>; version: number } {
  const lines = readme.split("\n");
  const start = lines.findIndex((line) => line.startsWith(title));
  assert.ok(start >= 0, `README has no line starting with ${title}`);
  const version = Number(lines[start].match(/schema version (\d+)/)?.[1]);
  const fields = new Set<string>();
  let i = start + 1;
  while (!lines[i].startsWith("|")) i++;
  for (i += 2; lines[i]?.startsWith("|"); i++) {
    const field = lines[i].match(/^\| `([^`]+)` +\|/)?.[1];
    assert.ok(field, `README table row without a field name: ${lines[i]}`);
    fields.add(field);
  }
  return { fields, version };
}

/**
 * The field paths of `value`: `a.b` for object members, `a[].b` for members
 * of array elements. A documented path that no documented path extends is
 * a leaf (its value may be any JSON, like METADATA's device state).
 */
function producedFields(value: unknown, documented: Set<string>): Set<string> {
  const out = new Set<string>();
  const isLeaf = (path: string) =>
    documented.has(path) &&
    ![...documented].some((d) => d.startsWith(`${path}.`) || d.startsWith(`${path}[]`));
  const walk = (v: unknown, path: string) => {
    if (path !== "" && (isLeaf(path) || v === null || typeof v !== "object")) {
      out.add(path);
    } else if (Array.isArray(v)) {
      if (path !== "") out.add(path);
      for (const element of v) {
        if (typeof element === "object" && element !== null) walk(element, `${path}[]`);
      }
    } else {
      // An array's object elements are described by their members (`a[].b`), not by `a[]`.
      if (path !== "" && !path.endsWith("[]")) out.add(path);
      for (const [key, child] of Object.entries(v as object)) {
        walk(child, path === "" ? key : `${path}.${key}`);
      }
    }
  };
  walk(value, "");
  return out;
}

function assertSameFields(produced: Set<string>, documented: Set<string>, what: string): void {
  const undocumented = [...produced].filter((f) => !documented.has(f));
  const missing = [...documented].filter((f) => !produced.has(f));
  assert.deepEqual(undocumented, [], `${what}: fields produced but not in the README`);
  assert.deepEqual(missing, [], `${what}: fields in the README but not produced`);
}

Deno.test("state inspect --json: the README documents exactly its fields and its schema version", async () => {
  const readme = await Deno.readTextFile(README);
  const { fields, version } = documentedFields(readme, "`state inspect --json` (schema version");
  const json = summaryToJson(inspectState(new MemorySource(sampleStream())));
  assert.equal(json.schemaVersion, INSPECT_JSON_SCHEMA_VERSION);
  assert.equal(version, INSPECT_JSON_SCHEMA_VERSION);
  assertSameFields(producedFields(json, fields), fields, "inspect");
});

/** A stream of `disk` with an optional section holding `extra`. */
function streamOf(disk: number, extra: Uint8Array, identity: Record<string, unknown>): Uint8Array {
  const sink = new MemorySink();
  const writer = new StateWriter(sink, { kind: "blk", identity });
  writer.writeMetadata({ vhostd: "t", kind: "blk", identity, state: { n: extra[0] } });
  writer.beginSection(0x4321, false);
  writer.writeChunk(extra);
  writer.endSection();
  writer.writeRamDiskFromFd(disk, 1 << 20);
  writer.finish();
  return sink.bytes().slice();
}

Deno.test("state diff --json: the README documents exactly its fields and its schema version", async () => {
  const readme = await Deno.readTextFile(README);
  const { fields, version } = documentedFields(readme, "`state diff --json` (schema version");
  const dir = await Deno.makeTempDir({ prefix: "vhostd-schema-" });
  const disk = makeDisk(1 << 20, [[0, 5000, 1]]);
  try {
    // Every kind of difference, so that every field appears.
    await Deno.writeFile(`${dir}/a`, streamOf(disk, new Uint8Array([1]), { size: 1 << 20 }));
    writeAt(disk, new Uint8Array(100).fill(9), 4000);
    await Deno.writeFile(`${dir}/b`, streamOf(disk, new Uint8Array([2]), { size: 1 << 20, x: 1 }));
    const a = indexStateFile(`${dir}/a`);
    const b = indexStateFile(`${dir}/b`);
    const json = diffToJson(diffStates(a, b), a, b);
    assert.equal(json.schemaVersion, DIFF_JSON_SCHEMA_VERSION);
    assert.equal(version, DIFF_JSON_SCHEMA_VERSION);
    assertSameFields(producedFields(json, fields), fields, "diff");
  } finally {
    closeFd(disk);
    await Deno.remove(dir, { recursive: true });
  }
});
