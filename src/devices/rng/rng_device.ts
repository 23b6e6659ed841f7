/**
 * virtio-rng, control half (virtio 5.4): one request queue, no
 * configuration space, no device features. Holds the rate limit its queue
 * Worker enforces and moves the budget's state for DEVICE_STATE.
 *
 * @module
 */

import { RING_FEATURES } from "../../protocol/mod.ts";
import { AckedFeatures } from "../acked_features.ts";
import { MAX_QUEUE_SIZE } from "../../virtqueue/layout.ts";
import type {
  DeviceSnapshot,
  DeviceStateSupport,
  DeviceWorkerChannel,
  LoadStaging,
  VirtioDevice,
  WorkerSetup,
} from "../device.ts";
import type { RngBudgetReport, RngWorkerCommand, RngWorkerParams } from "./rng_handler.ts";
import { decodeRngState, encodeRngState } from "./rng_state.ts";

/** `--max-bytes N --period MS`. */
export interface RngRateLimit {
  /** Bytes per period. */
  maxBytes: number;
  /** Period in milliseconds. */
  periodMs: number;
}

/** An entropy device. */
export class RngDevice extends AckedFeatures implements VirtioDevice {
  /** Device kind. */
  readonly kind = "rng";
  /** virtio-rng has one request queue. */
  readonly numQueues = 1;
  /** Largest queue size accepted. */
  readonly maxQueueSize = MAX_QUEUE_SIZE;
  /** One Worker: the budget is the device's, not a queue's. */
  readonly maxWorkers = 1;
  /** The rate limit, if any. */
  readonly rateLimit: RngRateLimit | undefined;
  /** DEVICE_STATE save/load. */
  readonly stateSupport: DeviceStateSupport;
  #channel: DeviceWorkerChannel | undefined;

  /** A device with an optional rate limit. */
  constructor(rateLimit?: RngRateLimit) {
    super();
    this.rateLimit = rateLimit ? { ...rateLimit } : undefined;
    this.stateSupport = new RngStateSupport(this);
  }

  /** Ring features only: virtio-rng defines no device features. */
  features(): bigint {
    return RING_FEATURES;
  }

  /** virtio-rng has no configuration space. */
  readConfig(): Uint8Array {
    return new Uint8Array(0);
  }

  /** Nothing to write: any non-empty write is refused. */
  writeConfig(offset: number, data: Uint8Array): string | undefined {
    if (data.length === 0) return undefined;
    return `virtio-rng has no configuration space (write of ${data.length} byte(s) at ${offset})`;
  }

  /** Accepted features forgotten; the budget keeps counting (it limits the host's entropy). */
  reset(): void {
    this.setAckedFeatures(0n);
  }

  /** Plain parameters for the queue Worker. */
  workerSetup(): WorkerSetup {
    const params: RngWorkerParams = this.rateLimit ? { ...this.rateLimit } : {};
    return { kind: this.kind, params, shared: new SharedArrayBuffer(8) };
  }

  /** Keeps the channel to the data half (the budget lives there). */
  attachWorkers(channel: DeviceWorkerChannel): void {
    this.#channel = channel;
  }

  /** Sends a command to the data half; undefined when no Worker runs. */
  async command(request: RngWorkerCommand): Promise<unknown> {
    if (!this.#channel) return undefined;
    return (await this.#channel.command(request))[0];
  }

  /** Nothing is written anywhere. */
  flush(): void {}

  /** Nothing to release. */
  close(): void {}

  /** One line for logs. */
  describe(): string {
    const limit = this.rateLimit
      ? `at most ${this.rateLimit.maxBytes} byte(s) per ${this.rateLimit.periodMs} ms`
      : "no rate limit";
    return `virtio-rng from getrandom, ${limit}`;
  }
}

/** DEVICE_STATE support of an rng device: features and the budget left. */
class RngStateSupport implements DeviceStateSupport {
  readonly #device: RngDevice;

  constructor(device: RngDevice) {
    this.#device = device;
  }

  /** Nothing must match: any rng can continue any other's guest (the budget is clamped). */
  identity(): Record<string, unknown> {
    return { device: "virtio-rng" };
  }

  /** Features and what the Worker says is left of the budget. */
  async snapshot(): Promise<DeviceSnapshot> {
    const d = this.#device;
    const report = await d.command({ type: "budget" }) as RngBudgetReport | undefined;
    const budgetRemaining = d.rateLimit ? report?.remaining ?? d.rateLimit.maxBytes : null;
    return { state: encodeRngState({ features: d.ackedFeatures(), budgetRemaining }) };
  }

  /** Nothing to stage: the state is small. */
  prepareLoad(): LoadStaging {
    return {};
  }

  /** Checks the state, then installs features and (with a limit here) the budget. */
  async applyLoad(state: Record<string, unknown>, _staging: LoadStaging): Promise<void> {
    const d = this.#device;
    const decoded = decodeRngState(state, d.features());
    d.setAckedFeatures(decoded.features);
    if (d.rateLimit && decoded.budgetRemaining !== null) {
      await d.command({ type: "restore-budget", remaining: decoded.budgetRemaining });
    }
  }

  /** Nothing staged. */
  discardLoad(_staging: LoadStaging): void {}
}
