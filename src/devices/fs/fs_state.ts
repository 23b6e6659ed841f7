/**
 * virtio-fs device state for DEVICE_STATE and the `vhostd state` tools.
 *
 * Identity (must match to load): the tag, the number of request queues and
 * read-only. Not the shared directory's path: source and destination may
 * mount the same directory at different paths. State: the FUSE session of
 * the request handler (initialised or not, the negotiated minor and flags)
 * and the filesystem core's snapshot (inodes, open handles), both JSON. The
 * files themselves are not part of the state: both sides share them.
 *
 * The state lives in the single queue Worker (see fs_device.ts), so the
 * control half only relays: SAVE asks the Worker for a snapshot, LOAD sends
 * the verified state to the Worker, which restores it into a fresh core and
 * swaps it in only when that worked.
 *
 * @module
 */

import type { DeviceSnapshot, DeviceStateSupport, LoadStaging } from "../device.ts";

/** What a LOAD does when a saved inode or handle cannot be reopened on this host. */
export type MigrationOnError = "abort" | "guest-error";

/** The values of {@linkcode MigrationOnError}. */
export const MIGRATION_ON_ERROR_MODES: readonly MigrationOnError[] = ["abort", "guest-error"];

/** True when `value` is a {@linkcode MigrationOnError}. */
export function isMigrationOnError(value: unknown): value is MigrationOnError {
  return value === "abort" || value === "guest-error";
}

/** The FUSE session as the request handler keeps it. */
export interface FuseSessionState {
  /** INIT was answered and no DESTROY came since. */
  initialized: boolean;
  /** Negotiated minor version (0 before INIT). */
  minor: number;
  /** Accepted INIT flags. */
  flags: number;
  /** Accepted INIT flags2. */
  flags2: number;
}

/** The JSON state of a virtio-fs device. */
export interface FsState {
  /** The request handler's FUSE session. */
  session: FuseSessionState;
  /** The filesystem core's snapshot (opaque here; the core checks it on restore). */
  fs: Record<string, unknown>;
}

/** Commands from the control half to the request handler in the queue Worker. */
export type FsWorkerCommand =
  | { op: "snapshot" }
  | { op: "restore"; state: FsState };

/** What the Worker answers to `restore`: the problems it accepted (guest-error mode). */
export interface FsRestoreResult {
  /** One line per inode or handle that could not be restored. */
  errors: string[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function u32(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new Error(`fs state: session.${name} must be a u32, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Decodes and checks the JSON state of an fs device; throws Error with a one-line reason. */
export function decodeFsState(state: unknown): FsState {
  if (!isRecord(state)) throw new Error("fs state: not an object");
  const { session, fs } = state;
  if (!isRecord(session)) throw new Error("fs state: session must be an object");
  if (typeof session.initialized !== "boolean") {
    throw new Error("fs state: session.initialized must be true or false");
  }
  if (!isRecord(fs)) throw new Error("fs state: fs must be an object");
  return {
    session: {
      initialized: session.initialized,
      minor: u32("minor", session.minor),
      flags: u32("flags", session.flags),
      flags2: u32("flags2", session.flags2),
    },
    fs,
  };
}

/** Decodes a command sent to the fs request handler; throws Error for anything else. */
export function decodeFsWorkerCommand(request: unknown): FsWorkerCommand {
  if (isRecord(request)) {
    if (request.op === "snapshot") return { op: "snapshot" };
    if (request.op === "restore") return { op: "restore", state: decodeFsState(request.state) };
  }
  throw new Error(`unknown fs worker command ${JSON.stringify(request)}`);
}

/** What fs state support needs from the device. */
export interface FsStateTarget {
  /** The mount tag. */
  readonly tag: string;
  /** Number of request queues. */
  readonly numRequestQueues: number;
  /** Every modifying operation refused. */
  readonly readOnly: boolean;
  /** Sends a command to the request handler in the queue Worker and resolves with its answer. */
  command(request: FsWorkerCommand): Promise<unknown>;
}

/** DEVICE_STATE support of a virtio-fs device. */
export class FsStateSupport implements DeviceStateSupport {
  readonly #device: FsStateTarget;

  /** State support for `device`. */
  constructor(device: FsStateTarget) {
    this.#device = device;
  }

  /** The configuration a loaded state must match (the shared directory's path is left out). */
  identity(): Record<string, unknown> {
    const d = this.#device;
    return { tag: d.tag, numRequestQueues: d.numRequestQueues, readOnly: d.readOnly };
  }

  /** The handler's session and the core's snapshot, taken in the Worker between requests. */
  async snapshot(): Promise<DeviceSnapshot> {
    const state = decodeFsState(await this.#device.command({ op: "snapshot" }));
    return { state: { ...state } };
  }

  /** Nothing to stage: the state is small JSON. */
  prepareLoad(): LoadStaging {
    return {};
  }

  /** Checks the state, then has the Worker restore it (all-or-nothing, see the module doc). */
  async applyLoad(state: Record<string, unknown>, _staging: LoadStaging): Promise<void> {
    const decoded = decodeFsState(state);
    await this.#device.command({ op: "restore", state: decoded });
  }

  /** Nothing was staged. */
  discardLoad(_staging: LoadStaging): void {}

  /** Without DEVICE_STATE the guest's open files do not follow it. */
  migrationWarning(): string | undefined {
    return "dirty-page logging started, but this front-end does not move back-end state " +
      "(DEVICE_STATE not negotiated): the guest's open files and known inodes will NOT follow " +
      "the VM";
  }
}
