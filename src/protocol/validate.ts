/**
 * Structural check of a received front-end message before any handler runs:
 * header flags, known request, payload length, fd count, feature gating.
 * Values inside payloads are checked by the `decode*` functions.
 *
 * @module
 */

import { viewOf } from "./bytes.ts";
import { featureNames, hasBit, ProtocolFeature } from "./features.ts";
import {
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  MAX_PAYLOAD_SIZE,
  type MessageHeader,
  VHOST_USER_VERSION,
} from "./header.ts";
import {
  CONFIG_HEADER_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  MAX_MEMORY_TABLE_SIZE,
  MEMORY_REGION_SIZE,
  MEMORY_TABLE_HEADER_SIZE,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
} from "./payloads.ts";
import { type FdRule, type PayloadRule, type RequestSpec, requestSpec } from "./message_spec.ts";
import { FrontendRequest, requestName } from "./requests.ts";

const CONFIG_REQUESTS: ReadonlySet<number> = new Set([
  FrontendRequest.GET_CONFIG,
  FrontendRequest.SET_CONFIG,
]);

function featureName(n: number): string {
  return featureNames(1n << BigInt(n), ProtocolFeature)[0];
}

function fds(count: number): string {
  return count === 1 ? "1 fd" : `${count} fds`;
}

function checkPayloadRule(rule: PayloadRule, length: number): string | null {
  switch (rule.kind) {
    case "empty":
      return length === 0 ? null : `payload is ${length} bytes, expected 0`;
    case "exact":
      return length === rule.size ? null : `payload is ${length} bytes, expected ${rule.size}`;
    case "min":
      return length >= rule.size
        ? null
        : `payload is ${length} bytes, expected at least ${rule.size}`;
    case "any":
      return null;
  }
}

function checkFdRule(rule: FdRule, fdCount: number, expected: number): string | null {
  switch (rule) {
    case "none":
      return fdCount === 0 ? null : `${fds(fdCount)} attached, expected none`;
    case "zero-or-one":
      return fdCount <= 1 ? null : `${fds(fdCount)} attached, expected at most 1`;
    case "one":
    case "optional-by-nofd":
    case "per-region":
      return fdCount === expected ? null : `${fds(fdCount)} attached, expected ${expected}`;
  }
}

/** Checks the SET_MEM_TABLE region count against the length and the fds. */
function checkMemoryTable(payload: Uint8Array, fdCount: number): string | null {
  if (payload.byteLength > MAX_MEMORY_TABLE_SIZE) {
    return `payload is ${payload.byteLength} bytes, expected at most ${MAX_MEMORY_TABLE_SIZE}`;
  }
  const regions = viewOf(payload).getUint32(0, true);
  if (regions > MAX_MEM_TABLE_REGIONS) {
    return `${regions} regions, at most ${MAX_MEM_TABLE_REGIONS} allowed`;
  }
  const needed = MEMORY_TABLE_HEADER_SIZE + regions * MEMORY_REGION_SIZE;
  if (payload.byteLength < needed) {
    return `payload is ${payload.byteLength} bytes, ${regions} regions need ${needed}`;
  }
  return fdCount === regions ? null : `${fds(fdCount)} attached for ${regions} regions`;
}

/** Checks that a config payload's size field matches its length. */
function checkConfig(payload: Uint8Array): string | null {
  const size = viewOf(payload).getUint32(4, true);
  if (size > MAX_CONFIG_SIZE) return `config size ${size} exceeds ${MAX_CONFIG_SIZE}`;
  const expected = CONFIG_HEADER_SIZE + size;
  return payload.byteLength === expected
    ? null
    : `payload is ${payload.byteLength} bytes, config size ${size} needs ${expected}`;
}

/** Checks a SET_VRING_KICK/CALL/ERR u64 and returns the fd count it calls for. */
function vringFdExpectation(payload: Uint8Array): { error: string } | { fds: number } {
  const value = viewOf(payload).getBigUint64(0, true);
  if ((value & ~BigInt(VRING_INDEX_MASK | VRING_NOFD_MASK)) !== 0n) {
    return { error: `unknown bits set in 0x${value.toString(16)}` };
  }
  return { fds: (value & BigInt(VRING_NOFD_MASK)) !== 0n ? 0 : 1 };
}

function checkFds(
  spec: RequestSpec,
  payload: Uint8Array,
  fdCount: number,
  negotiated: bigint,
): string | null {
  switch (spec.fds) {
    case "per-region":
      return checkMemoryTable(payload, fdCount);
    case "optional-by-nofd": {
      const expectation = vringFdExpectation(payload);
      if ("error" in expectation) return expectation.error;
      if (expectation.fds === 0 && fdCount !== 0) {
        return `${fds(fdCount)} attached although the no-fd bit is set`;
      }
      return checkFdRule(spec.fds, fdCount, expectation.fds);
    }
    case "zero-or-one":
      if (spec.fdFeature !== undefined) {
        const name = featureName(spec.fdFeature);
        if (hasBit(negotiated, spec.fdFeature)) {
          return checkFdRule("one", fdCount, 1);
        }
        if (fdCount !== 0) return `fd attached but protocol feature ${name} is not negotiated`;
      }
      return checkFdRule(spec.fds, fdCount, 1);
    case "none":
    case "one":
      return checkFdRule(spec.fds, fdCount, 1);
  }
}

/**
 * Checks a received front-end message. Returns null when it is well formed,
 * else a one-line reason such as `"SET_VRING_NUM: payload is 4 bytes,
 * expected 8"`. Checks, in order: version bits == 1, REPLY flag clear, header
 * size == payload length and within MAX_PAYLOAD_SIZE, known request, protocol
 * feature gating, payload length, request-specific structure (memory table
 * region count, config size, vring fd bits) and fd count.
 *
 * The caller still owns the fds and must close them when this refuses the
 * message.
 */
export function validateMessage(
  header: MessageHeader,
  payload: Uint8Array,
  fdCount: number,
  negotiatedProtocolFeatures: bigint,
): string | null {
  const name = requestName(header.request);
  const version = header.flags & FLAG_VERSION_MASK;
  if (version !== VHOST_USER_VERSION) {
    return `${name}: version ${version} in flags 0x${
      header.flags.toString(16)
    }, expected ${VHOST_USER_VERSION}`;
  }
  if ((header.flags & FLAG_REPLY) !== 0) {
    return `${name}: REPLY flag set on a request`;
  }
  if (header.size > MAX_PAYLOAD_SIZE) {
    return `${name}: payload size ${header.size} exceeds ${MAX_PAYLOAD_SIZE}`;
  }
  if (header.size !== payload.byteLength) {
    return `${name}: header says ${header.size} payload bytes, got ${payload.byteLength}`;
  }
  const spec = requestSpec(header.request);
  if (spec === undefined) return `${name}: unknown request`;
  if (
    spec.protocolFeature !== undefined &&
    !hasBit(negotiatedProtocolFeatures, spec.protocolFeature)
  ) {
    return `${name}: needs protocol feature ${featureName(spec.protocolFeature)}, not negotiated`;
  }
  const reason = checkPayloadRule(spec.payload, payload.byteLength) ??
    (CONFIG_REQUESTS.has(spec.request) ? checkConfig(payload) : null) ??
    checkFds(spec, payload, fdCount, negotiatedProtocolFeatures);
  return reason === null ? null : `${name}: ${reason}`;
}
