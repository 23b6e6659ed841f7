/**
 * One running ring inside a queue Worker: pops chains, hands them to the
 * device's data half, keeps the ones it deferred in flight, and returns them
 * to the driver in whatever order they complete.
 *
 * No I/O here (no eventfds, no epoll): the Worker's event loop calls
 * `process()` when the ring is kicked, routes completions to `complete()`,
 * and after each batch asks `takeNotification()` whether to signal the call
 * eventfd (or, with `onNotify` set, asks after each completion, or each
 * COMPLETIONS_PER_NOTIFY_CHECK while more chains wait). That keeps
 * the in-flight accounting testable against a mock driver queue.
 *
 * In-flight accounting: `#inflight[head]` holds the chain popped at that
 * head until it completes. A completion is accepted only for exactly that
 * chain object, so a request is never completed twice, and a driver that
 * makes a head available again while it is still in flight breaks the ring
 * (it would otherwise get two used elements for one head).
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import type { SplitQueue } from "../virtqueue/split_queue.ts";
import { DEFERRED, type QueueHandler } from "../devices/device.ts";
import { log } from "../log.ts";
import type { QueueStatsWriter } from "../metrics/queue_stats.ts";

/**
 * Chains served between two looks at the clock against a turn's deadline:
 * a look (about 0.12 µs here) is not free beside a GETATTR (about 1.5 µs).
 */
export const CHAINS_PER_CLOCK_LOOK = 8;

/**
 * With `onNotify`, completions published while more of the driver's chains
 * wait in the ring being served before the driver's interrupt request is
 * looked at again; the round's last completion is always looked at. A driver
 * that went to sleep then wakes to a batch of replies instead of to each one
 * (each wake-up costs it and this Worker a system call and a cross-CPU
 * wake-up). Measured on the host-driven create+unlink row, 32 in flight on
 * one queue, against the rule before (looking at every completion): 4 gave
 * 1.06×, 8 1.17×, 16 1.20× [1.14 1.20 1.29] with the front-end sleeping half
 * as often per reply; 32 (in effect once per round) lost the overlap on 4 KiB
 * writes again (0.96× virtiofsd where 16 gave 1.30×).
 */
export const COMPLETIONS_PER_NOTIFY_CHECK = 16;

/**
 * Inflight tracking in shared memory (INFLIGHT_SHMFD): told about every pop
 * and completion so that a restarted back-end can resubmit what was lost.
 */
export interface InflightRecorder {
  /** A chain was popped at `head`. */
  begin(head: number): void;
  /** The used element for `head` is about to be published. */
  completing(head: number): void;
  /** The used element for `head` was published; `usedIdx` is the ring's new used index. */
  completed(head: number, usedIdx: number): void;
}

/** A ring being served, with its requests in flight. */
export class RingRunner {
  /** Ring index. */
  readonly index: number;
  /** The device side of the split ring. */
  readonly queue: SplitQueue;
  readonly #handler: QueueHandler;
  readonly #inflight: (DescriptorChain | undefined)[];
  readonly #recorder: InflightRecorder | undefined;
  #inflightCount = 0;
  #memory: GuestMemory;
  /**
   * Used elements published since the last `takeNotification()` (with
   * `onNotify`: since the driver's interrupt request was last looked at).
   */
  #completedSinceNotify = 0;
  /** True inside `process()`: a completion may leave its notification to the round. */
  #serving = false;
  /** Why the ring is no longer served, once it broke. */
  #broken: string | undefined;
  /** While paused no new chain is popped (a stop or a memory change waits for in-flight I/O). */
  #paused = false;
  /** Set when chains may be waiting while the ring was paused. */
  #missedKick = false;
  /** Called once when the ring breaks. */
  onBroken: (reason: string) => void = () => {};
  /**
   * Signals the driver; when set, a completion asks at once whether the
   * driver wants an interrupt (`QueueHandler.notifiesEachCompletion`) rather
   * than `takeNotification()` asking once per round, or, while more chains
   * wait, after at most COMPLETIONS_PER_NOTIFY_CHECK of them.
   */
  onNotify: (() => void) | undefined;
  /** The device takes this ring's chains itself (`QueueHandler.pullsQueue`). */
  readonly #pulled: boolean;
  /** Request statistics for `--metrics` (absent: metrics off, nothing is counted). */
  readonly #stats: QueueStatsWriter | undefined;

  /** A runner for `queue`, already attached to `memory`. */
  constructor(
    index: number,
    queue: SplitQueue,
    handler: QueueHandler,
    memory: GuestMemory,
    recorder?: InflightRecorder,
    stats?: QueueStatsWriter,
  ) {
    this.index = index;
    this.queue = queue;
    this.#handler = handler;
    this.#memory = memory;
    this.#recorder = recorder;
    this.#stats = stats;
    this.#inflight = new Array(queue.size).fill(undefined);
    this.#pulled = handler.pullsQueue?.(index) ?? false;
  }

  /** Requests popped and not completed. */
  get inflightCount(): number {
    return this.#inflightCount;
  }

  /** Why the ring broke, or undefined while it is served. */
  get broken(): string | undefined {
    return this.#broken;
  }

  /** True while no new chain is taken. */
  get paused(): boolean {
    return this.#paused;
  }

  /** True when `process()` would find chains to take (polling instead of waiting for a kick). */
  hasWork(): boolean {
    // A pulled ring's chains wait until the device wants them: they are no work to poll for.
    return this.#broken === undefined && !this.#paused && !this.#pulled &&
      this.queue.hasAvailable();
  }

  /** Stops taking new chains; requests in flight still complete. */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#handler.quiesce?.(this.index);
  }

  /** Takes chains again (after the memory it reads was replaced, for example). */
  resume(memory: GuestMemory): void {
    this.#memory = memory;
    this.#paused = false;
    if (this.#missedKick) {
      this.#missedKick = false;
      this.process();
    }
  }

  /** Marks the ring broken: no chain is taken any more. */
  breakRing(reason: string): void {
    if (this.#broken !== undefined) return;
    this.#broken = reason;
    this.#stats?.ringBroken();
    this.onBroken(reason);
  }

  /**
   * Serves the available chains: pops, hands each to the device, completes
   * it at once when the device did, and leaves notification suppression on
   * while it works (one kick for a burst). Takes no new chain once
   * `performance.now()` reached `deadline` (ms; looked at every
   * CHAINS_PER_CLOCK_LOOK chains): true when it stopped there
   * with chains left, notifications still off (no kick will come for them,
   * so the caller must come back). A driver that refills the ring as fast as
   * it is served would otherwise keep a Worker on this ring while its other
   * rings wait.
   */
  process(deadline = Infinity): boolean {
    if (this.#broken !== undefined) return false;
    if (this.#paused) {
      this.#missedKick = true;
      return false;
    }
    if (this.#pulled) {
      this.#handler.queueReady?.(this.index);
      return false;
    }
    this.#stats?.beginBurst();
    this.#serving = true;
    try {
      return this.#takeChains(deadline);
    } finally {
      this.#serving = false;
    }
  }

  /** `process()`'s loop: pops and starts chains until none is left or `deadline` passed. */
  #takeChains(deadline: number): boolean {
    const queue = this.queue;
    let taken = 0;
    for (;;) {
      queue.disableNotifications();
      for (;;) {
        // Out of time: come back for what is there; with nothing there, wait for a kick.
        if (
          deadline !== Infinity && taken % CHAINS_PER_CLOCK_LOOK === 0 && taken > 0 &&
          performance.now() >= deadline
        ) {
          if (queue.hasAvailable()) return true;
          break;
        }
        const chain = queue.popAvail();
        if (chain === undefined) break;
        if ("ringError" in chain) {
          this.breakRing(chain.ringError);
          return false;
        }
        taken++;
        this.#start(chain);
        if (this.#broken !== undefined) return false;
        // A device may pause the ring from inside handle (a quiesce request).
        if (this.#paused) {
          this.#missedKick = true;
          return false;
        }
      }
      if (!queue.enableNotifications()) break;
    }
    return false;
  }

  /**
   * Takes the next available chain for a device that pulls its chains
   * (`QueueContext.pop`); it stays in flight until completed. Undefined when
   * none is available (notifications are then on, so the driver kicks when
   * it adds one), or while the ring is paused or broken (the device is told
   * through `queueReady` when it may pop again).
   */
  pop(): DescriptorChain | undefined {
    if (this.#broken !== undefined) return undefined;
    if (this.#paused) {
      this.#missedKick = true;
      return undefined;
    }
    this.#stats?.beginBurst();
    const queue = this.queue;
    for (;;) {
      queue.disableNotifications();
      const chain = queue.popAvail();
      if (chain !== undefined) {
        if ("ringError" in chain) {
          this.breakRing(chain.ringError);
          return undefined;
        }
        return this.#track(chain, true) ? chain : undefined;
      }
      if (!queue.enableNotifications()) return undefined;
    }
  }

  /**
   * Hands a chain that was in flight under a previous back-end to the device
   * again (inflight recovery); the available ring is not read.
   */
  resubmit(head: number): void {
    // The inflight region already records this head: it is not begun again.
    this.#stats?.beginBurst();
    this.#start(this.queue.chainAt(head), false);
  }

  /** Puts `chain` in flight; false (the ring broke) when its head already is. */
  #track(chain: DescriptorChain, record: boolean): boolean {
    const head = chain.head;
    if (head >= 0 && head < this.#inflight.length) {
      if (this.#inflight[head] !== undefined) {
        this.breakRing(`descriptor ${head} was made available again while still in flight`);
        return false;
      }
      this.#inflight[head] = chain;
      this.#inflightCount++;
      if (record) this.#recorder?.begin(head);
      this.#stats?.started(head, true);
    } else {
      // A head outside the table is a malformed chain; the device fails it at once.
      this.#inflightCount++;
      this.#stats?.started(head, false);
    }
    return true;
  }

  #start(chain: DescriptorChain, record = true): void {
    if (!this.#track(chain, record)) return;
    const head = chain.head;
    let result: number | typeof DEFERRED;
    try {
      result = this.#handler.handle(chain, this.#memory, this.index);
    } catch (e) {
      // The data half must not throw; if it does, fail this request alone.
      log.error(
        `queue ${this.index}: request ${head} failed in the device: ${
          e instanceof Error ? e.message : e
        }`,
      );
      result = 0;
      this.#stats?.deviceException();
    }
    if (result !== DEFERRED && (this.#inflight[head] === chain || !this.#isTracked(head))) {
      this.complete(chain, result);
    }
  }

  #isTracked(head: number): boolean {
    return head >= 0 && head < this.#inflight.length;
  }

  /**
   * Returns `chain` to the driver with `written` bytes. False (and a log
   * line) when the chain is not in flight on this ring.
   */
  complete(chain: DescriptorChain, written: number): boolean {
    const head = chain.head;
    const tracked = this.#isTracked(head);
    if (tracked) {
      if (this.#inflight[head] !== chain) {
        log.error(`queue ${this.index}: completion for request ${head}, which is not in flight`);
        this.#stats?.strayCompletion();
        return false;
      }
      this.#inflight[head] = undefined;
    }
    this.#inflightCount--;
    if (!this.queue.attached) {
      this.#stats?.dropped();
      return true;
    }
    const len = Number.isInteger(written) && written >= 0 ? Math.min(written, 0xffff_ffff) : 0;
    this.#stats?.completed(head, tracked, len);
    const notify = this.onNotify;
    // Signalled one by one, a reply is timed before it is published: a driver
    // that sees it (woken or polling) then also sees its latency counted.
    if (notify !== undefined) this.#stats?.endRound();
    this.#recorder?.completing(head);
    this.queue.pushUsed(head, len);
    this.#recorder?.completed(head, this.queue.nextUsed);
    if (notify === undefined || this.#leavesNotificationToRound()) {
      this.#completedSinceNotify++;
    } else if (this.queue.needsNotification()) {
      // The element is published: a driver woken now finds it.
      notify();
    }
    return true;
  }

  /**
   * With `onNotify`: true when the driver's interrupt request is looked at
   * later in this round (more chains wait and fewer than
   * COMPLETIONS_PER_NOTIFY_CHECK completions went unlooked-at), false when
   * it must be looked at now. `needsNotification()` covers every element
   * pushed since it last ran, so the later look misses none.
   */
  #leavesNotificationToRound(): boolean {
    if (
      this.#serving && this.#completedSinceNotify + 1 < COMPLETIONS_PER_NOTIFY_CHECK &&
      this.queue.hasAvailable()
    ) {
      return true;
    }
    this.#completedSinceNotify = 0;
    return false;
  }

  /**
   * Whether the driver must be interrupted for what completed since the
   * previous call (event idx decides); false when nothing completed.
   */
  takeNotification(): boolean {
    this.#stats?.endRound();
    if (this.#completedSinceNotify === 0 || !this.queue.attached) return false;
    this.#completedSinceNotify = 0;
    return this.queue.needsNotification();
  }
}
