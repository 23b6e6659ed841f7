/**
 * Messages between the main thread and a transfer Worker.
 *
 * @module
 */

import type { DeviceSnapshot, LoadStaging } from "../devices/device.ts";
import type { DeviceDescription } from "./transfer.ts";

/** The one job a transfer Worker runs. */
export type TransferJob =
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
  };

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
