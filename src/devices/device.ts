/**
 * The device interface: what a virtio device implements to be served by the
 * vhost-user framework. Devices never see protocol messages.
 *
 * A device has two halves. The control half (`VirtioDevice`) lives on the
 * main thread: features, configuration space, reset. The data half
 * (`QueueHandler`) runs inside queue Workers and turns descriptor chains into
 * I/O; it is rebuilt in each Worker from `WorkerSetup`, which must be plain,
 * structured-cloneable data (numbers, strings, SharedArrayBuffers).
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import type { MetricFamily } from "../metrics/exposition.ts";

/** Everything a queue Worker needs to build the device's request handler. */
export interface WorkerSetup {
  /** Device kind: selects the device module in `device_list.ts`. */
  kind: string;
  /** Device-specific parameters (plain data). */
  params: Record<string, unknown>;
  /** State shared between the main thread and every Worker (flags, counters). */
  shared: SharedArrayBuffer;
}

/** The result of handling one descriptor chain. */
export interface RequestOutcome {
  /** Bytes written into the chain's device-writable buffers (the used element's len). */
  written: number;
}

/**
 * Returned by {@linkcode QueueHandler.handle} for a request that completes
 * later, through {@linkcode QueueContext.complete}.
 */
export const DEFERRED: unique symbol = Symbol("deferred");

/** What `handle` returns: bytes written now (the request is complete), or DEFERRED. */
export type HandleResult = number | typeof DEFERRED;

/** Readiness of a watched host fd (epoll event bits: EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP...). */
export type FdReadyCallback = (events: number) => void;

/**
 * The queue Worker's services to its data half: completing deferred
 * requests and watching host fds. Handed to {@linkcode QueueHandler.attach}
 * once, before the first request.
 */
export interface QueueContext {
  /**
   * Completes a request for which `handle` returned DEFERRED, with `written`
   * bytes written into its device-writable buffers. Completions may come in
   * any order, and may even come from inside `handle` before it returns
   * DEFERRED. The Worker writes used elements and notifies the driver in
   * batches, once control returns to its event loop. Completing a chain
   * twice, or one that is not in flight, is refused with a log line.
   */
  complete(queueIndex: number, chain: DescriptorChain, written: number): void;
  /**
   * Adds a host fd to the Worker's event loop: `onReady` runs in the Worker
   * whenever epoll reports `events` on it (level-triggered). Watching an fd
   * again replaces its callback and events. `ready`, when given, tells
   * without a system call whether `onReady` has work (an io_uring's CQ is
   * not empty): the Worker may then poll it for a few microseconds instead
   * of going to sleep.
   */
  watchFd(fd: number, events: number, onReady: FdReadyCallback, ready?: () => boolean): void;
  /** Removes a host fd from the event loop (before the device closes it). */
  unwatchFd(fd: number): void;
  /** Requests of `queueIndex` popped and not completed yet. */
  inflightCount(queueIndex: number): number;
  /**
   * Takes the next available chain of a queue the device pulls
   * (`QueueHandler.pullsQueue`); it is in flight until `complete`. Undefined
   * when the driver has made none available (the driver is then asked to
   * kick, and `queueReady` runs when it does) or while the queue is stopped.
   * A chain may carry `error` (malformed): complete it without using it.
   */
  pop(queueIndex: number): DescriptorChain | undefined;
  /** The guest memory chains are read through; replaced only while no request is in flight. */
  readonly memory: GuestMemory;
  /**
   * Runs `onFire` once, in the Worker, after `delayMs` milliseconds (the
   * event loop sleeps no longer than the nearest timer). Returns an id for
   * `clearTimer`. Queue Workers block in epoll, so `setTimeout` would not fire.
   */
  setTimer(delayMs: number, onFire: () => void): number;
  /** Cancels a timer that has not fired; unknown ids are ignored. */
  clearTimer(id: number): void;
}

/**
 * Data half of a device: runs in a queue Worker, one `handle` call per
 * descriptor chain, or, for the queues it pulls, chains taken with
 * `QueueContext.pop` when the device can use them (a receive queue whose
 * buffers wait for data from the host).
 *
 * Simple devices complete every request inside `handle` and return the
 * number of bytes written. Devices that wait (storage with latency, a host
 * socket, a timer) return DEFERRED and call `QueueContext.complete` later;
 * the Worker keeps the request in flight meanwhile, takes no new chains from
 * a ring that is being stopped, and answers a stop only once the ring has no
 * request in flight.
 */
export interface QueueHandler {
  /**
   * Handles one request. `chain.error` may be set (a malformed chain); the
   * handler then fails the request as its device type says. Must not throw
   * for guest-controlled data. The chain's guest memory stays mapped until
   * the request is completed.
   */
  handle(chain: DescriptorChain, memory: GuestMemory, queueIndex: number): HandleResult;
  /** Optional: receives the Worker's services once, before the first request. */
  attach?(context: QueueContext): void;
  /**
   * Optional: true for a queue whose chains the device takes itself with
   * `QueueContext.pop` instead of one `handle` call per chain. Asked once
   * per ring start.
   */
  pullsQueue?(queueIndex: number): boolean;
  /**
   * Optional: false for a queue whose requests no driver waits on (fs's
   * high-priority queue: FORGET and INTERRUPT have no reply). The Worker
   * busy-polls only for queues a driver waits on, or while the device
   * watches a host fd: spinning for the others would only take a CPU, and
   * the place among the process's spinners (spin_budget.ts) that a Worker
   * with replies to send needs. Default true. Asked once per ring start.
   */
  driverWaits?(queueIndex: number): boolean;
  /**
   * Optional, for pulled queues: the queue started, was kicked, or resumed
   * after a pause in which `pop` returned nothing; the device may pop now.
   */
  queueReady?(queueIndex: number): void;
  /**
   * Optional: true to have the driver signalled as soon as a completion
   * crosses the point where it asked for an interrupt (EVENT_IDX's
   * used_event, or no VRING_AVAIL_F_NO_INTERRUPT), as virtiofsd does, instead
   * of once for a whole round of chains. A driver that waits for its first
   * reply then works on it while the rest of the batch is served; one that
   * is busy asks for no interrupt, so it gets none either way. Asked once
   * per ring start.
   */
  notifiesEachCompletion?(): boolean;
  /**
   * Optional: called after the Worker handled a batch of chains and before it
   * waits for events again, so that I/O queued by several `handle` calls is
   * submitted with one system call.
   */
  submitQueued?(): void;
  /**
   * Optional: ring `queueIndex` is being stopped (GET_VRING_BASE, a new
   * memory table, a disconnect). The Worker takes no new chains from it and
   * waits until every request in flight completed; a device whose requests
   * wait on the host (a timer, a socket) completes them now with what it has.
   */
  quiesce?(queueIndex: number): void;
  /** Optional: releases the handler's own resources when its Worker exits. */
  close?(): void;
  /**
   * Optional: answers a command from the device's control half (for example
   * "describe your open files" for a SAVE). Request and result are plain,
   * structured-cloneable data. Runs between requests, never during one.
   */
  command?(request: unknown): unknown;
}

/** The control half's line to its data half in the queue Workers. */
export interface DeviceWorkerChannel {
  /** Sends `request` to the handler of every Worker; resolves with their results in Worker order. */
  command(request: unknown): Promise<unknown[]>;
}

/** Builds a QueueHandler inside a Worker. */
export type QueueHandlerFactory = (setup: WorkerSetup) => QueueHandler;

/** Control half of a device: lives on the main thread. */
export interface VirtioDevice {
  /** Device kind as used on the command line and in state files ("blk"). */
  readonly kind: string;
  /** Number of virtqueues the device has. */
  readonly numQueues: number;
  /** Largest queue size the device accepts. */
  readonly maxQueueSize: number;
  /** Virtio feature bits the device offers (device bits and the ring bits it supports). */
  features(): bigint;
  /** Called with the features the driver accepted (a subset of `features()`). */
  setAckedFeatures(features: bigint): void;
  /** The configuration space as the driver should see it now. */
  readConfig(): Uint8Array;
  /** Writes `data` at `offset` of the configuration space; returns an error message if refused. */
  writeConfig(offset: number, data: Uint8Array): string | undefined;
  /** Returns the device to its initial state (features cleared, config defaults). */
  reset(): void;
  /** Parameters for building the data half in queue Workers. */
  workerSetup(): WorkerSetup;
  /** Makes completed writes durable (called on shutdown). */
  flush(): void;
  /** Releases the device's resources. */
  close(): void;
  /** One-line description for logs and `--print-capabilities`. */
  describe(): string;
  /** Called when a ring starts running (after a LOAD, the start sequence is over). */
  ringStarted?(): void;
  /** Most queue Workers the device can use (state shared by all queues wants 1). */
  readonly maxWorkers?: number;
  /**
   * Queue Workers that serve the device best when the operator does not say
   * (`--workers`); absent means one per queue, at most the CPU count.
   */
  readonly preferredWorkers?: number;
  /** Called once the queue Workers exist, with the channel to their handlers. */
  attachWorkers?(channel: DeviceWorkerChannel): void;
  /** Present when the device supports DEVICE_STATE save/load. */
  readonly stateSupport?: DeviceStateSupport;
  /** File I/O engine of the queue Workers ("io_uring", "sync"); absent: the device does no file I/O. */
  readonly aio?: string;
  /** Optional: the device's own metric families for `--metrics` (cheap to compute: read at every scrape). */
  metrics?(): MetricFamily[];
}

/** A RAM area of a device carried in the state stream (the RAM_DISK section). */
export interface StateRamDisk {
  /** File descriptor holding the bytes (a memfd). */
  fd: number;
  /** Size in bytes. */
  size: number;
}

/** What a device hands over for SAVE: small state as JSON plus, optionally, a RAM disk. */
export interface DeviceSnapshot {
  /** Device-specific state, JSON-serialisable. */
  state: Record<string, unknown>;
  /** Contents to stream, read in place (the device is stopped during SAVE). */
  ramDisk?: StateRamDisk;
}

/** Where a LOAD is staged until it is verified. */
export interface LoadStaging {
  /** A fresh, zeroed RAM area that receives the stream's RAM_DISK section. */
  ramDisk?: StateRamDisk;
}

/**
 * Optional capability: the device's internal state can be saved and loaded
 * (vhost-user DEVICE_STATE and the `vhostd state` tools).
 */
export interface DeviceStateSupport {
  /** The configuration that must match between source and destination (fingerprinted). */
  identity(): Record<string, unknown>;
  /** A consistent snapshot for SAVE; must not change the device. */
  snapshot(): DeviceSnapshot | Promise<DeviceSnapshot>;
  /** Resources a LOAD is streamed into, away from the live device. */
  prepareLoad(): LoadStaging;
  /**
   * Applies a verified state: checks `state` completely first and throws an
   * Error with a one-line reason (changing nothing) when it is unusable, then
   * takes ownership of `staging`.
   */
  applyLoad(state: Record<string, unknown>, staging: LoadStaging): void | Promise<void>;
  /** Releases staging resources of a LOAD that failed. */
  discardLoad(staging: LoadStaging): void;
  /** Warning for `VHOST_F_LOG_ALL` when the front-end will not move the device state, if any. */
  migrationWarning?(): string | undefined;
}
