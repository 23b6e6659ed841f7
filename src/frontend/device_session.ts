/**
 * Bringing a vhost-user device up from the front-end, device-independent:
 * feature and protocol-feature negotiation, the memory table, and one
 * started {@linkcode DriverRing} per queue. Device drivers (BlkDriver) build
 * on it and add their configuration space and request formats.
 *
 * @module
 */

import { bit, hasBit, maskOf, ProtocolFeature, VirtioFeature } from "../protocol/mod.ts";
import { DriverRing } from "./driver_ring.ts";
import type { SharedGuestMemory } from "./shared_memory.ts";
import type { VhostUserClient } from "./vhost_user_client.ts";

/** Protocol features a session asks for unless told otherwise. */
export const DEFAULT_PROTOCOL_FEATURES: bigint = maskOf([
  ProtocolFeature.MQ,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.CONFIG,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.RESET_DEVICE,
]);

/** Options of {@linkcode DeviceSession.open}. */
export interface DeviceSessionOptions {
  /** Number of queues to set up (the first `numQueues` of the device). */
  numQueues: number;
  /** Size of every queue (power of two). */
  queueSize: number;
  /** Virtio features the driver supports; the session accepts those the back-end offers. */
  driverFeatures: bigint;
  /** Protocol features to accept when offered. Default {@linkcode DEFAULT_PROTOCOL_FEATURES}. */
  protocolFeatures?: bigint;
  /** Protocol features without which the session fails. Default: none. */
  requiredProtocolFeatures?: bigint;
}

/** A negotiated device with started rings. */
export class DeviceSession {
  /** The connection (not owned: the caller closes it). */
  readonly client: VhostUserClient;
  /** The guest memory (not owned: the caller closes it). */
  readonly memory: SharedGuestMemory;
  /** Virtio features the back-end offered. */
  readonly offeredFeatures: bigint;
  /** Virtio features accepted with SET_FEATURES. */
  readonly features: bigint;
  /** Protocol features the back-end offered (0 without VHOST_USER_F_PROTOCOL_FEATURES). */
  readonly offeredProtocolFeatures: bigint;
  /** Protocol features accepted with SET_PROTOCOL_FEATURES. */
  readonly protocolFeatures: bigint;
  /** The started rings, by index. */
  readonly rings: readonly DriverRing[];

  private constructor(
    client: VhostUserClient,
    memory: SharedGuestMemory,
    negotiated: {
      offeredFeatures: bigint;
      features: bigint;
      offeredProtocolFeatures: bigint;
      protocolFeatures: bigint;
    },
    rings: DriverRing[],
  ) {
    this.client = client;
    this.memory = memory;
    this.offeredFeatures = negotiated.offeredFeatures;
    this.features = negotiated.features;
    this.offeredProtocolFeatures = negotiated.offeredProtocolFeatures;
    this.protocolFeatures = negotiated.protocolFeatures;
    this.rings = rings;
  }

  /**
   * Negotiates and starts the device: GET_FEATURES, SET_OWNER,
   * GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (with MQ), SET_FEATURES,
   * SET_MEM_TABLE, then every ring (see {@linkcode DriverRing.start}).
   * Throws when a required protocol feature is missing, the device has too
   * few queues, or the back-end refuses a step; rings made so far are closed.
   */
  static open(
    client: VhostUserClient,
    memory: SharedGuestMemory,
    options: DeviceSessionOptions,
  ): DeviceSession {
    const offeredFeatures = client.getFeatures();
    client.setOwner();
    const protocolBit = bit(VirtioFeature.PROTOCOL_FEATURES);
    let offeredProtocolFeatures = 0n;
    let protocolFeatures = 0n;
    if ((offeredFeatures & protocolBit) !== 0n) {
      offeredProtocolFeatures = client.getProtocolFeatures();
      protocolFeatures = offeredProtocolFeatures &
        (options.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES);
      client.setProtocolFeatures(protocolFeatures);
    }
    const missing = (options.requiredProtocolFeatures ?? 0n) & ~protocolFeatures;
    if (missing !== 0n) {
      throw new Error(`back-end lacks protocol features 0x${missing.toString(16)}`);
    }
    if (hasBit(protocolFeatures, ProtocolFeature.MQ)) {
      const queues = client.getQueueNum();
      if (options.numQueues > queues) {
        throw new RangeError(`${options.numQueues} queues wanted, the device has ${queues}`);
      }
    }
    const features = offeredFeatures & (options.driverFeatures | protocolBit);
    client.setFeatures(features);
    client.setMemTable(memory.regionDescs(), memory.regionFds());
    const eventIdx = hasBit(features, VirtioFeature.RING_EVENT_IDX);
    const rings: DriverRing[] = [];
    try {
      for (let index = 0; index < options.numQueues; index++) {
        const ring = new DriverRing(memory, { index, size: options.queueSize, eventIdx });
        rings.push(ring);
        ring.start(client);
      }
    } catch (e) {
      rings.forEach((r) => r.close());
      throw e;
    }
    return new DeviceSession(
      client,
      memory,
      { offeredFeatures, features, offeredProtocolFeatures, protocolFeatures },
      rings,
    );
  }

  /** The ring `index`; throws RangeError when there is none. */
  ring(index: number): DriverRing {
    const ring = this.rings[index];
    if (ring === undefined) {
      throw new RangeError(`queue ${index} does not exist (${this.rings.length} set up)`);
    }
    return ring;
  }

  /** Closes every ring's eventfds (the client and memory are the caller's). */
  close(): void {
    this.rings.forEach((r) => r.close());
  }
}
