/**
 * Test Worker: blocks in a synchronous epoll_wait on an epoll fd created by
 * the main thread and reports what woke it. It also checks that errno works
 * in this isolate (own dlopen, own thread-local errno).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { SyscallError } from "../errno.ts";
import { EpollEvents, epollWait } from "../events.ts";
import { closeFd } from "../fd.ts";

/** Request from the test. */
export interface WaitRequest {
  /** epoll fd to wait on. */
  epfd: number;
  /** epoll_wait timeout. */
  timeoutMs: number;
}

/** Reply to the test. */
export type WaitReply =
  | { kind: "waiting"; closeErrorCode: string }
  | { kind: "woken"; count: number; events: number; data: number; elapsedMs: number };

self.onmessage = (event: MessageEvent<WaitRequest>) => {
  const { epfd, timeoutMs } = event.data;
  let closeErrorCode = "none";
  try {
    closeFd(-1);
  } catch (error) {
    if (error instanceof SyscallError) closeErrorCode = error.code;
  }
  self.postMessage({ kind: "waiting", closeErrorCode } satisfies WaitReply);
  const out = new EpollEvents(4);
  const start = performance.now();
  const count = epollWait(epfd, out, timeoutMs);
  const elapsedMs = performance.now() - start;
  const reply: WaitReply = {
    kind: "woken",
    count,
    events: count > 0 ? out.events(0) : 0,
    data: count > 0 ? out.data(0) : -1,
    elapsedMs,
  };
  self.postMessage(reply);
};
