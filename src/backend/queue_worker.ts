/**
 * Queue Worker entry point: processes the virtqueues assigned to it.
 *
 * The Worker blocks in a synchronous epoll_wait on its rings' kick eventfds
 * and its wake eventfd (see worker_protocol.ts for the command hand-off).
 * Requests are handled synchronously, one chain at a time, so a ring has no
 * request in flight whenever the Worker looks at its inbox: stopping a ring
 * is immediate and its position is exact.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  closeQuietly,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  epollCreate,
  epollCtl,
  EpollEvents,
  EPOLLIN,
  epollWait,
  eventfdRead,
  eventfdWrite,
  mapArrayBuffer,
} from "../../ffi/mod.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import { guestMemoryOf } from "../memory/mapped_regions.ts";
import { DirtyLog } from "../memory/dirty_log.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import { log, setLogLevel, setLogTag } from "../log.ts";
import type { QueueHandler } from "../devices/device.ts";
import { queueHandlerFactory } from "../devices/worker_registry.ts";
import { NO_FD, type WorkerCommand, type WorkerEvent } from "./worker_protocol.ts";

/** epoll data value of the wake eventfd; ring kicks use their queue index. */
const WAKE_TOKEN = 0xffff_ffff;
/** epoll_wait timeout while some ring has no kick fd and must be polled. */
const POLL_INTERVAL_MS = 1;

interface ActiveRing {
  index: number;
  queue: SplitQueue;
  kickFd: number;
  callFd: number;
  errFd: number;
  broken: boolean;
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

/** The Worker's state and main loop. */
class QueueWorker {
  readonly #epfd = epollCreate();
  readonly #events = new EpollEvents(64);
  readonly #rings = new Map<number, ActiveRing>();
  readonly #wakeFd: number;
  readonly #handler: QueueHandler;
  #memory = new GuestMemory([]);
  /** Dirty-page log while VHOST_F_LOG_ALL is on, and the eventfd to signal after logging. */
  #log: DirtyLog | undefined;
  #logFd = NO_FD;
  #running = true;

  constructor(init: Extract<WorkerCommand, { type: "init" }>) {
    this.#wakeFd = init.wakeFd;
    const factory = queueHandlerFactory(init.setup.kind);
    if (!factory) throw new Error(`no queue handler for device kind "${init.setup.kind}"`);
    this.#handler = factory(init.setup);
    epollCtl(this.#epfd, EPOLL_CTL_ADD, this.#wakeFd, EPOLLIN, WAKE_TOKEN);
  }

  async run(): Promise<void> {
    while (this.#running) {
      const polled = this.#hasPolledRing();
      const n = epollWait(this.#epfd, this.#events, polled ? POLL_INTERVAL_MS : -1);
      let wake = false;
      for (let i = 0; i < n; i++) {
        const token = this.#events.data(i);
        if (token === WAKE_TOKEN) {
          wake = true;
          continue;
        }
        const ring = this.#rings.get(token);
        if (ring && ring.kickFd !== NO_FD) {
          eventfdRead(ring.kickFd);
          this.#process(ring);
        }
      }
      if (polled) {
        for (const ring of this.#rings.values()) if (ring.kickFd === NO_FD) this.#process(ring);
      }
      if (wake) {
        const count = eventfdRead(this.#wakeFd);
        for (let i = 0; i < count; i++) this.#execute(await nextCommand());
      }
    }
    closeQuietly(this.#epfd);
  }

  #hasPolledRing(): boolean {
    for (const ring of this.#rings.values()) if (ring.kickFd === NO_FD && !ring.broken) return true;
    return false;
  }

  /** Serves every available request of a ring, then notifies the driver once if it asked. */
  #process(ring: ActiveRing): void {
    if (ring.broken) return;
    const queue = ring.queue;
    let served = 0;
    for (;;) {
      queue.disableNotifications();
      for (;;) {
        const chain = queue.popAvail();
        if (chain === undefined) break;
        if ("ringError" in chain) {
          this.#ringError(ring, chain.ringError);
          return;
        }
        const written = this.#handler.handle(chain, this.#memory, ring.index);
        queue.pushUsed(chain.head, written);
        served++;
      }
      if (!queue.enableNotifications()) break;
    }
    if (served > 0 && ring.callFd !== NO_FD && queue.needsNotification()) {
      eventfdWrite(ring.callFd, 1);
    }
    if (this.#log && this.#log.takeMarked() > 0 && this.#logFd !== NO_FD) {
      eventfdWrite(this.#logFd, 1);
    }
  }

  #ringError(ring: ActiveRing, reason: string): void {
    ring.broken = true;
    log.error(`queue ${ring.index}: ring is broken, stopped serving it: ${reason}`);
    if (ring.errFd !== NO_FD) eventfdWrite(ring.errFd, 1);
    post({ type: "ring-error", queue: ring.index, reason });
  }

  #execute(cmd: WorkerCommand): void {
    try {
      switch (cmd.type) {
        case "memory": {
          for (const ring of this.#rings.values()) ring.queue.detach();
          this.#memory = guestMemoryOf(cmd.regions);
          this.#memory.writeObserver = this.#log;
          for (const ring of this.#rings.values()) this.#attach(ring);
          post({ type: "done", seq: cmd.seq });
          return;
        }
        case "start": {
          const ring: ActiveRing = {
            index: cmd.queue,
            queue: new SplitQueue(cmd.state),
            kickFd: cmd.kickFd,
            callFd: cmd.callFd,
            errFd: cmd.errFd,
            broken: false,
          };
          this.#rings.set(cmd.queue, ring);
          if (ring.kickFd !== NO_FD) {
            epollCtl(this.#epfd, EPOLL_CTL_ADD, ring.kickFd, EPOLLIN, cmd.queue);
          }
          const error = this.#attach(ring);
          post({ type: "done", seq: cmd.seq, error });
          // Requests may have been queued before the ring started.
          this.#process(ring);
          return;
        }
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
          if (ring) ring.callFd = cmd.callFd;
          post({ type: "done", seq: cmd.seq });
          return;
        }
        case "stop": {
          const ring = this.#rings.get(cmd.queue);
          if (!ring) {
            post({ type: "done", seq: cmd.seq, error: `queue ${cmd.queue} is not running here` });
            return;
          }
          if (ring.kickFd !== NO_FD) epollCtl(this.#epfd, EPOLL_CTL_DEL, ring.kickFd, 0, 0);
          const state = ring.queue.state();
          ring.queue.detach();
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
          for (const ring of this.#rings.values()) ring.queue.detach();
          this.#rings.clear();
          this.#running = false;
          post({ type: "done", seq: cmd.seq });
          return;
        case "init":
          post({ type: "done", seq: cmd.seq, error: "already initialised" });
          return;
      }
    } catch (e) {
      post({ type: "done", seq: cmd.seq, error: e instanceof Error ? e.message : String(e) });
    }
  }

  #attach(ring: ActiveRing): string | undefined {
    const error = ring.queue.attach(this.#memory);
    if (error !== undefined) this.#ringError(ring, error);
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
    post({ type: "done", seq: init.seq, error: e instanceof Error ? e.message : String(e) });
    return;
  }
  post({ type: "done", seq: init.seq });
  await worker.run();
  self.close();
}

main();
