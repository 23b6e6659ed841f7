/**
 * Readiness notification for the main thread without blocking it: a small
 * Worker waits in epoll_wait and posts which registrations became readable;
 * the main thread then does its non-blocking reads synchronously.
 *
 * The epoll instance belongs to the main thread, so a poller Worker that
 * fails is simply replaced: the new one waits on the same instance, and
 * every registration is re-armed (one that fired just before the failure
 * would otherwise never fire again).
 *
 * @module
 */

import {
  closeQuietly,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  epollCreate,
  epollCtl,
  EPOLLIN,
  EPOLLONESHOT,
  eventfd,
  eventfdWrite,
} from "../../ffi/mod.ts";
import { log } from "../log.ts";
import { POLLER_EXIT_TOKEN } from "./poller_worker.ts";

interface Watch {
  fd: number;
  onReady: () => Promise<void> | void;
}

/** Calls back on the main thread when watched fds become readable. */
export class Poller {
  readonly #epfd = epollCreate();
  readonly #exitFd = eventfd(0);
  readonly #watches = new Map<number, Watch>();
  #worker: Worker;
  #nextToken = 1;
  #closed = false;

  /** Starts the poller Worker. */
  constructor() {
    epollCtl(this.#epfd, EPOLL_CTL_ADD, this.#exitFd, EPOLLIN, POLLER_EXIT_TOKEN);
    this.#worker = this.#spawn();
  }

  #spawn(): Worker {
    const worker = new Worker(new URL("./poller_worker.ts", import.meta.url), {
      type: "module",
      name: "poller",
    });
    worker.onmessage = (e: MessageEvent<number[]>) => {
      for (const token of e.data) this.#fire(token);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      worker.terminate();
      if (this.#closed) return;
      log.error(`poller worker failed (${e.message}); starting a new one`);
      this.#worker = this.#spawn();
      for (const [token, watch] of this.#watches) this.#arm(token, watch);
    };
    worker.postMessage({ epfd: this.#epfd });
    return worker;
  }

  /** Re-enables a one-shot registration; a failure (the fd is gone) drops the watch. */
  #arm(token: number, watch: Watch): void {
    try {
      epollCtl(this.#epfd, EPOLL_CTL_MOD, watch.fd, EPOLLIN | EPOLLONESHOT, token);
    } catch (e) {
      log.error(`cannot watch fd ${watch.fd} any more: ${e instanceof Error ? e.message : e}`);
      this.#watches.delete(token);
    }
  }

  /** Watches `fd` for readability; returns a token for `unwatch`. */
  watch(fd: number, onReady: () => Promise<void> | void): number {
    const token = this.#nextToken++;
    this.#watches.set(token, { fd, onReady });
    epollCtl(this.#epfd, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLONESHOT, token);
    return token;
  }

  /** Stops watching (call before closing the fd). */
  unwatch(token: number): void {
    const watch = this.#watches.get(token);
    if (!watch) return;
    this.#watches.delete(token);
    try {
      epollCtl(this.#epfd, EPOLL_CTL_DEL, watch.fd, 0, 0);
    } catch {
      // Already closed: the kernel dropped the registration with it.
    }
  }

  async #fire(token: number): Promise<void> {
    const watch = this.#watches.get(token);
    if (!watch) return; // a stale report for a registration that is gone
    try {
      await watch.onReady();
    } catch (e) {
      log.error(`event handler failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
    }
    if (this.#watches.get(token) === watch && !this.#closed) this.#arm(token, watch);
  }

  /** Stops the Worker and releases the epoll instance. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    eventfdWrite(this.#exitFd, 1);
    // Give the Worker its exit path; terminate covers a Worker that is gone already.
    setTimeout(() => {
      this.#worker.terminate();
      closeQuietly(this.#epfd);
      closeQuietly(this.#exitFd);
    }, 50);
  }
}
