/**
 * Queue Worker entry point: serves the virtqueues assigned to it.
 *
 * The Worker blocks in a synchronous epoll_wait on its rings' kick eventfds,
 * its wake eventfd (see worker_protocol.ts for the command hand-off) and the
 * host fds its device watches (an io_uring's completion eventfd, a socket).
 * Each round it pops what was kicked, lets the device handle it — at once or
 * later, through `QueueContext.complete` — then submits the device's queued
 * I/O, and signals each ring's call eventfd at most once for everything that
 * completed in the round (event idx decides) — or, for a device that asks
 * for it, as soon as a completion needs it.
 *
 * Commands run in order. One that needs a ring (or every ring) quiet — stop,
 * a new memory table, a dirty-log switch, a device command, exit — first
 * pauses it (no new chains are taken) and runs only once its in-flight count
 * reached zero, so GET_VRING_BASE answers the exact position and no memory is
 * unmapped under a request.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  closeQuietly,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  epollCreate,
  epollCtl,
  EPOLLET,
  EpollEvents,
  EPOLLIN,
  epollWait,
  eventfdRead,
  mapArrayBuffer,
  signalEventfd,
} from "../../ffi/mod.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import { guestMemoryOf } from "../memory/mapped_regions.ts";
import { DirtyLog } from "../memory/dirty_log.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import { log, setLogLevel, setLogTag } from "../log.ts";
import type { FdReadyCallback, QueueContext, QueueHandler } from "../devices/device.ts";
import { deviceModule } from "../devices/device_list.ts";
import { NO_FD, type WorkerCommand, type WorkerEvent } from "./worker_protocol.ts";
import { RingRunner } from "./ring_runner.ts";
import { InflightQueue } from "../virtqueue/inflight_region.ts";
import { queueStatsQueues, QueueStatsWriter } from "../metrics/queue_stats.ts";
import { pollWindowMs, spinnersFor, SpinSlot } from "./spin_budget.ts";

/** epoll data value of the wake eventfd; ring kicks use their queue index. */
const WAKE_TOKEN = 0xffff_ffff;
/** epoll data of a watched host fd is this plus the fd. */
const HOST_FD_TOKEN = 0x1_0000;
/** epoll_wait timeout while some ring has no kick fd and must be polled. */
const POLL_INTERVAL_MS = 1;

/**
 * How long (ms) a ring may keep the Worker per visit, when the Worker
 * serves other rings too, before it turns to them: a driver that refills a
 * ring as fast as it is served (one reply, one new request) cannot hold the
 * Worker there while its other rings wait. A time, not a count of chains:
 * requests the device defers cost microseconds and should go to the engine
 * in one batch; a READDIRPLUS of 64 KiB costs a third of a millisecond.
 * Measured on fs READDIRPLUS over four queues, 32 in flight: p99 270 ms
 * unbounded (some queues waited out most of a 250 ms benchmark turn), 45 ms
 * with turns (virtiofsd on one queue: 45 ms), and 5 % more entries/s.
 */
const RING_TURN_MS = 1;
/** First busy-poll window once waits come out short. */
const POLL_START_MS = 0.004;

interface ActiveRing {
  runner: RingRunner;
  /** A driver waits on this ring's replies (`QueueHandler.driverWaits`): worth spinning for. */
  waitedOn: boolean;
  kickFd: number;
  callFd: number;
  errFd: number;
}

interface Timer {
  due: number;
  onFire: () => void;
}

interface Watch {
  events: number;
  onReady: FdReadyCallback;
  ready: (() => boolean) | undefined;
}

const inbox: WorkerCommand[] = [];
let inboxWaiter: (() => void) | undefined;

self.onmessage = (e: MessageEvent<WorkerCommand>) => {
  inbox.push(e.data);
  inboxWaiter?.();
};

async function nextCommand(): Promise<WorkerCommand> {
  while (inbox.length === 0) {
    await new Promise<void>((resolve) => inboxWaiter = resolve);
    inboxWaiter = undefined;
  }
  return inbox.shift()!;
}

function post(event: WorkerEvent): void {
  self.postMessage(event);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The Worker's state and main loop. */
class QueueWorker implements QueueContext {
  readonly #epfd = epollCreate();
  readonly #events = new EpollEvents(64);
  readonly #rings = new Map<number, ActiveRing>();
  readonly #watches = new Map<number, Watch>();
  readonly #wakeFd: number;
  readonly #handler: QueueHandler;
  /** Commands received and not run yet, oldest first. */
  readonly #commands: WorkerCommand[] = [];
  #memory = new GuestMemory([]);
  /** Dirty-page log while VHOST_F_LOG_ALL is on, and the eventfd to signal after logging. */
  #log: DirtyLog | undefined;
  #logFd = NO_FD;
  #running = true;
  /** Current busy-poll window in ms (0: sleep at once). */
  #pollMs = 0;
  /** A ring stopped at the end of its turn with chains left this round. */
  #backlog = false;
  /** The device's timers by id (`setTimer`). */
  readonly #timers = new Map<number, Timer>();
  #nextTimerId = 1;
  /** Per-queue request statistics (`--metrics`), shared with the main thread. */
  readonly #stats: SharedArrayBuffer | undefined;
  /** This Worker's place among the process's busy-polling Workers. */
  readonly #spinSlot: SpinSlot | undefined;
  /** `--poll-max-us`: the longest busy-poll window; absent: pollWindowMs's defaults. */
  readonly #pollMaxUs: number | undefined;

  constructor(init: Extract<WorkerCommand, { type: "init" }>) {
    this.#wakeFd = init.wakeFd;
    this.#stats = init.stats;
    this.#pollMaxUs = init.pollMaxUs;
    this.#spinSlot = init.spinBudget
      ? new SpinSlot(init.spinBudget, spinnersFor(navigator.hardwareConcurrency))
      : undefined;
    const factory = deviceModule(init.setup.kind)?.createQueueHandler;
    if (!factory) throw new Error(`no queue handler for device kind "${init.setup.kind}"`);
    this.#handler = factory(init.setup);
    epollCtl(this.#epfd, EPOLL_CTL_ADD, this.#wakeFd, EPOLLIN, WAKE_TOKEN);
    this.#handler.attach?.(this);
  }

  // ---- QueueContext ---------------------------------------------------

  complete(queueIndex: number, chain: DescriptorChain, written: number): void {
    const ring = this.#rings.get(queueIndex);
    if (!ring) {
      log.error(`completion for queue ${queueIndex}, which is not running here`);
      return;
    }
    ring.runner.complete(chain, written);
  }

  watchFd(fd: number, events: number, onReady: FdReadyCallback, ready?: () => boolean): void {
    const op = this.#watches.has(fd) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    epollCtl(this.#epfd, op, fd, events, HOST_FD_TOKEN + fd);
    this.#watches.set(fd, { events, onReady, ready });
  }

  unwatchFd(fd: number): void {
    if (!this.#watches.delete(fd)) return;
    epollCtl(this.#epfd, EPOLL_CTL_DEL, fd, 0, 0);
  }

  inflightCount(queueIndex: number): number {
    return this.#rings.get(queueIndex)?.runner.inflightCount ?? 0;
  }

  pop(queueIndex: number): DescriptorChain | undefined {
    return this.#rings.get(queueIndex)?.runner.pop();
  }

  get memory(): GuestMemory {
    return this.#memory;
  }

  setTimer(delayMs: number, onFire: () => void): number {
    const id = this.#nextTimerId++;
    const delay = Number.isFinite(delayMs) && delayMs > 0 ? delayMs : 0;
    this.#timers.set(id, { due: performance.now() + delay, onFire });
    return id;
  }

  clearTimer(id: number): void {
    this.#timers.delete(id);
  }

  /** Milliseconds until the nearest timer (0 when one is due), -1 without timers. */
  #timerTimeout(): number {
    let nearest = Infinity;
    for (const timer of this.#timers.values()) nearest = Math.min(nearest, timer.due);
    if (nearest === Infinity) return -1;
    return Math.max(0, Math.ceil(nearest - performance.now()));
  }

  /** Runs the timers that are due, each once. */
  #fireTimers(): void {
    if (this.#timers.size === 0) return;
    const now = performance.now();
    for (const [id, timer] of this.#timers) {
      if (timer.due > now) continue;
      this.#timers.delete(id);
      try {
        timer.onFire();
      } catch (e) {
        log.error(`device timer failed: ${message(e)}`);
      }
    }
  }

  // ---- event loop -------------------------------------------------------

  /** Serves until "exit"; a failure of the loop itself is reported as fatal, never thrown. */
  async run(): Promise<void> {
    try {
      await this.#loop();
    } catch (e) {
      log.error(`queue worker failed: ${message(e)}`);
      post({ type: "fatal", reason: message(e) });
    }
    try {
      this.#handler.close?.();
    } catch (e) {
      log.error(`device cleanup failed: ${message(e)}`);
    }
    closeQuietly(this.#epfd);
  }

  async #loop(): Promise<void> {
    while (this.#running) {
      let timeout = this.#hasPolledRing() ? POLL_INTERVAL_MS : -1;
      // A ring left with chains at the end of its turn gets no kick: look again at once.
      if (this.#backlog) timeout = 0;
      this.#backlog = false;
      // Only a Worker about to sleep asks what it waits for (a look at every ring).
      const pollMax = timeout !== -1 ? 0 : pollWindowMs(this.#inflight() > 0, this.#pollMaxUs);
      // Work a watched fd's `ready` already sees (an I/O engine's SQEs the kernel refused for
      // now) must not wait for an event that may never come.
      if (
        timeout === -1 &&
        (this.#pollMs > 0 && pollMax > 0
          ? this.#busyPoll(Math.min(this.#pollMs, pollMax))
          : this.#anyReady())
      ) {
        timeout = 0;
      }
      const sleptFrom = timeout === -1 ? performance.now() : 0;
      const timerTimeout = this.#timerTimeout();
      const n = epollWait(
        this.#epfd,
        this.#events,
        timerTimeout === -1
          ? timeout
          : timeout === -1
          ? timerTimeout
          : Math.min(timeout, timerTimeout),
      );
      if (timeout === -1) this.#adaptPolling(performance.now() - sleptFrom, pollMax);
      this.#fireTimers();
      let wake = false;
      for (let i = 0; i < n; i++) {
        const token = this.#events.data(i);
        if (token === WAKE_TOKEN) {
          wake = true;
        } else if (token >= HOST_FD_TOKEN) {
          this.#hostFdReady(token - HOST_FD_TOKEN, this.#events.events(i));
        } else {
          const ring = this.#rings.get(token);
          if (ring && ring.kickFd !== NO_FD) this.#kicked(ring);
        }
      }
      // A wait that ended with no event was interrupted: io_uring completes an operation
      // by queueing task work, which ends the sleep like a signal (EINTR) and, on the way
      // back, posts the CQE. Look at what polling sees now instead of asking epoll again
      // (a system call per request at queue depth 1).
      if (timeout !== -1 || n === 0) {
        // Polled rings (no kick fd), and whatever the busy poll found without a kick.
        for (const ring of this.#rings.values()) {
          if (ring.kickFd === NO_FD || ring.runner.hasWork()) this.#serve(ring);
        }
        for (const [fd, watch] of this.#watches) {
          if (watch.ready?.()) this.#hostFdReady(fd, EPOLLIN);
        }
      }
      this.#endOfRound();
      if (wake) {
        const count = eventfdRead(this.#wakeFd);
        for (let i = 0; i < count; i++) this.#commands.push(await nextCommand());
      }
      if (this.#commands.length > 0) {
        this.#runCommands();
        this.#endOfRound();
      }
    }
  }

  /**
   * Spins for up to the current poll window until a ring has chains or a
   * watched fd's `ready` says it has work; true when something turned up.
   */
  #busyPoll(windowMs: number): boolean {
    // Nothing a driver waits on, or others spin on every CPU but one already: look once, sleep.
    if (!this.#worthSpinning()) return this.#anyWork();
    const slot = this.#spinSlot;
    if (slot !== undefined && !slot.take()) return this.#anyWork();
    try {
      const until = performance.now() + windowMs;
      do {
        if (this.#anyWork()) return true;
      } while (performance.now() < until);
      return false;
    } finally {
      slot?.give();
    }
  }

  /** True when a driver waits on one of the rings, or the device watches a host fd. */
  #worthSpinning(): boolean {
    if (this.#watches.size > 0) return true;
    for (const ring of this.#rings.values()) if (ring.waitedOn) return true;
    return false;
  }

  /** One look at whether a ring has chains or a watched fd's `ready` says it has work. */
  #anyWork(): boolean {
    for (const ring of this.#rings.values()) if (ring.runner.hasWork()) return true;
    for (const watch of this.#watches.values()) if (watch.ready?.()) return true;
    return false;
  }

  /** One look, without spinning, at what busy polling watches. */
  #anyReady(): boolean {
    for (const watch of this.#watches.values()) if (watch.ready?.()) return true;
    return false;
  }

  /** Grows the poll window (up to `maxMs`) after a short sleep, shrinks it after a long one. */
  #adaptPolling(sleptMs: number, maxMs: number): void {
    if (sleptMs > maxMs) {
      this.#pollMs = this.#pollMs / 2 < POLL_START_MS ? 0 : this.#pollMs / 2;
    } else if (this.#pollMs < maxMs) {
      this.#pollMs = this.#pollMs === 0 ? POLL_START_MS : Math.min(maxMs, this.#pollMs * 2);
    }
  }

  /** Requests popped and not completed, on every ring of this Worker. */
  #inflight(): number {
    let count = 0;
    for (const ring of this.#rings.values()) count += ring.runner.inflightCount;
    return count;
  }

  /**
   * A ring was kicked: serve it. Kick eventfds are watched edge-triggered
   * (every write is a new edge), so the counter is never read back: one
   * system call less per kick. The main thread admits only eventfds.
   */
  #kicked(ring: ActiveRing): void {
    this.#serve(ring);
  }

  /**
   * Serves a ring (for up to RING_TURN_MS when the Worker has other rings
   * to be fair to); a failure here ends that ring only.
   */
  #serve(ring: ActiveRing): void {
    try {
      const deadline = this.#rings.size > 1 ? performance.now() + RING_TURN_MS : Infinity;
      if (ring.runner.process(deadline)) {
        this.#backlog = true;
      }
    } catch (e) {
      ring.runner.breakRing(`serving the ring failed: ${message(e)}`);
    }
  }

  /**
   * Signals a ring's call (or err) eventfd. A failure (the fd is not a
   * writable eventfd) breaks the ring instead of the Worker; a full counter
   * means the driver has an interrupt pending already.
   */
  #signal(ring: ActiveRing, fd: number, what: string): void {
    if (signalEventfd(fd)) return;
    const reason = `${what} fd ${fd} cannot be signalled`;
    if (what === "err") log.warn(`queue ${ring.runner.index}: ${reason}`);
    else ring.runner.breakRing(reason);
  }

  #hostFdReady(fd: number, events: number): void {
    const watch = this.#watches.get(fd);
    if (!watch) return;
    try {
      watch.onReady(events);
    } catch (e) {
      log.error(`device event handler for fd ${fd} failed: ${message(e)}`);
    }
  }

  /** Submits the device's queued I/O, then notifies each ring that completed something. */
  #endOfRound(): void {
    try {
      this.#handler.submitQueued?.();
    } catch (e) {
      log.error(`device submission failed: ${message(e)}`);
    }
    for (const ring of this.#rings.values()) this.#notify(ring);
    if (this.#log && this.#log.takeMarked() > 0 && this.#logFd !== NO_FD) {
      if (!signalEventfd(this.#logFd)) {
        log.warn(`the dirty-log fd ${this.#logFd} cannot be signalled; not signalling it again`);
        this.#logFd = NO_FD;
      }
    }
  }

  /** Interrupts the driver for what completed on `ring` since the last time, if it asked. */
  #notify(ring: ActiveRing): void {
    if (ring.runner.takeNotification() && ring.callFd !== NO_FD) {
      this.#signal(ring, ring.callFd, "call");
    }
  }

  #hasPolledRing(): boolean {
    for (const ring of this.#rings.values()) {
      if (ring.kickFd === NO_FD && ring.runner.broken === undefined) return true;
    }
    return false;
  }

  #ringBroken(ring: ActiveRing, reason: string): void {
    log.error(`queue ${ring.runner.index}: ring is broken, stopped serving it: ${reason}`);
    // A broken ring's kick fd must not keep waking the loop (epoll is level-triggered).
    if (ring.kickFd !== NO_FD) {
      try {
        epollCtl(this.#epfd, EPOLL_CTL_DEL, ring.kickFd, 0, 0);
      } catch {
        // Not registered (its registration is what failed).
      }
    }
    if (ring.errFd !== NO_FD) this.#signal(ring, ring.errFd, "err");
    post({ type: "ring-error", queue: ring.runner.index, reason });
  }

  // ---- commands ---------------------------------------------------------

  /** The rings a command needs quiet before it runs. */
  #quietScope(cmd: WorkerCommand): ActiveRing[] {
    switch (cmd.type) {
      case "stop": {
        const ring = this.#rings.get(cmd.queue);
        return ring ? [ring] : [];
      }
      case "memory":
      case "log":
      case "device":
      case "exit":
        return [...this.#rings.values()];
      default:
        return [];
    }
  }

  /** Runs queued commands in order; stops at one whose rings still have requests in flight. */
  #runCommands(): void {
    while (this.#commands.length > 0) {
      const cmd = this.#commands[0];
      const scope = this.#quietScope(cmd);
      let busy = false;
      for (const ring of scope) {
        ring.runner.pause();
        if (ring.runner.inflightCount > 0) busy = true;
      }
      if (busy) return;
      this.#commands.shift();
      this.#execute(cmd);
      for (const ring of this.#rings.values()) {
        if (ring.runner.paused) ring.runner.resume(this.#memory);
      }
    }
  }

  #execute(cmd: WorkerCommand): void {
    try {
      switch (cmd.type) {
        case "memory": {
          for (const ring of this.#rings.values()) ring.runner.queue.detach();
          this.#memory = guestMemoryOf(cmd.regions);
          this.#memory.writeObserver = this.#log;
          for (const ring of this.#rings.values()) this.#attach(ring);
          post({ type: "done", seq: cmd.seq });
          return;
        }
        case "start":
          this.#start(cmd);
          return;
        case "log": {
          this.#log = cmd.log
            ? new DirtyLog(new Uint8Array(mapArrayBuffer(cmd.log.hostAddr, cmd.log.size)))
            : undefined;
          this.#logFd = cmd.logFd;
          this.#memory.writeObserver = this.#log;
          post({ type: "done", seq: cmd.seq });
          return;
        }
        case "set-call": {
          const ring = this.#rings.get(cmd.queue);
          if (ring) {
            // What completed under the old call fd is signalled there first.
            this.#notify(ring);
            ring.callFd = cmd.callFd;
          }
          post({ type: "done", seq: cmd.seq });
          return;
        }
        case "stop": {
          const ring = this.#rings.get(cmd.queue);
          if (!ring) {
            post({ type: "done", seq: cmd.seq, error: `queue ${cmd.queue} is not running here` });
            return;
          }
          if (ring.kickFd !== NO_FD && ring.runner.broken === undefined) {
            epollCtl(this.#epfd, EPOLL_CTL_DEL, ring.kickFd, 0, 0);
          }
          // The last completions are signalled before the ring is handed back.
          this.#notify(ring);
          const state = ring.runner.queue.state();
          ring.runner.queue.detach();
          this.#rings.delete(cmd.queue);
          post({ type: "done", seq: cmd.seq, state });
          return;
        }
        case "device": {
          if (!this.#handler.command) {
            post({ type: "done", seq: cmd.seq, error: "the device takes no commands" });
            return;
          }
          post({ type: "done", seq: cmd.seq, result: this.#handler.command(cmd.request) });
          return;
        }
        case "exit":
          for (const ring of this.#rings.values()) ring.runner.queue.detach();
          this.#rings.clear();
          this.#running = false;
          post({ type: "done", seq: cmd.seq });
          return;
        case "init":
          post({ type: "done", seq: cmd.seq, error: "already initialised" });
          return;
      }
    } catch (e) {
      post({ type: "done", seq: cmd.seq, error: message(e) });
    }
  }

  /** Starts serving a ring; with an inflight region, first resubmits what a previous back-end left. */
  #start(cmd: Extract<WorkerCommand, { type: "start" }>): void {
    const queue = new SplitQueue(cmd.state);
    const attachError = queue.attach(this.#memory);
    const inflight = attachError === undefined && cmd.inflight
      ? this.#recoverInflight(cmd, queue)
      : {};
    const runner = new RingRunner(
      cmd.queue,
      queue,
      this.#handler,
      this.#memory,
      inflight.tracker,
      this.#stats && cmd.queue < queueStatsQueues(this.#stats)
        ? new QueueStatsWriter(this.#stats, cmd.queue, cmd.state.size)
        : undefined,
    );
    const ring: ActiveRing = {
      runner,
      waitedOn: this.#handler.driverWaits?.(cmd.queue) ?? true,
      kickFd: cmd.kickFd,
      callFd: cmd.callFd,
      errFd: cmd.errFd,
    };
    runner.onBroken = (reason) => this.#ringBroken(ring, reason);
    if (this.#handler.notifiesEachCompletion?.()) {
      runner.onNotify = () => {
        if (ring.callFd !== NO_FD) this.#signal(ring, ring.callFd, "call");
      };
    }
    this.#rings.set(cmd.queue, ring);
    let error = attachError;
    if (error === undefined && ring.kickFd !== NO_FD) {
      try {
        epollCtl(this.#epfd, EPOLL_CTL_ADD, ring.kickFd, EPOLLIN | EPOLLET, cmd.queue);
      } catch (e) {
        error = `kick fd ${ring.kickFd} cannot be watched: ${message(e)}`;
        ring.kickFd = NO_FD;
      }
    }
    if (error !== undefined) runner.breakRing(error);
    post({ type: "done", seq: cmd.seq, error });
    if (error !== undefined) return;
    try {
      for (const head of inflight.resubmit ?? []) runner.resubmit(head);
    } catch (e) {
      runner.breakRing(`resubmitting the requests left in flight failed: ${message(e)}`);
    }
    // Requests may have been queued before the ring started (kicks are lost while disconnected).
    this.#serve(ring);
    // A completion published just before a previous back-end died may never have been signalled.
    if (cmd.inflight && ring.callFd !== NO_FD) this.#signal(ring, ring.callFd, "call");
  }

  /** Opens a ring's inflight region and finds what to resubmit; untracked (with a warning) when unusable. */
  #recoverInflight(
    cmd: Extract<WorkerCommand, { type: "start" }>,
    queue: SplitQueue,
  ): { tracker?: InflightQueue; resubmit?: number[] } {
    const mapping = cmd.inflight!;
    const tracker = InflightQueue.open(
      new Uint8Array(mapArrayBuffer(mapping.hostAddr, mapping.size)),
      cmd.state.size,
    );
    const recovery = typeof tracker === "string" ? tracker : tracker.recover(queue.nextUsed);
    if (typeof recovery === "string" || typeof tracker === "string") {
      log.warn(
        `queue ${cmd.queue}: inflight region unusable, requests are not tracked: ${recovery}`,
      );
      return {};
    }
    if (recovery.nextAvail !== queue.state().nextAvail) queue.setNextAvail(recovery.nextAvail);
    if (recovery.count > 0) {
      log.info(`queue ${cmd.queue}: resubmitting ${recovery.count} request(s) left in flight`);
    }
    return { tracker, resubmit: recovery.resubmit };
  }

  #attach(ring: ActiveRing): string | undefined {
    const error = ring.runner.queue.attach(this.#memory);
    if (error !== undefined) ring.runner.breakRing(error);
    else ring.runner.resume(this.#memory);
    return error;
  }
}

async function main(): Promise<void> {
  const init = await nextCommand();
  if (init.type !== "init") {
    post({ type: "done", seq: init.seq, error: "first command must be init" });
    return;
  }
  setLogLevel(init.logLevel);
  setLogTag(`vhostd[${Deno.pid}/${init.name}]`);
  let worker: QueueWorker;
  try {
    worker = new QueueWorker(init);
  } catch (e) {
    post({ type: "done", seq: init.seq, error: message(e) });
    return;
  }
  post({ type: "done", seq: init.seq });
  await worker.run();
  self.close();
}

main();
