/**
 * The features a driver accepted, as a device remembers them: the part of
 * {@linkcode VirtioDevice} that most devices implement the same way.
 *
 * @module
 */

import type { VirtioDevice } from "./device.ts";

/**
 * Keeps the accepted features for {@linkcode VirtioDevice.setAckedFeatures}
 * and {@linkcode VirtioDevice.ackedFeatures}. A device whose features change
 * its behaviour (blk's cache mode) implements them itself.
 */
export abstract class AckedFeatures implements Pick<VirtioDevice, "setAckedFeatures"> {
  #acked = 0n;

  /** Remembers the accepted features. */
  setAckedFeatures(features: bigint): void {
    this.#acked = features;
  }

  /** Features accepted by the driver (0 before any, and after a reset). */
  ackedFeatures(): bigint {
    return this.#acked;
  }
}
