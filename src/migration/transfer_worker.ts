/**
 * Transfer Worker: runs one SAVE or LOAD (transfer.ts) with blocking I/O on
 * the state fd, so the main thread keeps answering vhost-user messages while
 * the stream flows. It always closes the state fd when done: for SAVE that
 * close is what tells the reader the stream is over.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { closeQuietly } from "../../ffi/mod.ts";
import { loadState, saveState } from "./transfer.ts";
import type { TransferJob, TransferReport } from "./transfer_protocol.ts";

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
  try {
    if (job.direction === "save") {
      const totals = saveState(job.fd, job.device, job.snapshot, {
        dumpPath: job.dumpPath,
        onProgress,
      });
      report = { type: "done", ok: true, ...totals };
    } else {
      const result = loadState(job.fd, job.device, job.staging, {
        dumpPath: job.dumpPath,
        onProgress,
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
  self.close();
};
