/**
 * Test Worker: saves a RAM disk (a memfd shared by fd number) as a state
 * stream into a pipe's write end, then closes that end (which tells the
 * reader the stream is over) and reports. It always closes `pipeFd`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { closeFd } from "../../../ffi/mod.ts";
import { FdSink } from "../byte_stream.ts";
import { StateWriter } from "../state_writer.ts";

/** Job sent by the test. */
export interface SaveJob {
  /** Write end of the pipe; the Worker closes it. */
  pipeFd: number;
  /** The memfd holding the disk. */
  diskFd: number;
  /** Disk size. */
  size: number;
  /** Device identity for the header. */
  identity: Record<string, unknown>;
  /** Close the pipe after this many stream bytes instead of finishing (simulates a crash). */
  stopAfter?: number;
}

/** Reply to the test. */
export interface SaveReport {
  /** Stream length, when finished. */
  bytes?: number;
  /** Stream CRC, when finished. */
  crc?: number;
  /** Milliseconds spent writing. */
  ms: number;
  /** Failure message. */
  error?: string;
}

class StopWriting extends Error {}

self.onmessage = (event: MessageEvent<SaveJob>) => {
  const job = event.data;
  const started = performance.now();
  let report: SaveReport;
  try {
    const writer = new StateWriter(
      new FdSink(job.pipeFd),
      { kind: "blk", identity: job.identity },
      {
        onProgress: (bytes) => {
          if (job.stopAfter !== undefined && bytes >= job.stopAfter) throw new StopWriting();
        },
      },
    );
    writer.writeMetadata({ vhostd: "test", kind: "blk", identity: job.identity, state: {} });
    writer.writeRamDiskFromFd(job.diskFd, job.size);
    const { bytes, crc } = writer.finish();
    report = { bytes, crc, ms: performance.now() - started };
  } catch (error) {
    const message = error instanceof StopWriting ? "stopped" : String(error);
    report = { ms: performance.now() - started, error: message };
  } finally {
    closeFd(job.pipeFd);
  }
  self.postMessage(report);
};

self.postMessage("ready");
