/**
 * Test Worker: writes the bytes it is sent into a pipe's write end, closes
 * that end (the reader then sees the end of the stream) and reports. It
 * always closes `pipeFd`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { closeQuietly } from "../../../ffi/mod.ts";
import { FdSink } from "../byte_stream.ts";

/** Job sent by the test. */
export interface FeedJob {
  /** Write end of the pipe; the Worker closes it. */
  pipeFd: number;
  /** Everything to write. */
  bytes: Uint8Array;
}

self.onmessage = (event: MessageEvent<FeedJob>) => {
  const { pipeFd, bytes } = event.data;
  let error: string | undefined;
  try {
    new FdSink(pipeFd).write(bytes);
  } catch (e) {
    // The reader may stop early (it refused the stream): EPIPE is expected then.
    error = e instanceof Error ? e.message : String(e);
  } finally {
    closeQuietly(pipeFd);
  }
  self.postMessage({ error });
};
