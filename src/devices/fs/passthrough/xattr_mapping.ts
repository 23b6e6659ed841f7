/**
 * Extended attribute name mapping (`--xattr-mapping`), in virtiofsd's
 * `--xattrmap` rule syntax: a list of rules, each `:type:scope:key:prepend:`
 * where the first non-blank character of a rule (here `:`) is its field
 * separator, rules separated by optional white space.
 *
 * - type `prefix`: a guest name starting with `key` gets `prepend` put in
 *   front of it on the host; a host name starting with `prepend` is shown
 *   with `prepend` stripped.
 * - type `ok`: the name passes unchanged.
 * - type `bad`: a guest name is refused with EPERM (GETXATTR answers
 *   ENODATA), a host name is hidden from LISTXATTR.
 * - type `unsupported`: like `bad`, but guest names are refused with ENOTSUP.
 * - scope `client` matches guest names against `key`, `server` matches host
 *   names against `prepend`, `all` both.
 * - `:map:key:prepend:` (only as the last rule) stands for "prefix `key`
 *   with `prepend` both ways; hide host names that start with `key` and
 *   refuse guest names that start with `prepend`; let everything else
 *   through" (with an empty `key`: prefix every name, hide the rest).
 *
 * The first matching rule applies; a name no rule matches is refused (guest)
 * or hidden (host). One departure from virtiofsd: `security.capability`
 * always passes unchanged, so that the host kernel keeps dropping it on
 * writes, truncation and chown as the guest expects (virtiofsd renames it and
 * then removes the renamed attribute itself on each of those operations).
 *
 * @module
 */

import { ENOTSUP, EPERM } from "../../../../ffi/mod.ts";

/** What a rule does with a name it matches. */
export type XattrRuleType = "prefix" | "ok" | "bad" | "unsupported";

/** One parsed rule (a `map` rule is expanded into two or three of these). */
export interface XattrRule {
  /** What the rule does. */
  type: XattrRuleType;
  /** Matches guest names (against `key`). */
  client: boolean;
  /** Matches host names (against `prepend`). */
  server: boolean;
  /** Prefix of guest names the rule matches. */
  key: Uint8Array;
  /** Prefix put on (guest to host) or stripped from (host to guest) names. */
  prepend: Uint8Array;
}

/** A guest name translated for the host: the host name, or the errno refusing it. */
export type XattrHostName = { name: Uint8Array } | { errno: number };

/** A `--xattr-mapping` that cannot be parsed; the message says which rule and why. */
export class XattrMappingError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "XattrMappingError";
  }
}

const encoder = new TextEncoder();
const CAPABILITY = encoder.encode("security.capability");
const SCOPES: Record<string, { client: boolean; server: boolean }> = {
  all: { client: true, server: true },
  client: { client: true, server: false },
  server: { client: false, server: true },
};
const TYPES: readonly string[] = ["prefix", "ok", "bad", "unsupported"];

function startsWith(name: Uint8Array, prefix: Uint8Array): boolean {
  if (prefix.length > name.length) return false;
  for (let i = 0; i < prefix.length; i++) if (name[i] !== prefix[i]) return false;
  return true;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && startsWith(a, b);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A parsed `--xattr-mapping`: translates guest names for the host and host names for the guest. */
export class XattrMapping {
  /** The rules, `map` expanded, in order. */
  readonly rules: readonly XattrRule[];

  /** Wraps already parsed rules (see {@linkcode parseXattrMapping}). */
  constructor(rules: readonly XattrRule[]) {
    this.rules = rules;
  }

  /** The host name for a guest's GETXATTR/SETXATTR/REMOVEXATTR name, or the errno refusing it. */
  toHost(name: Uint8Array): XattrHostName {
    if (sameBytes(name, CAPABILITY)) return { name };
    const rule = this.rules.find((r) => r.client && startsWith(name, r.key));
    switch (rule?.type) {
      case "ok":
        return { name };
      case "prefix":
        return { name: concat(rule.prepend, name) };
      case "unsupported":
        return { errno: ENOTSUP };
      default: // "bad", or no rule matched
        return { errno: EPERM };
    }
  }

  /** The name the guest sees for a host name from LISTXATTR, or null to hide it. */
  toGuest(name: Uint8Array): Uint8Array | null {
    if (sameBytes(name, CAPABILITY)) return name;
    const rule = this.rules.find((r) => r.server && startsWith(name, r.prepend));
    switch (rule?.type) {
      case "ok":
        return name;
      case "prefix":
        return name.length > rule.prepend.length ? name.slice(rule.prepend.length) : null;
      default: // "bad", "unsupported", or no rule matched
        return null;
    }
  }
}

/** Splits one rule's fields after its separator; returns them and where the rule ends. */
function readFields(
  text: string,
  start: number,
  count: number,
  ruleNumber: number,
): { fields: string[]; end: number } {
  const separator = text[start];
  const fields: string[] = [];
  let at = start + 1;
  while (fields.length < count) {
    const next = text.indexOf(separator, at);
    if (next === -1) {
      throw new XattrMappingError(
        `rule ${ruleNumber}: incomplete, expected ${count} fields each ended by "${separator}"`,
      );
    }
    fields.push(text.slice(at, next));
    at = next + 1;
  }
  return { fields, end: at };
}

function prefixBytes(value: string, what: string, ruleNumber: number): Uint8Array {
  if (value.includes("\0")) throw new XattrMappingError(`rule ${ruleNumber}: ${what} holds a NUL`);
  return encoder.encode(value);
}

/** The rules `:map:key:prepend:` stands for. */
function expandMap(key: Uint8Array, prepend: Uint8Array): XattrRule[] {
  const both = { client: true, server: true };
  const rules: XattrRule[] = [{ type: "prefix", ...both, key, prepend }];
  if (key.length > 0) {
    rules.push({ type: "bad", ...both, key: prepend, prepend: key });
  }
  const empty = new Uint8Array(0);
  rules.push({ type: key.length > 0 ? "ok" : "bad", ...both, key: empty, prepend: empty });
  return rules;
}

/**
 * Parses a mapping in virtiofsd's `--xattrmap` syntax. Throws
 * {@linkcode XattrMappingError} naming the rule for an unknown type or
 * scope, a rule missing fields, a `map` rule that is not the last one, or an
 * empty mapping.
 */
export function parseXattrMapping(text: string): XattrMapping {
  const rules: XattrRule[] = [];
  let at = 0;
  let ruleNumber = 0;
  for (;;) {
    while (at < text.length && /\s/.test(text[at])) at++;
    if (at >= text.length) break;
    ruleNumber++;
    const head = readFields(text, at, 1, ruleNumber);
    const type = head.fields[0];
    if (type === "map") {
      const { fields, end } = readFields(text, at, 3, ruleNumber);
      if (text.slice(end).trim() !== "") {
        throw new XattrMappingError(`rule ${ruleNumber}: a map rule must be the last rule`);
      }
      const key = prefixBytes(fields[1], "key", ruleNumber);
      rules.push(...expandMap(key, prefixBytes(fields[2], "prepend", ruleNumber)));
      break;
    }
    if (!TYPES.includes(type)) {
      throw new XattrMappingError(
        `rule ${ruleNumber}: unknown type "${type}" (prefix, ok, bad, unsupported or map)`,
      );
    }
    const { fields, end } = readFields(text, at, 4, ruleNumber);
    if (!Object.hasOwn(SCOPES, fields[1])) {
      throw new XattrMappingError(
        `rule ${ruleNumber}: unknown scope "${fields[1]}" (all, client or server)`,
      );
    }
    rules.push({
      type: type as XattrRuleType,
      ...SCOPES[fields[1]],
      key: prefixBytes(fields[2], "key", ruleNumber),
      prepend: prefixBytes(fields[3], "prepend", ruleNumber),
    });
    at = end;
  }
  if (rules.length === 0) throw new XattrMappingError("the mapping has no rules");
  return new XattrMapping(rules);
}
