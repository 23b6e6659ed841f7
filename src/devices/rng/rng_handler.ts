/**
 * virtio-rng, data half: fills each request's device-writable buffers with
 * bytes from the kernel's CSPRNG (`getrandom`, straight into guest memory).
 * With a rate limit, a request the budget cannot cover waits (DEFERRED)
 * until the period ends, in arrival order; it is never answered short
 * because of the limit.
 *
 * @module
 */

import { getRandom } from "../../../ffi/mod.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { type DescriptorChain, forEachPiece } from "../../virtqueue/descriptor_chain.ts";
import {
  DEFERRED,
  type HandleResult,
  type QueueContext,
  type QueueHandler,
  type WorkerSetup,
} from "../device.ts";
import { RateBudget } from "./rate_budget.ts";

/**
 * Most bytes one request gets, whatever its buffers' size: a guest's
 * gigabyte-sized buffer must not hold the Worker in getrandom for seconds
 * (virtio-rng allows any used length; Linux asks for at most a page).
 */
export const MAX_REQUEST_BYTES = 1 << 20;

/** Worker parameters of the rng data half. */
export interface RngWorkerParams extends Record<string, unknown> {
  /** Bytes per period, with `periodMs`; absent: no limit. */
  maxBytes?: number;
  /** Period of the rate limit in milliseconds. */
  periodMs?: number;
}

/** Commands from the control half (state save and load). */
export type RngWorkerCommand =
  | { type: "budget" }
  | { type: "restore-budget"; remaining: number };

/** What `{ type: "budget" }` answers: bytes left in the period, null without a limit. */
export interface RngBudgetReport {
  /** Bytes left in the current period. */
  remaining: number | null;
}

interface Waiting {
  chain: DescriptorChain;
  memory: GuestMemory;
  queue: number;
  want: number;
}

/** Fills `length` bytes of the chain's writable buffers with entropy; returns the bytes written. */
function fillRandom(chain: DescriptorChain, memory: GuestMemory, length: number): number {
  return forEachPiece(chain.writableSegments(), 0, length, (gpa, len) => {
    const dest = memory.slice(gpa, len);
    if (dest === undefined) return false;
    // getrandom may return less than asked for above 32 MiB; requests are capped below that.
    getRandom(dest);
    memory.markWritten(gpa, len);
    return true;
  });
}

/** The rng request handler of one queue Worker. */
export class RngRequestHandler implements QueueHandler {
  readonly #budget: RateBudget | undefined;
  readonly #waiting: Waiting[] = [];
  #context: QueueContext | undefined;
  #periodTimer: number | undefined;

  /** A handler with the rate limit of `params`, if any. */
  constructor(params: RngWorkerParams) {
    if (params.maxBytes !== undefined && params.periodMs !== undefined) {
      this.#budget = new RateBudget(params.maxBytes, params.periodMs);
    }
  }

  /** Keeps the Worker's services (timers, deferred completion). */
  attach(context: QueueContext): void {
    this.#context = context;
  }

  /** Answers a request now, or keeps it until the budget covers it. */
  handle(chain: DescriptorChain, memory: GuestMemory, queueIndex: number): HandleResult {
    // virtio-rng has no status byte: a malformed chain is returned with nothing written.
    if (chain.error !== undefined) return 0;
    const want = Math.min(chain.writableLength(), MAX_REQUEST_BYTES);
    const budget = this.#budget;
    if (budget === undefined || want === 0) return fillRandom(chain, memory, want);
    const needed = Math.min(want, budget.maxBytes);
    if (this.#waiting.length === 0 && budget.remaining >= needed) {
      return this.#serve(chain, memory, needed);
    }
    this.#waiting.push({ chain, memory, queue: queueIndex, want: needed });
    return DEFERRED;
  }

  /** A stopping queue gets its waiting requests back now, with nothing written. */
  quiesce(queueIndex: number): void {
    for (let i = 0; i < this.#waiting.length;) {
      const w = this.#waiting[i];
      if (w.queue !== queueIndex) {
        i++;
        continue;
      }
      this.#waiting.splice(i, 1);
      this.#context?.complete(w.queue, w.chain, 0);
    }
  }

  /** Budget reports and restores for state save and load. */
  command(request: unknown): unknown {
    const cmd = request as RngWorkerCommand;
    if (cmd?.type === "budget") {
      const report: RngBudgetReport = { remaining: this.#budget?.remaining ?? null };
      return report;
    }
    if (cmd?.type === "restore-budget" && this.#budget) {
      this.#budget.restore(cmd.remaining);
      // A partly spent budget ends its period like any other.
      if (!this.#budget.full) this.#startPeriod();
      return { remaining: this.#budget.remaining };
    }
    throw new Error(`rng: unknown command ${JSON.stringify(request)}`);
  }

  /** Drops the period timer. */
  close(): void {
    if (this.#periodTimer !== undefined) this.#context?.clearTimer(this.#periodTimer);
    this.#periodTimer = undefined;
  }

  #serve(chain: DescriptorChain, memory: GuestMemory, bytes: number): number {
    const budget = this.#budget!;
    if (budget.full) this.#startPeriod();
    budget.take(bytes);
    return fillRandom(chain, memory, bytes);
  }

  #startPeriod(): void {
    if (this.#periodTimer !== undefined || !this.#context || !this.#budget) return;
    this.#periodTimer = this.#context.setTimer(this.#budget.periodMs, () => this.#periodEnded());
  }

  /** The budget is full again: waiting requests are answered in order while it lasts. */
  #periodEnded(): void {
    this.#periodTimer = undefined;
    const budget = this.#budget!;
    budget.refill();
    while (this.#waiting.length > 0 && budget.remaining >= this.#waiting[0].want) {
      const w = this.#waiting.shift()!;
      this.#context!.complete(w.queue, w.chain, this.#serve(w.chain, w.memory, w.want));
    }
  }
}

/** Queue Worker factory of the rng data half. */
export function createRngRequestHandler(setup: WorkerSetup): QueueHandler {
  return new RngRequestHandler(setup.params as RngWorkerParams);
}
