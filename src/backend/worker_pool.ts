/**
 * The main thread's side of the queue Workers: spawns them, assigns rings to
 * them (ring i goes to Worker i mod N) and turns commands into promises.
 *
 * @module
 */

import { closeQuietly, eventfd, eventfdWrite } from "../../ffi/mod.ts";
import { log, logLevel } from "../log.ts";
import type { WorkerSetup } from "../devices/device.ts";
import type { SplitQueueState } from "../virtqueue/split_queue.ts";
import type {
  InflightMapping,
  LogMapping,
  RegionMapping,
  WorkerCommand,
  WorkerEvent,
} from "./worker_protocol.ts";

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
  #seq = 0;

  constructor(name: string, onEvent: (event: WorkerEvent) => void) {
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
      } else {
        onEvent(event);
      }
    };
    this.worker.onerror = (e) => {
      log.error(`queue worker ${name} crashed: ${e.message}`);
      e.preventDefault();
      for (const p of this.pending.values()) {
        p.resolve({ type: "done", seq: -1, error: "worker crashed" });
      }
      this.pending.clear();
    };
  }

  send(command: Command, wake = true): Promise<Extract<WorkerEvent, { type: "done" }>> {
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

/** The set of queue Workers of one device. */
export class WorkerPool {
  readonly #workers: WorkerHandle[] = [];
  /** Called when a Worker stops serving a broken ring. */
  onRingError: (queue: number, reason: string) => void = () => {};

  private constructor() {}

  /** Spawns `count` Workers for the device described by `setup`. */
  static async create(count: number, setup: WorkerSetup): Promise<WorkerPool> {
    const pool = new WorkerPool();
    for (let i = 0; i < count; i++) {
      const handle = new WorkerHandle(`q${i}`, (event) => {
        if (event.type === "ring-error") pool.onRingError(event.queue, event.reason);
      });
      pool.#workers.push(handle);
    }
    // The Worker is not blocked in epoll yet when init arrives: no wake needed.
    const results = await Promise.all(
      pool.#workers.map((w, i) =>
        w.send(
          { type: "init", name: `q${i}`, logLevel: logLevel(), setup, wakeFd: w.wakeFd },
          false,
        )
      ),
    );
    const failed = results.find((r) => r.error !== undefined);
    if (failed) {
      await pool.close();
      throw new WorkerCommandError(`queue worker failed to start: ${failed.error}`);
    }
    return pool;
  }

  /** Number of Workers. */
  get size(): number {
    return this.#workers.length;
  }

  #for(queue: number): WorkerHandle {
    return this.#workers[queue % this.#workers.length];
  }

  static #check(
    result: Extract<WorkerEvent, { type: "done" }>,
  ): Extract<WorkerEvent, { type: "done" }> {
    if (result.error !== undefined) throw new WorkerCommandError(result.error);
    return result;
  }

  /** Replaces the guest memory of every Worker; old views are dropped when this resolves. */
  async setMemory(regions: RegionMapping[]): Promise<void> {
    const results = await Promise.all(
      this.#workers.map((w) => w.send({ type: "memory", regions })),
    );
    results.forEach(WorkerPool.#check);
  }

  /** Turns dirty-page logging on (a mapped bitmap) or off (null) in every Worker. */
  async setLog(log: LogMapping | null, logFd: number): Promise<void> {
    const results = await Promise.all(
      this.#workers.map((w) => w.send({ type: "log", log, logFd })),
    );
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
    const r = await this.#for(queue).send({
      type: "start",
      queue,
      state,
      kickFd,
      callFd,
      errFd,
      inflight,
    });
    return r.error;
  }

  /** Changes the call eventfd of a running ring; the old one is unused once this resolves. */
  async setCall(queue: number, callFd: number): Promise<void> {
    WorkerPool.#check(await this.#for(queue).send({ type: "set-call", queue, callFd }));
  }

  /** Stops a running ring and returns its exact position. */
  async stopQueue(queue: number): Promise<SplitQueueState> {
    const r = WorkerPool.#check(await this.#for(queue).send({ type: "stop", queue }));
    if (!r.state) throw new WorkerCommandError(`queue ${queue}: worker returned no state`);
    return r.state;
  }

  /** Sends a device command to the handler of every Worker; results in Worker order. */
  async deviceCommand(request: unknown): Promise<unknown[]> {
    const results = await Promise.all(
      this.#workers.map((w) => w.send({ type: "device", request })),
    );
    return results.map((r) => WorkerPool.#check(r).result);
  }

  /** Ends every Worker. */
  async close(): Promise<void> {
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
      closeQuietly(w.wakeFd);
    }));
    this.#workers.length = 0;
  }
}
