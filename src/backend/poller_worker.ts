/**
 * Poller Worker: blocks in epoll_wait on the main thread's epoll instance and
 * posts the token of every ready registration. Registrations are one-shot,
 * so a ready fd is reported once until the main thread has handled it and
 * re-armed it. Token 0 is the exit request.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { EpollEvents, epollWait } from "../../ffi/mod.ts";

/** Token of the eventfd that asks the poller to exit. */
export const POLLER_EXIT_TOKEN = 0;

self.onmessage = (e: MessageEvent<{ epfd: number }>) => {
  const events = new EpollEvents(16);
  for (;;) {
    const n = epollWait(e.data.epfd, events, -1);
    const tokens: number[] = [];
    for (let i = 0; i < n; i++) tokens.push(events.data(i));
    if (tokens.includes(POLLER_EXIT_TOKEN)) break;
    if (tokens.length > 0) self.postMessage(tokens);
  }
  self.close();
};
