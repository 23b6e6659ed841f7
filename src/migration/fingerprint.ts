/**
 * Configuration fingerprints: the identity of a device (the configuration
 * that must be the same on both sides of a migration) as canonical JSON and
 * its SHA-256.
 *
 * @module
 */

import { createHash } from "node:crypto";

const MAX_SHOWN_VALUE = 80;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function describePath(path: string): string {
  return path === "" ? "the identity" : path;
}

function canonicalize(value: unknown, path: string, seen: Set<object>, out: string[]): void {
  switch (typeof value) {
    case "string":
    case "boolean":
      out.push(JSON.stringify(value));
      return;
    case "number":
      if (!Number.isFinite(value)) {
        throw new TypeError(`${describePath(path)} is ${value}, which JSON cannot hold`);
      }
      out.push(JSON.stringify(value));
      return;
    case "object":
      break;
    default:
      throw new TypeError(`${describePath(path)} is a ${typeof value}, which JSON cannot hold`);
  }
  if (value === null) {
    out.push("null");
    return;
  }
  if (seen.has(value)) throw new TypeError(`${describePath(path)} refers to itself`);
  seen.add(value);
  if (Array.isArray(value)) {
    out.push("[");
    value.forEach((element, i) => {
      if (i > 0) out.push(",");
      canonicalize(element, `${path}[${i}]`, seen, out);
    });
    out.push("]");
  } else if (isPlainObject(value)) {
    out.push("{");
    let first = true;
    for (const key of Object.keys(value).sort()) {
      // Like JSON.stringify, a property holding undefined is absent.
      if (value[key] === undefined) continue;
      if (!first) out.push(",");
      first = false;
      out.push(JSON.stringify(key), ":");
      canonicalize(value[key], path === "" ? key : `${path}.${key}`, seen, out);
    }
    out.push("}");
  } else {
    const kind = value.constructor?.name ?? "object";
    throw new TypeError(`${describePath(path)} is a ${kind}, not plain JSON data`);
  }
  seen.delete(value);
}

/**
 * `value` as canonical JSON: object keys sorted recursively (by UTF-16 code
 * units, as `Array.prototype.sort`), no whitespace. Properties holding
 * `undefined` are left out, as JSON.stringify does. Throws a TypeError for
 * what JSON cannot represent faithfully: non-finite numbers, bigints,
 * functions, `undefined` in arrays, cycles and non-plain objects (Date, Map,
 * typed arrays), so that two equal configurations always hash alike.
 *
 * @example
 * ```ts
 * import { canonicalJson } from "./fingerprint.ts";
 * canonicalJson({ b: 1, a: [true, { d: null, c: "x" }] });
 * // '{"a":[true,{"c":"x","d":null}],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  canonicalize(value, "", new Set(), out);
  return out.join("");
}

/** SHA-256 (32 bytes) of the canonical JSON of a device's identity. */
export function fingerprint(identity: Record<string, unknown>): Uint8Array {
  const digest = createHash("sha256").update(canonicalJson(identity)).digest();
  return new Uint8Array(digest.buffer, digest.byteOffset, digest.length).slice();
}

/** Lower-case hex of `bytes` (for fingerprints in logs and `state inspect`). */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function show(value: unknown): string {
  let text: string;
  try {
    text = canonicalJson(value);
  } catch {
    text = String(value);
  }
  return text.length <= MAX_SHOWN_VALUE ? text : `${text.slice(0, MAX_SHOWN_VALUE - 3)}...`;
}

function sameJson(a: unknown, b: unknown): boolean {
  try {
    return canonicalJson(a) === canonicalJson(b);
  } catch {
    return false;
  }
}

function firstDifference(expected: unknown, found: unknown, path: string): string | undefined {
  if (sameJson(expected, found)) return undefined;
  if (Array.isArray(expected) && Array.isArray(found)) {
    const common = Math.min(expected.length, found.length);
    for (let i = 0; i < common; i++) {
      const difference = firstDifference(expected[i], found[i], `${path}[${i}]`);
      if (difference !== undefined) return difference;
    }
    return `${describePath(path)} has ${found.length} elements in the state, ` +
      `${expected.length} here`;
  }
  if (isPlainObject(expected) && isPlainObject(found)) {
    const keys = new Set([...Object.keys(expected), ...Object.keys(found)]);
    for (const key of [...keys].sort()) {
      const child = path === "" ? key : `${path}.${key}`;
      const mine = expected[key];
      const theirs = found[key];
      if (theirs === undefined && mine !== undefined) {
        return `${child} is missing in the state, ${show(mine)} here`;
      }
      if (mine === undefined && theirs !== undefined) {
        return `${child} is ${show(theirs)} in the state, absent here`;
      }
      const difference = firstDifference(mine, theirs, child);
      if (difference !== undefined) return difference;
    }
  }
  return `${describePath(path)} is ${show(found)} in the state, ${show(expected)} here`;
}

/**
 * Explains, in one line, the first field (in sorted key order) where the
 * identity recorded in a state stream (`found`) differs from this device's
 * (`expected`), such as `size is 268435456 in the state, 134217728 here`.
 * Returns undefined when both have the same canonical JSON.
 */
export function identityMismatch(
  expected: Record<string, unknown>,
  found: Record<string, unknown>,
): string | undefined {
  return firstDifference(expected, found, "");
}
