/**
 * The METADATA section (device identity and small device state as JSON) and
 * the checks that a stream belongs to the device loading it.
 *
 * @module
 */

import { StateFormatError } from "./errors.ts";
import { fingerprint, identityMismatch } from "./fingerprint.ts";
import type { StateHeader } from "./state_header.ts";

/** The METADATA document of a state stream. */
export interface StateMetadata {
  /** vhostd version that saved the state. */
  vhostd: string;
  /** Device kind (the header's). */
  kind: string;
  /** The fingerprinted configuration. */
  identity: Record<string, unknown>;
  /** Device-specific state. */
  state: Record<string, unknown>;
}

/** What a loading device expects of a stream. */
export interface ExpectedDevice {
  /** Device kind ("blk"). */
  kind: string;
  /** This device's identity. */
  identity: Record<string, unknown>;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Decodes and validates a METADATA payload: UTF-8 JSON object with string
 * `vhostd` and `kind` and object `identity` and `state`. Unknown extra fields
 * are allowed (a newer vhostd may add some). Throws StateFormatError.
 */
export function parseMetadata(bytes: Uint8Array): StateMetadata {
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new StateFormatError(`METADATA is not valid UTF-8 JSON: ${detail}`, { cause: error });
  }
  if (!isObject(document)) throw new StateFormatError("METADATA is not a JSON object");
  const { vhostd, kind, identity, state } = document;
  if (typeof vhostd !== "string") throw new StateFormatError("METADATA lacks the vhostd version");
  if (typeof kind !== "string") throw new StateFormatError("METADATA lacks the device kind");
  if (!isObject(identity)) throw new StateFormatError("METADATA lacks the identity object");
  if (!isObject(state)) throw new StateFormatError("METADATA lacks the state object");
  return { vhostd, kind, identity, state };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * Checks that a stream fits the device loading it; throws StateFormatError
 * with a one-line reason otherwise. Call it with the header alone as soon as
 * it is read (kind and fingerprint: fail before a large transfer), and again
 * with the METADATA once the stream is verified: the metadata must agree
 * with its own header, and explains a fingerprint mismatch field by field.
 */
export function checkDeviceMatch(
  header: StateHeader,
  expected: ExpectedDevice,
  metadata?: StateMetadata,
): void {
  if (header.kind !== expected.kind) {
    throw new StateFormatError(`device kind is ${header.kind}, expected ${expected.kind}`);
  }
  if (metadata !== undefined) {
    if (metadata.kind !== header.kind) {
      throw new StateFormatError(
        `METADATA says kind ${metadata.kind} but the header says ${header.kind}: stream is corrupt`,
      );
    }
    if (!sameBytes(fingerprint(metadata.identity), header.fingerprint)) {
      throw new StateFormatError(
        "METADATA identity does not match the header fingerprint: stream is corrupt",
      );
    }
  }
  if (sameBytes(fingerprint(expected.identity), header.fingerprint)) return;
  const difference = metadata === undefined
    ? undefined
    : identityMismatch(expected.identity, metadata.identity);
  throw new StateFormatError(
    difference === undefined
      ? "the configuration fingerprint differs from this device's (another configuration, " +
        "or a corrupt stream)"
      : `the configuration differs: ${difference}`,
  );
}
