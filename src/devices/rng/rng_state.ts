/**
 * virtio-rng device state for DEVICE_STATE and `vhostd state`: the
 * negotiated features and what is left of the rate-limit budget. Versioned:
 * a state of a later version is refused, not misread.
 *
 * @module
 */

/** Version of the rng state written by this vhostd. */
export const RNG_STATE_VERSION = 1;

/** The decoded rng state. */
export interface RngState {
  /** Negotiated virtio features. */
  features: bigint;
  /** Bytes left in the rate-limit period, null when the saving device had no limit. */
  budgetRemaining: number | null;
}

/** The JSON form of `state`. */
export function encodeRngState(state: RngState): Record<string, unknown> {
  return {
    version: RNG_STATE_VERSION,
    features: `0x${state.features.toString(16)}`,
    budgetRemaining: state.budgetRemaining,
  };
}

/**
 * Decodes and checks an rng state; throws Error with a one-line reason.
 * Features must be a subset of `offered`.
 */
export function decodeRngState(state: Record<string, unknown>, offered: bigint): RngState {
  const { version, features, budgetRemaining } = state;
  if (version !== RNG_STATE_VERSION) {
    throw new Error(
      `rng state: version ${
        JSON.stringify(version)
      } is not ${RNG_STATE_VERSION} (written by another vhostd?)`,
    );
  }
  if (typeof features !== "string" || !/^0x[0-9a-f]{1,16}$/.test(features)) {
    throw new Error(`rng state: features must be a hex string, got ${JSON.stringify(features)}`);
  }
  const mask = BigInt(features);
  if ((mask & ~offered) !== 0n) {
    throw new Error(
      `rng state: negotiated features 0x${(mask & ~offered).toString(16)} are not offered here`,
    );
  }
  if (
    budgetRemaining !== null &&
    !(typeof budgetRemaining === "number" && Number.isSafeInteger(budgetRemaining) &&
      budgetRemaining >= 0)
  ) {
    throw new Error("rng state: budgetRemaining must be a whole number of bytes or null");
  }
  return { features: mask, budgetRemaining };
}

/** Readable lines about a saved rng state (untrusted JSON: never throws). */
export function describeRngState(state: unknown): string[] {
  if (typeof state !== "object" || state === null || Array.isArray(state)) {
    return ["rng state: not an object"];
  }
  const s = state as Record<string, unknown>;
  const budget = s.budgetRemaining === null
    ? "no rate limit"
    : typeof s.budgetRemaining === "number"
    ? `${s.budgetRemaining} byte(s) left in the rate-limit period`
    : "rate-limit budget unreadable";
  return [
    `rng state version ${JSON.stringify(s.version)}: features ${String(s.features)}, ${budget}`,
  ];
}
