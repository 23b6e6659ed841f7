/**
 * virtio-vsock, control half: features, the configuration space (the guest
 * CID, which QEMU's vhost-user-vsock reads with GET_CONFIG), the main Unix
 * socket host programs connect to, and the parameters of the one queue
 * Worker that serves both queues.
 *
 * @module
 */

import { closeQuietly } from "../../../ffi/mod.ts";
import { log } from "../../log.ts";
import { RING_FEATURES } from "../../protocol/mod.ts";
import { AckedFeatures } from "../acked_features.ts";
import type { DeviceWorkerChannel, VirtioDevice, WorkerSetup } from "../device.ts";
import {
  DEFAULT_BUF_ALLOC,
  DEFAULT_CLOSE_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  type VsockWorkerParams,
} from "./vsock_handler.ts";
import { encodeVsockConfig, VSOCK_BACKEND_QUEUES, VSOCK_CONFIG_SIZE } from "./vsock_spec.ts";
import { VsockStateSupport, type VsockStateTarget } from "./vsock_state.ts";

/** Options of a vsock device. */
export interface VsockOptions {
  /** The guest's context id (3 .. 0xfffffffe). */
  guestCid: number;
  /** Path of the main Unix socket (and prefix of the per-port ones). */
  udsPath: string;
  /** The listening socket at `udsPath`, owned by the device from now on. */
  listenFd: number;
  /** Largest queue size. */
  queueSize: number;
  /** Receive buffer per connection; default 256 KiB. */
  bufAlloc?: number;
}

/** A virtio-vsock device. */
export class VsockDevice extends AckedFeatures implements VirtioDevice, VsockStateTarget {
  /** Device kind. */
  readonly kind = "vsock";
  /** RX and TX; QEMU keeps the event queue. */
  readonly numQueues = VSOCK_BACKEND_QUEUES;
  /** Largest queue size accepted. */
  readonly maxQueueSize: number;
  /** One Worker owns every connection. */
  readonly maxWorkers = 1;
  /** The guest's context id. */
  readonly guestCid: number;
  /** Main socket path. */
  readonly udsPath: string;
  /** Per-connection receive buffer. */
  readonly bufAlloc: number;
  /** DEVICE_STATE save/load. */
  readonly stateSupport: VsockStateSupport = new VsockStateSupport(this);
  #listenFd: number;
  #channel: DeviceWorkerChannel | undefined;
  readonly #shared = new SharedArrayBuffer(8);

  /** A device for `options`. */
  constructor(options: VsockOptions) {
    super();
    this.guestCid = options.guestCid;
    this.udsPath = options.udsPath;
    this.#listenFd = options.listenFd;
    this.maxQueueSize = options.queueSize;
    this.bufAlloc = options.bufAlloc ?? DEFAULT_BUF_ALLOC;
  }

  /** Stream sockets only (no SEQPACKET), on version 1 split rings. */
  features(): bigint {
    return RING_FEATURES;
  }

  /** A verified LOAD's features. */
  installFeatures(features: bigint): void {
    this.setAckedFeatures(features);
  }

  /** le64 guest_cid. */
  readConfig(): Uint8Array {
    return encodeVsockConfig(this.guestCid);
  }

  /** The configuration space is read-only (writing the same bytes is accepted). */
  writeConfig(offset: number, data: Uint8Array): string | undefined {
    if (offset + data.length > VSOCK_CONFIG_SIZE) {
      return "write past the end of the configuration space";
    }
    const config = this.readConfig();
    if (data.some((b, i) => b !== config[offset + i])) return "the guest CID is read-only";
    return undefined;
  }

  /** Device reset: the guest forgot its sockets, so every connection is dropped. */
  reset(): void {
    this.setAckedFeatures(0n);
    this.#channel?.command({ op: "reset" }).catch((e) => {
      log.warn(
        `vsock: dropping connections on reset failed: ${e instanceof Error ? e.message : e}`,
      );
    });
  }

  /** The line to the data half. */
  attachWorkers(channel: DeviceWorkerChannel): void {
    this.#channel = channel;
  }

  /** Plain parameters for the queue Worker. */
  workerSetup(): WorkerSetup {
    const params: VsockWorkerParams = {
      guestCid: this.guestCid,
      udsPath: this.udsPath,
      listenFd: this.#listenFd,
      bufAlloc: this.bufAlloc,
      connectTimeoutMs: DEFAULT_CONNECT_TIMEOUT_MS,
      closeTimeoutMs: DEFAULT_CLOSE_TIMEOUT_MS,
    };
    return { kind: this.kind, params, shared: this.#shared };
  }

  /** Nothing to make durable. */
  flush(): void {}

  /** Closes the main socket and removes its path. */
  close(): void {
    if (this.#listenFd < 0) return;
    closeQuietly(this.#listenFd);
    this.#listenFd = -1;
    try {
      Deno.removeSync(this.udsPath);
    } catch {
      // Already gone.
    }
  }

  /** One line for logs. */
  describe(): string {
    return `virtio-vsock guest CID ${this.guestCid}, host socket ${this.udsPath} ` +
      `(guest connections to port P go to ${this.udsPath}_P), buf_alloc ${this.bufAlloc}`;
  }
}
