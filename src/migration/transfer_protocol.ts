/**
 * Messages between the main thread and a transfer Worker.
 *
 * @module
 */

import type { DeviceSnapshot, LoadStaging } from "../devices/device.ts";
import type { DeviceDescription } from "./transfer.ts";

/** What every job carries besides its direction. */
interface JobControl {
  /**
   * An eventfd the main thread writes to cancel the transfer; the Worker
   * polls it with the state fd and never closes it (its owner closes it
   * after the Worker reported).
   */
  cancelFd?: number;
  /** Longest wait for the state fd with no byte moving, in ms (default: no limit). */
  stallMs?: number;
}

/** The one job a transfer Worker runs. */
export type TransferJob =
  & JobControl
  & (
    | {
      direction: "save";
      /** Write end of the state stream; the Worker closes it. */
      fd: number;
      device: DeviceDescription;
      snapshot: DeviceSnapshot;
      dumpPath?: string;
    }
    | {
      direction: "load";
      /** Read end of the state stream; the Worker closes it. */
      fd: number;
      device: DeviceDescription;
      staging: LoadStaging;
      dumpPath?: string;
    }
  );

/** Progress and the final result. */
export type TransferReport =
  | { type: "progress"; bytes: number }
  | {
    type: "done";
    ok: boolean;
    bytes?: number;
    ms?: number;
    /** LOAD only: the verified device state. */
    state?: Record<string, unknown>;
    error?: string;
  };
