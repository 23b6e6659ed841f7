/**
 * The main thread's side of the queue Workers: spawns them, assigns rings to
 * them (ring i goes to Worker i mod N) and turns commands into promises.
 *
 * A Worker that dies (an uncaught error, a failed event loop) takes only its
 * rings with it: its pending commands fail, its rings are reported broken,
 * and a fresh Worker takes its place with the current guest memory and
 * dirty log, so the front-end can restart those rings and the next session
 * finds a complete pool. A command never waits on a dead Worker.
 *
 * @module
 */

import { closeQuietly, eventfd, eventfdWrite } from "../../ffi/mod.ts";
import { log, logLevel } from "../log.ts";
import { newSpinBudget } from "./spin_budget.ts";
import type { WorkerSetup } from "../devices/device.ts";
import type { SplitQueueState } from "../virtqueue/split_queue.ts";
import type {
  InflightMapping,
  LogMapping,
  RegionMapping,
  WorkerCommand,
  WorkerEvent,
} from "./worker_protocol.ts";

/** Every Worker of the process, whatever its device, shares one count of spinners. */
const SPIN_BUDGET = newSpinBudget();

/** Distributes commands without `seq` (the pool numbers them). */
type Command = WorkerCommand extends infer C ? C extends { seq: number } ? Omit<C, "seq"> : never
  : never;

interface Pending {
  resolve: (event: Extract<WorkerEvent, { type: "done" }>) => void;
}

class WorkerHandle {
  readonly worker: Worker;
  readonly wakeFd: number;
  readonly pending = new Map<number, Pending>();
  /** Why the Worker is gone, once it is. */
  lost: string | undefined;
  readonly name: string;
  #seq = 0;

  constructor(
    name: string,
    onEvent: (event: WorkerEvent) => void,
    onLost: (handle: WorkerHandle, reason: string) => void,
  ) {
    this.name = name;
    this.wakeFd = eventfd(0);
    this.worker = new Worker(new URL("./queue_worker.ts", import.meta.url), {
      type: "module",
      name,
    });
    this.worker.onmessage = (e: MessageEvent<WorkerEvent>) => {
      const event = e.data;
      if (event.type === "done") {
        const p = this.pending.get(event.seq);
        this.pending.delete(event.seq);
        p?.resolve(event);
      } else if (event.type === "fatal") {
        this.#lose(event.reason, onLost);
      } else {
        onEvent(event);
      }
    };
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.#lose(e.message, onLost);
    };
  }

  #lose(reason: string, onLost: (handle: WorkerHandle, reason: string) => void): void {
    if (this.lost !== undefined) return;
    this.lost = reason;
    log.error(`queue worker ${this.name} failed: ${reason}`);
    for (const p of this.pending.values()) {
      p.resolve({ type: "done", seq: -1, error: `queue worker failed: ${reason}` });
    }
    this.pending.clear();
    this.worker.terminate();
    closeQuietly(this.wakeFd);
    onLost(this, reason);
  }

  send(command: Command, wake = true): Promise<Extract<WorkerEvent, { type: "done" }>> {
    if (this.lost !== undefined) {
      return Promise.resolve({ type: "done", seq: -1, error: `queue worker failed: ${this.lost}` });
    }
    const seq = ++this.#seq;
    return new Promise((resolve) => {
      this.pending.set(seq, { resolve });
      this.worker.postMessage({ ...command, seq } as WorkerCommand);
      if (wake) eventfdWrite(this.wakeFd, 1);
    });
  }
}

/** A failure reported by a Worker for a command. */
export class WorkerCommandError extends Error {}

/** How every Worker of a pool runs. */
export interface WorkerPoolOptions {
  /** Per-queue request statistics to count in (src/metrics/queue_stats.ts); absent: none. */
  stats?: SharedArrayBuffer;
  /** Each Worker's longest busy-poll window in µs (`--poll-max-us`); absent: the defaults. */
  pollMaxUs?: number;
}

/** The set of queue Workers of one device. */
export class WorkerPool {
  readonly #workers: WorkerHandle[] = [];
  /** Resolves once Worker i (a replacement, after a failure) is initialised. */
  readonly #ready: Promise<void>[] = [];
  readonly #setup: WorkerSetup;
  readonly #stats: SharedArrayBuffer | undefined;
  readonly #pollMaxUs: number | undefined;
  /** What a replacement Worker must be given: the current memory and dirty log. */
  #memory: RegionMapping[] = [];
  #log: { log: LogMapping | null; logFd: number } | undefined;
  /** Queues running on some Worker. */
  readonly #running = new Set<number>();
  #closing = false;
  /** Called when a Worker stops serving a broken ring. */
  onRingError: (queue: number, reason: string) => void = () => {};
  /** Called for each running ring lost with its Worker (it is stopped, its position gone). */
  onRingLost: (queue: number, reason: string) => void = () => {};

  private constructor(setup: WorkerSetup, options: WorkerPoolOptions) {
    this.#setup = setup;
    this.#stats = options.stats;
    this.#pollMaxUs = options.pollMaxUs;
  }

  /** Spawns `count` Workers for the device described by `setup`. */
  static async create(
    count: number,
    setup: WorkerSetup,
    options: WorkerPoolOptions = {},
  ): Promise<WorkerPool> {
    const pool = new WorkerPool(setup, options);
    for (let i = 0; i < count; i++) pool.#workers.push(pool.#spawn(i));
    // The Worker is not blocked in epoll yet when init arrives: no wake needed.
    const results = await Promise.all(pool.#workers.map((w, i) => pool.#init(w, i)));
    const failed = results.find((r) => r.error !== undefined);
    if (failed) {
      await pool.close();
      throw new WorkerCommandError(`queue worker failed to start: ${failed.error}`);
    }
    pool.#workers.forEach((_, i) => pool.#ready[i] = Promise.resolve());
    return pool;
  }

  #spawn(index: number): WorkerHandle {
    return new WorkerHandle(`q${index}`, (event) => {
      if (event.type === "ring-error") this.onRingError(event.queue, event.reason);
    }, (handle, reason) => this.#replace(index, handle, reason));
  }

  #init(w: WorkerHandle, index: number): Promise<Extract<WorkerEvent, { type: "done" }>> {
    return w.send(
      {
        type: "init",
        name: `q${index}`,
        logLevel: logLevel(),
        setup: this.#setup,
        wakeFd: w.wakeFd,
        stats: this.#stats,
        spinBudget: SPIN_BUDGET,
        pollMaxUs: this.#pollMaxUs,
      },
      false,
    );
  }

  /** Worker `index` failed: its rings are lost, a fresh Worker with today's memory takes over. */
  #replace(index: number, lost: WorkerHandle, reason: string): void {
    if (this.#workers[index] !== lost || this.#closing) return;
    for (const queue of [...this.#running]) {
      if (queue % this.#workers.length !== index) continue;
      this.#running.delete(queue);
      this.onRingLost(queue, reason);
    }
    const fresh = this.#spawn(index);
    this.#workers[index] = fresh;
    this.#ready[index] = (async () => {
      const steps: Command[] = [];
      if (this.#memory.length > 0) steps.push({ type: "memory", regions: this.#memory });
      if (this.#log) steps.push({ type: "log", ...this.#log });
      let result = await this.#init(fresh, index);
      for (const step of steps) {
        if (result.error !== undefined) break;
        result = await fresh.send(step);
      }
      if (result.error !== undefined) {
        log.error(`replacement queue worker q${index} did not start: ${result.error}`);
      } else {
        log.info(`queue worker q${index} replaced`);
      }
    })();
  }

  /** Number of Workers. */
  get size(): number {
    return this.#workers.length;
  }

  /** Sends to the Worker serving `queue`, once it is ready (a replacement first initialises). */
  async #send(index: number, command: Command): Promise<Extract<WorkerEvent, { type: "done" }>> {
    await this.#ready[index];
    return this.#workers[index].send(command);
  }

  #indexOf(queue: number): number {
    return queue % this.#workers.length;
  }

  #all(command: Command): Promise<Extract<WorkerEvent, { type: "done" }>[]> {
    return Promise.all(this.#workers.map((_, i) => this.#send(i, command)));
  }

  static #check(
    result: Extract<WorkerEvent, { type: "done" }>,
  ): Extract<WorkerEvent, { type: "done" }> {
    if (result.error !== undefined) throw new WorkerCommandError(result.error);
    return result;
  }

  /** Replaces the guest memory of every Worker; old views are dropped when this resolves. */
  async setMemory(regions: RegionMapping[]): Promise<void> {
    this.#memory = regions;
    const results = await this.#all({ type: "memory", regions });
    results.forEach(WorkerPool.#check);
  }

  /** Turns dirty-page logging on (a mapped bitmap) or off (null) in every Worker. */
  async setLog(log: LogMapping | null, logFd: number): Promise<void> {
    this.#log = log ? { log, logFd } : undefined;
    const results = await this.#all({ type: "log", log, logFd });
    results.forEach(WorkerPool.#check);
  }

  /**
   * Starts serving a ring, tracking its requests in `inflight` when given.
   * Resolves after the Worker attached it (a bad ring is reported, not thrown).
   */
  async startQueue(
    queue: number,
    state: SplitQueueState,
    kickFd: number,
    callFd: number,
    errFd: number,
    inflight?: InflightMapping,
  ): Promise<string | undefined> {
    const r = await this.#send(this.#indexOf(queue), {
      type: "start",
      queue,
      state,
      kickFd,
      callFd,
      errFd,
      inflight,
    });
    // A ring that started broken still runs in the Worker (it answers stop).
    if (r.seq !== -1) this.#running.add(queue);
    return r.error;
  }

  /** Changes the call eventfd of a running ring; the old one is unused once this resolves. */
  async setCall(queue: number, callFd: number): Promise<void> {
    WorkerPool.#check(await this.#send(this.#indexOf(queue), { type: "set-call", queue, callFd }));
  }

  /** Stops a running ring and returns its exact position. */
  async stopQueue(queue: number): Promise<SplitQueueState> {
    const result = await this.#send(this.#indexOf(queue), { type: "stop", queue });
    this.#running.delete(queue);
    const r = WorkerPool.#check(result);
    if (!r.state) throw new WorkerCommandError(`queue ${queue}: worker returned no state`);
    return r.state;
  }

  /** Sends a device command to the handler of every Worker; results in Worker order. */
  async deviceCommand(request: unknown): Promise<unknown[]> {
    const results = await this.#all({ type: "device", request });
    return results.map((r) => WorkerPool.#check(r).result);
  }

  /** Ends every Worker. */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.all(this.#ready);
    await Promise.all(this.#workers.map(async (w) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          log.warn("a queue worker did not exit in time");
          resolve();
        }, 2000);
      });
      await Promise.race([w.send({ type: "exit" }).then(() => {}), timeout]);
      clearTimeout(timer);
      w.worker.terminate();
      // A Worker that failed closed its wake fd already (the number may be reused since).
      if (w.lost === undefined) closeQuietly(w.wakeFd);
    }));
    this.#workers.length = 0;
  }
}
