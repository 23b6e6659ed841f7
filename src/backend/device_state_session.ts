/**
 * The DEVICE_STATE interface of one connection: SET_DEVICE_STATE_FD starts
 * a SAVE or LOAD in a transfer Worker and is answered at once;
 * CHECK_DEVICE_STATE waits for the transfer and, for a LOAD, applies the
 * verified state. A LOAD is all-or-nothing: the stream goes to staging
 * resources and the device changes only after the whole stream was read,
 * verified and its state accepted by the device.
 *
 * An abandoned transfer never outlives its session: when the connection
 * ends (or its front-end hangs up while CHECK_DEVICE_STATE waits) the
 * transfer Worker is cancelled, whoever holds the other pipe end; a LOAD
 * then applies nothing and its staging is discarded. A transfer whose pipe
 * moves no byte for TRANSFER_STALL_MS fails on its own.
 *
 * @module
 */

import { closeQuietly, pipe2, setPipeSize } from "../../ffi/mod.ts";
import type { DeviceStateSupport, LoadStaging, VirtioDevice } from "../devices/device.ts";
import { DeviceStateDirection, type DeviceStateParams, DeviceStatePhase } from "../protocol/mod.ts";
import { StateTransfer, type TransferRunner } from "../migration/state_transfer.ts";
import type { TransferJob } from "../migration/transfer_protocol.ts";
import { log } from "../log.ts";
import { VERSION } from "../version.ts";
import { RequestError } from "./request_error.ts";
import type { TransferRecord } from "../metrics/daemon_metrics.ts";

/** SET_DEVICE_STATE_FD reply bit: the back-end returns no fd of its own. */
export const DEVICE_STATE_NO_FD = 0x100;

/** How the daemon runs transfers. */
export interface DeviceStateOptions {
  /** Keep a copy of every state sent or received in this directory. */
  dumpDir?: string;
  /** Hand the front-end a pipe of vhostd's own (1 MiB buffer) instead of using its fd. */
  ownPipe?: boolean;
  /** Starts transfer Workers ahead of time (the daemon's); without it each transfer starts one. */
  runner?: TransferRunner;
  /**
   * Aborted when the session's front-end is gone (the daemon's, per
   * connection): a running transfer is cancelled at once.
   */
  peerGone?: AbortSignal;
  /** Longest time the state pipe may move no byte (default TRANSFER_STALL_MS). */
  stallMs?: number;
  /** Told about every transfer that ended: checked, or abandoned with its session (`--metrics`). */
  onTransferEnded?: (record: TransferRecord) => void;
}

/**
 * A transfer whose pipe moves no byte for this long fails: 2 minutes. A
 * stopped VM is waiting on it, so an honest peer (QEMU pumping the pipe
 * between the migration stream and vhostd) is never silent that long,
 * while a hung one cannot keep a transfer (and its fds) forever while its
 * front-end stays connected. A front-end that goes away cancels at once.
 */
export const TRANSFER_STALL_MS = 120_000;

/** What SET_DEVICE_STATE_FD answers: the u64, and an fd when vhostd returns its own pipe end. */
export interface DeviceStateReply {
  /** Reply value (0 plus DEVICE_STATE_NO_FD, or 0 with `fd`). */
  value: number;
  /** The pipe end the front-end must use instead of its own. */
  fd?: number;
}

interface Running {
  transfer: StateTransfer;
  direction: "save" | "load";
  staging?: LoadStaging;
  dumpPath?: string;
}

/** Pipe capacity for transfers through vhostd's own pipe. */
const OWN_PIPE_SIZE = 1 << 20;

/** Device-state transfers of one connection. */
export class DeviceStateSession {
  readonly #device: VirtioDevice;
  readonly #support: DeviceStateSupport;
  readonly #options: DeviceStateOptions;
  #running: Running | undefined;
  /** Dump files of the whole process are numbered in order. */
  static #dumps = 0;

  /** Transfers for `device`, which must have state support. */
  constructor(device: VirtioDevice, support: DeviceStateSupport, options: DeviceStateOptions) {
    this.#device = device;
    this.#support = support;
    this.#options = options;
  }

  /** True while a transfer has not been checked yet. */
  get busy(): boolean {
    return this.#running !== undefined;
  }

  /**
   * SET_DEVICE_STATE_FD: takes ownership of `fd` and starts the transfer.
   * Throws RequestError (fd closed) when the request cannot be honoured.
   */
  async start(
    params: DeviceStateParams,
    fd: number,
    ringsStarted: number[],
  ): Promise<DeviceStateReply> {
    let workerFd = fd;
    let returnedFd: number | undefined;
    let staging: LoadStaging | undefined;
    try {
      if (params.phase !== DeviceStatePhase.STOPPED) {
        throw new RequestError(`transfer phase ${params.phase} is not supported (only STOPPED)`);
      }
      if (ringsStarted.length > 0) {
        throw new RequestError(`rings ${ringsStarted.join(", ")} are started: stop them first`);
      }
      if (this.#running) throw new RequestError("a state transfer is already in progress");
      const direction = params.direction === DeviceStateDirection.SAVE ? "save" : "load";
      if (this.#options.ownPipe) {
        const [r, w] = pipe2();
        setPipeSize(w, OWN_PIPE_SIZE);
        [workerFd, returnedFd] = direction === "save" ? [w, r] : [r, w];
        closeQuietly(fd);
      }
      const device = {
        kind: this.#device.kind,
        identity: this.#support.identity(),
        vhostd: VERSION,
      };
      const dumpPath = this.#dumpPath(direction);
      let running: Running;
      if (direction === "save") {
        const snapshot = await this.#support.snapshot();
        running = {
          transfer: this.#transfer({ direction, fd: workerFd, device, snapshot, dumpPath }),
          direction,
          dumpPath,
        };
      } else {
        staging = this.#support.prepareLoad();
        running = {
          transfer: this.#transfer({ direction, fd: workerFd, device, staging, dumpPath }),
          direction,
          staging,
          dumpPath,
        };
      }
      this.#running = running;
      log.info(`device state ${direction} started${returnedFd === undefined ? "" : " (own pipe)"}`);
      return returnedFd === undefined
        ? { value: DEVICE_STATE_NO_FD }
        : { value: 0, fd: returnedFd };
    } catch (e) {
      if (staging) this.#support.discardLoad(staging);
      closeQuietly(workerFd);
      if (returnedFd !== undefined) closeQuietly(returnedFd);
      if (workerFd !== fd) closeQuietly(fd);
      throw e instanceof RequestError
        ? e
        : new RequestError(e instanceof Error ? e.message : String(e));
    }
  }

  #transfer(job: TransferJob): StateTransfer {
    job.stallMs = this.#options.stallMs ?? TRANSFER_STALL_MS;
    const transfer = this.#options.runner?.start(job) ?? new StateTransfer(job);
    const gone = this.#options.peerGone;
    if (gone) {
      const onGone = () => transfer.cancel("the front-end went away");
      if (gone.aborted) onGone();
      else {
        gone.addEventListener("abort", onGone, { once: true });
        transfer.finished().then(() => gone.removeEventListener("abort", onGone));
      }
    }
    return transfer;
  }

  /** CHECK_DEVICE_STATE: waits for the transfer and its processing; 0 on success. */
  async check(): Promise<number> {
    const running = this.#running;
    if (!running) {
      log.warn("CHECK_DEVICE_STATE without a state transfer");
      return 1;
    }
    const outcome = await running.transfer.finished();
    this.#running = undefined;
    const ended = (ok: boolean) =>
      this.#options.onTransferEnded?.({
        direction: running.direction,
        ok,
        bytes: outcome.bytes,
        ms: outcome.ms,
      });
    const mib = (outcome.bytes / 2 ** 20).toFixed(1);
    const where = running.dumpPath ? `, copy in ${running.dumpPath}` : "";
    if (outcome.ok && running.transfer.cancelled) {
      // The front-end abandoned it: a LOAD that completed anyway is not applied.
      outcome.ok = false;
      outcome.error = "aborted: the front-end went away";
    }
    if (!outcome.ok) {
      if (running.staging) this.#support.discardLoad(running.staging);
      log.error(`device state ${running.direction} failed: ${outcome.error}${where}`);
      ended(false);
      return 1;
    }
    if (running.direction === "load") {
      try {
        await this.#support.applyLoad(outcome.state ?? {}, running.staging!);
      } catch (e) {
        this.#support.discardLoad(running.staging!);
        log.error(`device state load refused: ${e instanceof Error ? e.message : e}${where}`);
        ended(false);
        return 1;
      }
    }
    log.info(
      `device state ${running.direction} done: ${mib} MiB in ${outcome.ms.toFixed(0)} ms${where}`,
    );
    ended(true);
    return 0;
  }

  /**
   * The connection is going away: cancel a running transfer, wait for its
   * Worker (prompt: it waits only in poll, with the cancel fd), and drop
   * what a LOAD staged. The device is left exactly as it was.
   */
  async close(): Promise<void> {
    const running = this.#running;
    this.#running = undefined;
    if (!running) return;
    running.transfer.cancel("its session ended before CHECK_DEVICE_STATE");
    const outcome = await running.transfer.finished();
    // Only now: the Worker wrote into the staging fds until it reported.
    if (running.staging) this.#support.discardLoad(running.staging);
    this.#options.onTransferEnded?.({
      direction: running.direction,
      ok: false,
      bytes: outcome.bytes,
      ms: outcome.ms,
    });
    log.warn(
      `device state ${running.direction} abandoned (never checked, nothing applied): ${
        outcome.ok ? "it had completed" : outcome.error
      }`,
    );
  }

  /** A sortable, unique dump file name: `<kind>-<UTC time>-<n>-<save|load>.vhostd-state`. */
  #dumpPath(direction: string): string | undefined {
    const dir = this.#options.dumpDir;
    if (dir === undefined) return undefined;
    const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(".", "-");
    const seq = String(++DeviceStateSession.#dumps).padStart(4, "0");
    return `${dir}/${this.#device.kind}-${stamp}-${seq}-${direction}.vhostd-state`;
  }
}
