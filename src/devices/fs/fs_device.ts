/**
 * virtio-fs, control half: features, the read-only configuration space
 * (tag, number of request queues), and the parameters its queue Worker is
 * built from.
 *
 * The filesystem itself (inode table, open handles) lives in the request
 * handler of ONE queue Worker (`maxWorkers = 1`): a FUSE node id or file
 * handle the guest got on one queue may come back on any other queue or on
 * the high-priority queue (FORGET), so every queue must see the same
 * tables, and the tables hold plain fds and JS objects that cannot be shared
 * between isolates. One Worker serves every queue; with the io_uring engine
 * READ, WRITE and FSYNC complete later, so the requests of all queues run
 * side by side in the kernel while the tables stay in one place (no locks,
 * no copies); metadata requests run at once, in order. The control half
 * reaches the tables through the Worker channel (DEVICE_STATE save/load).
 *
 * @module
 */

import { RING_FEATURES } from "../../protocol/mod.ts";
import { AckedFeatures } from "../acked_features.ts";
import { MAX_QUEUE_SIZE } from "../../virtqueue/layout.ts";
import type { DeviceWorkerChannel, VirtioDevice, WorkerSetup } from "../device.ts";
import { encodeFsConfig, FS_CONFIG_SIZE, validateTag } from "./fs_spec.ts";
import {
  FsStateSupport,
  type FsStateTarget,
  type FsWorkerCommand,
  type MigrationOnError,
} from "./fs_state.ts";
import type {
  CachePolicy,
  FsXattrOptions,
  InodeFileHandleMode,
  MigrationMode,
} from "./passthrough/fs_types.ts";
import type { FileIoEngineKind } from "../../io/file_io_engine.ts";

/** Options of a virtio-fs device. */
export interface FsDeviceOptions {
  /** The directory shared with the guest (an absolute path). */
  sharedDir: string;
  /** Mount tag, 1 to 36 bytes of UTF-8. */
  tag: string;
  /** Number of request queues (besides the high-priority queue). */
  numRequestQueues: number;
  /** Refuse every modifying operation with EROFS. */
  readOnly: boolean;
  /** What a LOAD does with inodes or handles it cannot reopen. */
  migrationOnError: MigrationOnError;
  /** How much the guest may cache (default "auto"). */
  cache?: CachePolicy;
  /** Engine of READ, WRITE and FSYNC (default "sync": each runs inside the request). */
  aio?: FileIoEngineKind;
  /** Extended attributes and ACLs (default: not served). */
  xattrOptions?: FsXattrOptions;
  /** Whether known inodes hold fds or file handles (default "never"). */
  inodeFileHandles?: InodeFileHandleMode;
  /** How inodes travel in a SAVE (default "find-paths"). */
  migrationMode?: MigrationMode;
}

/** Worker parameters of the fs data half. */
export interface FsWorkerParams extends Record<string, unknown> {
  /** The shared directory. */
  sharedDir: string;
  /** Refuse modifications. */
  readOnly: boolean;
  /** LOAD policy for inodes or handles that cannot be reopened. */
  migrationOnError: MigrationOnError;
  /** Guest caching policy. */
  cache: CachePolicy;
  /** Engine of READ, WRITE and FSYNC. */
  aio: FileIoEngineKind;
  /** Extended attributes and ACLs. */
  xattrOptions: FsXattrOptions;
  /** Inodes by fd or by file handle. */
  inodeFileHandles: InodeFileHandleMode;
  /** Inodes in a SAVE by path, or by file handle too. */
  migrationMode: MigrationMode;
}

/** A virtio-fs device sharing a host directory. */
export class FsDevice extends AckedFeatures implements VirtioDevice, FsStateTarget {
  /** Device kind. */
  readonly kind = "fs";
  /** High-priority queue plus the request queues. */
  readonly numQueues: number;
  /** Largest queue size accepted. */
  readonly maxQueueSize: number = MAX_QUEUE_SIZE;
  /** One Worker holds the inode and handle tables (see the module doc). */
  readonly maxWorkers = 1;
  /** The shared directory. */
  readonly sharedDir: string;
  /** Mount tag. */
  readonly tag: string;
  /** Number of request queues. */
  readonly numRequestQueues: number;
  /** Modifications refused. */
  readonly readOnly: boolean;
  /** LOAD policy. */
  readonly migrationOnError: MigrationOnError;
  /** Guest caching policy. */
  readonly cache: CachePolicy;
  /** Engine of READ, WRITE and FSYNC. */
  readonly aio: FileIoEngineKind;
  /** Extended attributes and ACLs. */
  readonly xattrOptions: FsXattrOptions;
  /** Inodes by fd or by file handle. */
  readonly inodeFileHandles: InodeFileHandleMode;
  /** Inodes in a SAVE by path, or by file handle too. */
  readonly migrationMode: MigrationMode;
  /** DEVICE_STATE save/load. */
  readonly stateSupport: FsStateSupport = new FsStateSupport(this);
  readonly #config: Uint8Array;
  /** Nothing is shared through memory: the Worker owns everything. */
  readonly #shared = new SharedArrayBuffer(8);
  #channel: DeviceWorkerChannel | undefined;

  /** Builds a device; throws RangeError for a bad tag or queue count. */
  constructor(options: FsDeviceOptions) {
    super();
    const problem = validateTag(options.tag);
    if (problem) throw new RangeError(problem);
    if (!Number.isInteger(options.numRequestQueues) || options.numRequestQueues < 1) {
      throw new RangeError(`bad number of request queues ${options.numRequestQueues}`);
    }
    this.sharedDir = options.sharedDir;
    this.tag = options.tag;
    this.numRequestQueues = options.numRequestQueues;
    this.numQueues = 1 + options.numRequestQueues;
    this.readOnly = options.readOnly;
    this.migrationOnError = options.migrationOnError;
    this.cache = options.cache ?? "auto";
    this.aio = options.aio ?? "sync";
    this.xattrOptions = { ...options.xattrOptions };
    this.inodeFileHandles = options.inodeFileHandles ?? "never";
    this.migrationMode = options.migrationMode ?? "find-paths";
    this.#config = encodeFsConfig(options.tag, options.numRequestQueues);
  }

  /** Ring features only: vhostd offers no notification queue. */
  features(): bigint {
    return RING_FEATURES;
  }

  /** The configuration space: tag and num_request_queues. */
  readConfig(): Uint8Array {
    return this.#config.slice();
  }

  /** The configuration space is read-only: rewriting bytes unchanged is accepted, changes are not. */
  writeConfig(offset: number, data: Uint8Array): string | undefined {
    if (offset < 0 || offset + data.length > FS_CONFIG_SIZE) {
      return "write past the end of the configuration space";
    }
    for (let i = 0; i < data.length; i++) {
      if (data[i] !== this.#config[offset + i]) {
        return `the virtio-fs configuration space is read-only (byte ${offset + i})`;
      }
    }
    return undefined;
  }

  /**
   * Device reset: accepted features forgotten. The file system state stays:
   * a new guest driver starts a new FUSE session with INIT, and after a LOAD
   * the start sequence (which may reset) must not undo the loaded state.
   */
  reset(): void {
    this.setAckedFeatures(0n);
  }

  /** Plain parameters for the queue Worker. */
  workerSetup(): WorkerSetup {
    const params: FsWorkerParams = {
      sharedDir: this.sharedDir,
      readOnly: this.readOnly,
      migrationOnError: this.migrationOnError,
      cache: this.cache,
      aio: this.aio,
      xattrOptions: this.xattrOptions,
      inodeFileHandles: this.inodeFileHandles,
      migrationMode: this.migrationMode,
    };
    return { kind: this.kind, params, shared: this.#shared };
  }

  /** Keeps the channel to the request handler. */
  attachWorkers(channel: DeviceWorkerChannel): void {
    this.#channel = channel;
  }

  /** Sends `request` to the request handler (there is one Worker) and resolves with its answer. */
  async command(request: FsWorkerCommand): Promise<unknown> {
    if (!this.#channel) throw new Error("fs: the queue worker is not running");
    const results = await this.#channel.command(request);
    return results[0];
  }

  /** Nothing to flush: writes go straight to the host files, FSYNC makes them durable. */
  flush(): void {}

  /** Nothing to close: the Worker owns every fd of the shared directory. */
  close(): void {}

  /** One line for logs. */
  describe(): string {
    return `virtio-fs "${this.tag}" sharing ${this.sharedDir}${this.readOnly ? " read-only" : ""}${
      this.xattrOptions.posixAcl ? ", xattr, POSIX ACLs" : this.xattrOptions.xattr ? ", xattr" : ""
    }, ${this.numRequestQueues} request queue(s), cache ${this.cache}, aio ${this.aio}, inode file handles ${this.inodeFileHandles}, migration by ${this.migrationMode}, on error: ${this.migrationOnError}`;
  }
}
