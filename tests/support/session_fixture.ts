/**
 * A connected front-end session for integration tests: connection, shared
 * guest memory and a device driver, opened together and closed together
 * (also when set-up fails half-way).
 *
 * @module
 */

import {
  SharedGuestMemory,
  type SharedMemoryOptions,
  VhostUserClient,
} from "../../src/frontend/mod.ts";

/** Anything a fixture drives: it only needs to be closable. */
export interface ClosableDriver {
  /** Releases the driver's resources (rings, eventfds). */
  close(): void;
}

/** A session of a `D` driver. */
export class SessionFixture<D extends ClosableDriver> implements Disposable {
  /** The connection. */
  readonly client: VhostUserClient;
  /** The shared guest memory. */
  readonly memory: SharedGuestMemory;
  /** The driver. */
  readonly driver: D;

  /** Wraps parts already set up (owned by the fixture from now on). */
  protected constructor(client: VhostUserClient, memory: SharedGuestMemory, driver: D) {
    this.client = client;
    this.memory = memory;
    this.driver = driver;
  }

  /**
   * Connects to `socketPath` (or uses `client`, owned from now on), shares
   * memory and sets the driver up with `setup`; on failure releases what was
   * made and rethrows.
   */
  protected static openParts<D extends ClosableDriver>(
    socketPath: string,
    memoryOptions: SharedMemoryOptions,
    setup: (client: VhostUserClient, memory: SharedGuestMemory) => D,
    client: VhostUserClient = VhostUserClient.connect(socketPath),
  ): [VhostUserClient, SharedGuestMemory, D] {
    let memory: SharedGuestMemory | undefined;
    try {
      memory = SharedGuestMemory.create(memoryOptions);
      return [client, memory, setup(client, memory)];
    } catch (e) {
      client.close();
      memory?.close();
      throw e;
    }
  }

  /** Disconnects and releases everything. */
  close(): void {
    this.driver.close();
    this.client.close();
    this.memory.close();
  }

  /** For `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
