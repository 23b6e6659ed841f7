/**
 * Messages between the main thread and the queue Workers.
 *
 * A Worker spends its life blocked in a synchronous `epoll_wait` on its kick
 * eventfds and one wake eventfd, so it cannot see `postMessage` until it
 * returns to its event loop. The main thread therefore posts a command and
 * then writes 1 to the Worker's wake eventfd; the Worker reads the counter N
 * and takes exactly N commands from its inbox. Every command is answered with
 * a `done` carrying the same `seq`.
 *
 * @module
 */

import type { LogLevel } from "../log.ts";
import type { WorkerSetup } from "../devices/device.ts";
import type { SplitQueueState } from "../virtqueue/split_queue.ts";

/** One guest memory region as a Worker maps it into its own isolate. */
export interface RegionMapping {
  /** Guest-physical address of the region's first byte. */
  guestAddr: number;
  /** Size in bytes. */
  size: number;
  /** Front-end virtual address of the first byte. */
  userAddr: number;
  /** Host address of the first byte (an mmap made by the main thread). */
  hostAddr: bigint;
}

/** The dirty-page log as a Worker maps it (null: logging off). */
export interface LogMapping {
  /** Host address of the bitmap's first byte. */
  hostAddr: bigint;
  /** Bitmap size in bytes. */
  size: number;
}

/**
 * One queue's inflight-tracking region (INFLIGHT_SHMFD) as a Worker maps it:
 * see src/virtqueue/inflight_region.ts for its layout and the order of calls.
 */
export interface InflightMapping {
  /** Host address of the queue's region (an mmap made by the main thread). */
  hostAddr: bigint;
  /** Size of the queue's region in bytes. */
  size: number;
}

/** Commands from the main thread. */
export type WorkerCommand =
  | {
    type: "init";
    seq: number;
    name: string;
    logLevel: LogLevel;
    setup: WorkerSetup;
    wakeFd: number;
    /** Per-queue request statistics to keep (`--metrics`); absent: nothing is counted. */
    stats?: SharedArrayBuffer;
    /** The process's count of busy-polling Workers (spin_budget.ts); absent: no limit. */
    spinBudget?: SharedArrayBuffer;
    /** `--poll-max-us`: the longest busy-poll window in µs (0: never); absent: the defaults. */
    pollMaxUs?: number;
  }
  | { type: "memory"; seq: number; regions: RegionMapping[] }
  | {
    type: "start";
    seq: number;
    queue: number;
    state: SplitQueueState;
    kickFd: number;
    callFd: number;
    errFd: number;
    /**
     * The ring's inflight region when SET_INFLIGHT_FD set one: the Worker
     * recovers and resubmits from it, then tracks every request in it.
     * `state.nextAvail` already counts the requests still in flight.
     */
    inflight?: InflightMapping;
  }
  | { type: "set-call"; seq: number; queue: number; callFd: number }
  | { type: "log"; seq: number; log: LogMapping | null; logFd: number }
  | { type: "stop"; seq: number; queue: number }
  | { type: "device"; seq: number; request: unknown }
  | { type: "exit"; seq: number };

/** Replies and events from a Worker. */
export type WorkerEvent =
  | { type: "done"; seq: number; state?: SplitQueueState; error?: string; result?: unknown }
  | { type: "ring-error"; queue: number; reason: string }
  /** The Worker's event loop failed: it serves nothing any more and is about to exit. */
  | { type: "fatal"; reason: string };

/** Marker for "no file descriptor" in commands. */
export const NO_FD = -1;
