/**
 * Moving a state stream between the DEVICE_STATE pipe and the user's side
 * (a file, stdin or stdout, memory). When the user's side is an fd, the
 * bytes go with splice(2) and never pass through this process's memory;
 * whatever splice cannot take (EINVAL: an fd that does not support it)
 * falls back to read and write through one buffer.
 *
 * @module
 */

import {
  EAGAIN,
  EINVAL,
  EPIPE,
  isErrno,
  pollFd,
  POLLIN,
  POLLOUT,
  readFd,
  splice,
  writeFd,
} from "../../ffi/mod.ts";
import { type ByteSink, type ByteSource, FdSink, FdSource } from "../migration/byte_stream.ts";
import { StateStreamError } from "../migration/errors.ts";

/** Bytes per read, write or splice: the state pipe's capacity. */
export const PUMP_CHUNK = 1 << 20;

/** Called with the bytes moved so far. */
export type PumpProgress = ((bytes: number) => void) | undefined;

/**
 * Splices from `from` to `to` (one is a pipe) until end of input; returns
 * the bytes moved, or undefined when the very first splice said EINVAL
 * (nothing moved: use read and write). A full or empty non-blocking fd is
 * waited for. `stopOnEpipe`: a reader that went away ends the pump quietly.
 */
function spliceAll(
  from: number,
  to: number,
  onProgress: PumpProgress,
  stopOnEpipe: boolean,
): number | undefined {
  let bytes = 0;
  for (;;) {
    let n: number;
    try {
      n = splice(from, undefined, to, undefined, PUMP_CHUNK);
    } catch (error) {
      if (bytes === 0 && isErrno(error, EINVAL)) return undefined;
      if (isErrno(error, EAGAIN)) {
        // Either side may be the non-blocking one; wait for both to be ready.
        pollFd(from, POLLIN, -1);
        pollFd(to, POLLOUT, -1);
        continue;
      }
      if (isErrno(error, EPIPE)) {
        if (stopOnEpipe) return bytes;
        throw new StateStreamError("the reader closed the stream", { cause: error });
      }
      const detail = error instanceof Error ? error.message : String(error);
      throw new StateStreamError(`moving the state stream failed: ${detail}`, { cause: error });
    }
    if (n === 0) return bytes;
    bytes += n;
    onProgress?.(bytes);
  }
}

/** Copies the read end `pipeFd` to `out` until end of stream; returns the bytes. */
export function pumpFromPipe(pipeFd: number, out: ByteSink, onProgress: PumpProgress): number {
  if (out instanceof FdSink) {
    const spliced = spliceAll(pipeFd, out.fd, onProgress, false);
    if (spliced !== undefined) return spliced;
  }
  const buffer = new Uint8Array(PUMP_CHUNK);
  let bytes = 0;
  for (;;) {
    const n = readFd(pipeFd, buffer);
    if (n === 0) return bytes;
    out.write(buffer.subarray(0, n));
    bytes += n;
    onProgress?.(bytes);
  }
}

/**
 * Copies `input` into the write end `pipeFd` until end of input; returns the
 * bytes taken from `input`. A reader that closed the pipe early (the
 * back-end refused the stream) ends the copy without an error.
 */
export function pumpIntoPipe(input: ByteSource, pipeFd: number, onProgress: PumpProgress): number {
  if (input instanceof FdSource) {
    const spliced = spliceAll(input.fd, pipeFd, onProgress, true);
    if (spliced !== undefined) return spliced;
  }
  const buffer = new Uint8Array(PUMP_CHUNK);
  let bytes = 0;
  for (;;) {
    const n = input.read(buffer);
    if (n === 0) return bytes;
    for (let off = 0; off < n;) {
      try {
        off += writeFd(pipeFd, buffer.subarray(off, n));
      } catch (error) {
        if (isErrno(error, EPIPE)) return bytes + off;
        throw error;
      }
    }
    bytes += n;
    onProgress?.(bytes);
  }
}
