/**
 * Test Worker: a slow front-end. It sends pieces of a message on a socket
 * after pauses, while the main thread is blocked in the synchronous
 * `Connection.readMessage()` and cannot send them itself.
 *
 * Protocol: the Worker posts "ready" once loaded; each {@linkcode SlowSend}
 * it receives is carried out and answered with "sent".
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { sendMessage } from "../../ffi/mod.ts";

/** Bytes to send on `fd` after `delayMs`. */
export interface SlowSend {
  /** The socket (shared by the whole process). */
  fd: number;
  /** Pause before sending. */
  delayMs: number;
  /** What to send (in one sendmsg). */
  bytes: Uint8Array;
}

self.onmessage = async (event: MessageEvent<SlowSend>) => {
  const { fd, delayMs, bytes } = event.data;
  await new Promise((resolve) => setTimeout(resolve, delayMs));
  let sent = 0;
  while (sent < bytes.length) sent += sendMessage(fd, bytes.subarray(sent));
  self.postMessage("sent");
};

self.postMessage("ready");
