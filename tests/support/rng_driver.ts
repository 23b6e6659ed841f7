/**
 * A virtio-rng driver for tests and the benchmark: one request queue over
 * shared guest memory, requests of any size, their used lengths and bytes.
 *
 * @module
 */

import { bit, VirtioFeature } from "../../src/protocol/mod.ts";
import { DeviceSession, SharedGuestMemory, VhostUserClient } from "../../src/frontend/mod.ts";

/** A completed entropy request. */
export interface RngCompletion {
  /** Head of the chain (the request's id). */
  head: number;
  /** Bytes the device wrote. */
  len: number;
}

/** The guest side of a vhostd rng device. */
export class RngDriver {
  readonly client: VhostUserClient;
  readonly memory: SharedGuestMemory;
  readonly session: DeviceSession;
  /** Guest address of each outstanding request's buffer, by head. */
  readonly #buffers = new Map<number, number>();

  private constructor(client: VhostUserClient, memory: SharedGuestMemory, session: DeviceSession) {
    this.client = client;
    this.memory = memory;
    this.session = session;
  }

  /** Connects to `socketPath` and starts the request queue (`queueSize` entries). */
  static connect(socketPath: string, queueSize = 64, memoryBytes = 16 << 20): RngDriver {
    const client = VhostUserClient.connect(socketPath);
    const memory = SharedGuestMemory.create({ size: memoryBytes });
    try {
      const session = DeviceSession.open(client, memory, {
        numQueues: 1,
        queueSize,
        driverFeatures: bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX),
      });
      return new RngDriver(client, memory, session);
    } catch (e) {
      memory.close();
      client.close();
      throw e;
    }
  }

  /** Publishes a request for `size` bytes in a buffer at `gpa` (allocated when absent); returns its head. */
  request(size: number, gpa: number = this.memory.alloc(size, 64)): number {
    const ring = this.session.ring(0);
    const head = ring.publish([{ addr: gpa, len: size, writable: true }]);
    this.#buffers.set(head, gpa);
    return head;
  }

  /** Kicks the device if it wants to be kicked. */
  notify(): void {
    this.session.ring(0).notify();
  }

  /** Completed requests so far (non-blocking). */
  take(): RngCompletion[] {
    const out: RngCompletion[] = [];
    const ring = this.session.ring(0);
    for (let u = ring.takeUsed(); u; u = ring.takeUsed()) out.push({ head: u.id, len: u.len });
    return out;
  }

  /** Waits until at least one request completed (or `timeoutMs` passed); returns what completed. */
  wait(timeoutMs: number): RngCompletion[] {
    this.session.ring(0).waitForUsed(performance.now() + timeoutMs);
    return this.take();
  }

  /** The bytes of request `head`'s buffer (its first `len`). */
  bytes(head: number, len: number): Uint8Array {
    return this.memory.bytes(this.#buffers.get(head)!, len).slice();
  }

  /** Stops the queue (GET_VRING_BASE); returns the base the device reports. */
  stop(): number {
    return this.session.ring(0).stop(this.client);
  }

  /** Closes the session, memory and connection. */
  close(): void {
    this.session.close();
    this.memory.close();
    this.client.close();
  }
}
