/**
 * The main thread's side of a device-state transfer: starts a transfer
 * Worker for one SAVE or LOAD and resolves when it is over. Used by the
 * back-end for SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE.
 *
 * @module
 */

import { closeQuietly, eventfd, eventfdWrite } from "../../ffi/mod.ts";
import type { TransferJob, TransferReport } from "./transfer_protocol.ts";

/** The outcome of a transfer. */
export interface TransferOutcome {
  /** True when the stream was fully written, or fully read and verified. */
  ok: boolean;
  /** Why it failed. */
  error?: string;
  /** Stream bytes moved. */
  bytes: number;
  /** Duration in milliseconds. */
  ms: number;
  /** LOAD: the verified device state. */
  state?: Record<string, unknown>;
}

/** A running transfer. */
export class StateTransfer {
  /** "save" or "load". */
  readonly direction: TransferJob["direction"];
  /** Bytes moved so far (updated a few times a second). */
  bytes = 0;
  readonly #worker: Worker;
  readonly #done: Promise<TransferOutcome>;
  /** The eventfd that cancels the Worker's waits; closed once the Worker has reported. */
  readonly #cancelFd: number;
  #cancelReason: string | undefined;
  #over = false;

  /**
   * Starts `job` in `worker` (a fresh transfer Worker; a new one when not
   * given). The job's fd belongs to the transfer from now on (unless this
   * throws).
   */
  constructor(job: TransferJob, worker: Worker = spawnTransferWorker()) {
    this.direction = job.direction;
    const started = performance.now();
    this.#worker = worker;
    try {
      this.#cancelFd = eventfd(0);
    } catch (e) {
      // The job's fd stays the caller's when the transfer could not start.
      worker.terminate();
      throw e;
    }
    this.#done = new Promise<TransferOutcome>((resolve) => {
      const finish = (outcome: TransferOutcome) => {
        // The Worker is done with the cancel fd only now: closing it earlier could let its
        // number be reused under a poll that is still running.
        this.#over = true;
        closeQuietly(this.#cancelFd);
        if (this.#cancelReason !== undefined && !outcome.ok) {
          outcome.error = `aborted (${this.#cancelReason}): ${outcome.error}`;
        }
        resolve(outcome);
      };
      this.#worker.onmessage = (e: MessageEvent<TransferReport>) => {
        const report = e.data;
        if (report.type === "progress") {
          this.bytes = report.bytes;
          return;
        }
        this.bytes = report.bytes ?? this.bytes;
        finish({
          ok: report.ok,
          error: report.error,
          bytes: this.bytes,
          ms: report.ms ?? performance.now() - started,
          state: report.state,
        });
      };
      this.#worker.onerror = (e) => {
        e.preventDefault();
        // The Worker died before it could close the fd.
        closeQuietly(job.fd);
        finish({
          ok: false,
          error: `transfer worker failed: ${e.message}`,
          bytes: this.bytes,
          ms: 0,
        });
      };
    });
    this.#worker.postMessage({ ...job, cancelFd: this.#cancelFd });
  }

  /**
   * Asks the Worker to stop: its next wait for the state fd (or its next
   * look at the cancel fd) ends the transfer with a failure. `finished()`
   * then resolves promptly, with `reason` in the error. Idempotent.
   */
  cancel(reason: string): void {
    if (this.#over || this.#cancelReason !== undefined) return;
    this.#cancelReason = reason;
    eventfdWrite(this.#cancelFd, 1);
  }

  /** True once `cancel` was called. */
  get cancelled(): boolean {
    return this.#cancelReason !== undefined;
  }

  /** Resolves when the transfer is over (never rejects). */
  finished(): Promise<TransferOutcome> {
    return this.#done;
  }
}

/** Starts a transfer Worker; it runs one job and then ends. */
export function spawnTransferWorker(): Worker {
  return new Worker(new URL("./transfer_worker.ts", import.meta.url), {
    type: "module",
    name: "state-transfer",
  });
}

/**
 * Keeps one transfer Worker started ahead of time: starting a Worker takes
 * 70-130 ms here, a quarter of a whole 256 MiB transfer at 1 GiB/s. A
 * Worker whose transfer succeeded becomes the spare again; a failed one
 * ends (a failed transfer leaves nothing behind), and then the next spare
 * is started once the transfer is over and its
 * CHECK_DEVICE_STATE answered, not when it starts: `new Worker` holds this
 * thread for ~15 ms (the SET_DEVICE_STATE_FD reply waited for it), and the
 * new isolate's start-up took CPU from the transfer.
 */
export class TransferRunner {
  #spare: Worker | undefined = spawnTransferWorker();
  #closed = false;

  /** Starts `job` in the spare Worker (or a new one when a transfer took it and is running). */
  start(job: TransferJob): StateTransfer {
    const worker = this.#spare ?? spawnTransferWorker();
    this.#spare = undefined;
    const transfer = new StateTransfer(job, worker);
    transfer.finished().then((outcome) => {
      if (outcome.ok && !this.#closed && this.#spare === undefined) {
        // Its code is compiled already (a fresh isolate runs the first MiBs slower).
        worker.onmessage = null;
        worker.onerror = null;
        this.#spare = worker;
        return;
      }
      worker.terminate(); // a failed one has ended itself already
      // A macrotask: the CHECK_DEVICE_STATE reply (promise continuations) goes out first.
      const timer = setTimeout(() => {
        if (!this.#closed) this.#spare ??= spawnTransferWorker();
      }, 0);
      Deno.unrefTimer(timer);
    });
    return transfer;
  }

  /** Ends the spare Worker; no spare is started after this. */
  close(): void {
    this.#closed = true;
    this.#spare?.terminate();
    this.#spare = undefined;
  }
}
