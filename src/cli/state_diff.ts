/**
 * `vhostd state diff A B [--json]`: what differs between two state files,
 * readably or as JSON. Exit codes as `cmp` and `diff`: 0 identical, 1
 * different, 2 bad input (thrown as UsageError).
 *
 * @module
 */

import {
  diffStates,
  diffToJson,
  type IndexedState,
  indexStateFile,
  MAX_LISTED_RANGES,
  type RamDiskDifference,
  RANGE_MERGE_GAP,
  type StateDiff,
  StateDiffInputError,
} from "../migration/state_diff.ts";
import { UsageError } from "./usage_error.ts";

/** Ranges shown in the readable output (the JSON lists up to MAX_LISTED_RANGES). */
const SHOWN_RANGES = 20;

function show(value: unknown): string {
  return value === undefined ? "(absent)" : JSON.stringify(value);
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function ramDiskLines(ram: RamDiskDifference): string[] {
  if (ram.rangeCount === 0) return [`RAM disk: the same (${ram.size} bytes compared)`];
  const lines = [
    `RAM disk: ${ram.rangeCount} range${ram.rangeCount === 1 ? "" : "s"} differ, ` +
    `${ram.rangeBytes} bytes in all (${ram.differingBytes} bytes differ; differences fewer ` +
    `than ${RANGE_MERGE_GAP} bytes apart are one range)`,
  ];
  for (const range of ram.ranges.slice(0, SHOWN_RANGES)) {
    lines.push(
      `  [${hex(range.offset)}, ${hex(range.offset + range.length)})  ${range.length} bytes`,
    );
  }
  const hidden = ram.rangeCount - Math.min(ram.ranges.length, SHOWN_RANGES);
  if (hidden > 0) {
    lines.push(`  ... and ${hidden} more (--json lists the first ${MAX_LISTED_RANGES})`);
  }
  return lines;
}

/** The readable report: one line per difference, and a last line saying the verdict. */
export function formatDiff(diff: StateDiff, a: IndexedState, b: IndexedState): string {
  const lines = [`A: ${a.path}`, `B: ${b.path}`];
  for (const d of diff.header) lines.push(`header ${d.field}: ${show(d.a)} | ${show(d.b)}`);
  if (diff.createdAt.a !== diff.createdAt.b) {
    lines.push(`created at: ${diff.createdAt.a} | ${diff.createdAt.b} (not counted)`);
  }
  if (diff.sections.differ) {
    lines.push(`sections: ${diff.sections.a.join(", ")} | ${diff.sections.b.join(", ")}`);
  }
  for (const p of diff.payloads) {
    lines.push(`section ${p.index} (${p.name}) payload: sha256 ${p.a} | ${p.b}`);
  }
  for (const m of diff.metadata) lines.push(`metadata ${m.path}: ${show(m.a)} | ${show(m.b)}`);
  if (diff.ramDisk) lines.push(...ramDiskLines(diff.ramDisk));
  lines.push(diff.identical ? "identical device state" : "the device states differ");
  return lines.join("\n");
}

/** Runs the diff of `pathA` and `pathB`; returns 0 (identical) or 1 (different). */
export function runStateDiff(pathA: string, pathB: string, json: boolean): number {
  let a: IndexedState;
  let b: IndexedState;
  try {
    a = indexStateFile(pathA);
    b = indexStateFile(pathB);
  } catch (e) {
    if (e instanceof StateDiffInputError) throw new UsageError(e.message);
    throw e;
  }
  const diff = diffStates(a, b);
  console.log(json ? JSON.stringify(diffToJson(diff, a, b), null, 2) : formatDiff(diff, a, b));
  return diff.identical ? 0 : 1;
}
