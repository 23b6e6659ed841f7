/**
 * Readiness notification for the main thread without blocking it: a small
 * Worker waits in epoll_wait and posts which registrations became readable;
 * the main thread then does its non-blocking reads synchronously.
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
  readonly #worker: Worker;
  #nextToken = 1;
  #closed = false;

  /** Starts the poller Worker. */
  constructor() {
    epollCtl(this.#epfd, EPOLL_CTL_ADD, this.#exitFd, EPOLLIN, POLLER_EXIT_TOKEN);
    this.#worker = new Worker(new URL("./poller_worker.ts", import.meta.url), {
      type: "module",
      name: "poller",
    });
    this.#worker.onmessage = (e: MessageEvent<number[]>) => {
      for (const token of e.data) this.#fire(token);
    };
    this.#worker.onerror = (e) => {
      e.preventDefault();
      log.error(`poller worker failed: ${e.message}`);
    };
    this.#worker.postMessage({ epfd: this.#epfd });
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
    if (this.#watches.get(token) === watch && !this.#closed) {
      epollCtl(this.#epfd, EPOLL_CTL_MOD, watch.fd, EPOLLIN | EPOLLONESHOT, token);
    }
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
