/**
 * A connected, negotiated virtio-blk front-end for integration tests, and
 * deterministic test data.
 *
 * @module
 */

import {
  BlkDriver,
  type BlkDriverOptions,
  type SharedGuestMemory,
  type VhostUserClient,
} from "../../src/frontend/mod.ts";
import { SessionFixture } from "./session_fixture.ts";

/** Options of {@linkcode openBlk}. */
export interface BlkFixtureOptions extends Partial<BlkDriverOptions> {
  /** Guest memory size in bytes. Default 8 MiB. */
  memorySize?: number;
  /** Guest memory regions. Default 1. */
  regions?: number;
  /** Guest-physical base address. Default 0. */
  guestBase?: number;
}

/** A front-end session of a virtio-blk driver. */
export class BlkFixture extends SessionFixture<BlkDriver> {
  /** Connects to `socketPath`, shares memory and sets the device up. */
  static open(socketPath: string, options: BlkFixtureOptions = {}): BlkFixture {
    const memory = {
      size: options.memorySize ?? 8 * 2 ** 20,
      regions: options.regions,
      guestBase: options.guestBase,
    };
    const setup = (client: VhostUserClient, shared: SharedGuestMemory) =>
      BlkDriver.setup(client, shared, { numQueues: 1, queueSize: 64, ...options });
    return new BlkFixture(...SessionFixture.openParts(socketPath, memory, setup));
  }
}

/** `length` bytes of a deterministic pseudo-random pattern chosen by `seed`. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    // xorshift32
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Creates a file of `size` bytes filled with `pattern(size, seed)`, or zeros without a seed. */
export async function makeImage(path: string, size: number, seed?: number): Promise<void> {
  await Deno.writeFile(path, seed === undefined ? new Uint8Array(size) : pattern(size, seed));
}
