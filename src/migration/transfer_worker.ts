/**
 * Transfer Worker: runs a SAVE or LOAD (transfer.ts) with blocking I/O on
 * the state fd, so the main thread keeps answering vhost-user messages while
 * the stream flows; after a successful one it waits for the next job. It
 * always closes the state fd when done: for SAVE that close is what tells
 * the reader the stream is over.
 *
 * The Worker never blocks forever in a system call: the state fd is made
 * non-blocking, and every wait for it is a poll together with the job's
 * cancel eventfd (and bounded by the job's no-progress limit), so a peer
 * that holds the other pipe end open without reading or writing cannot keep
 * the Worker (and the fd) alive once the main thread cancels.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { closeQuietly, setNonBlocking } from "../../ffi/mod.ts";
import { libc } from "../../ffi/libc.ts";
import { probeIoUring } from "../io/open_engine.ts";
import { loadState, saveState } from "./transfer.ts";
import type { TransferJob, TransferReport } from "./transfer_protocol.ts";

// Done now, while this Worker waits as the spare: an isolate's first FFI
// call opens libc and binds its symbols (~20 ms), and the io_uring probe
// that LOAD's stager asks for sets up a ring (~2 ms); each would otherwise
// be the first thing the transfer waits for.
libc();
probeIoUring();

/** Progress is reported at most this often. */
const PROGRESS_INTERVAL_MS = 200;

self.onmessage = (event: MessageEvent<TransferJob>) => {
  const job = event.data;
  let lastProgress = performance.now();
  const onProgress = (bytes: number) => {
    const now = performance.now();
    if (now - lastProgress >= PROGRESS_INTERVAL_MS) {
      lastProgress = now;
      self.postMessage({ type: "progress", bytes } satisfies TransferReport);
    }
  };
  let report: TransferReport;
  const wait = { cancelFd: job.cancelFd, stallMs: job.stallMs };
  try {
    // Waits then happen in poll, with the cancel fd, never inside read() or write().
    setNonBlocking(job.fd, true);
    if (job.direction === "save") {
      const totals = saveState(job.fd, job.device, job.snapshot, {
        dumpPath: job.dumpPath,
        onProgress,
        wait,
      });
      report = { type: "done", ok: true, ...totals };
    } else {
      const result = loadState(job.fd, job.device, job.staging, {
        dumpPath: job.dumpPath,
        onProgress,
        wait,
      });
      report = {
        type: "done",
        ok: true,
        bytes: result.bytes,
        ms: result.ms,
        state: result.metadata.state,
      };
    }
  } catch (e) {
    report = { type: "done", ok: false, error: e instanceof Error ? e.message : String(e) };
  } finally {
    closeQuietly(job.fd);
  }
  self.postMessage(report);
  // A Worker whose transfer succeeded holds nothing (its fds and rings are
  // closed) and may serve the next transfer, its code already compiled; a
  // failed one ends, so a failure never leaves anything behind.
  if (!report.ok) self.close();
};
