/**
 * The front-end side of DEVICE_STATE: asks a back-end to SAVE its state
 * into a pipe (or to LOAD it from one) and pumps the stream between the pipe
 * and a byte sink or source, then confirms with CHECK_DEVICE_STATE. Used by
 * `vhostd state save/load` and by tests; works whether the back-end uses the
 * pipe end it is given or hands back one of its own.
 *
 * @module
 */

import { closeQuietly, pipe2, setPipeSize } from "../../ffi/mod.ts";
import {
  bit,
  DeviceStateDirection,
  DeviceStatePhase,
  hasBit,
  ProtocolFeature,
  VirtioFeature,
} from "../protocol/mod.ts";
import type { ByteSink, ByteSource } from "../migration/byte_stream.ts";
import type { VhostUserClient } from "./vhost_user_client.ts";
import { PUMP_CHUNK as CHUNK, pumpFromPipe, pumpIntoPipe } from "./state_pump.ts";

/** A pipe with a 1 MiB buffer: 16 times fewer wake-ups than the default 64 KiB. */
function statePipe(): [number, number] {
  const [r, w] = pipe2();
  try {
    setPipeSize(w, CHUNK);
  } catch {
    // Over the unprivileged limit (/proc/sys/fs/pipe-max-size): the default still works.
  }
  return [r, w];
}

/** Options of a transfer. */
export interface StateTransferOptions {
  /** Called after every chunk with the bytes moved so far. */
  onProgress?: (bytes: number) => void;
}

/** What a finished transfer moved. */
export interface StateTransferResult {
  /** Stream bytes. */
  bytes: number;
  /** True when the back-end handed back a pipe end of its own. */
  backendPipe: boolean;
}

/** The back-end cannot move device state. */
export class DeviceStateUnsupported extends Error {}

/**
 * Negotiates just enough for DEVICE_STATE on a fresh connection: features,
 * owner, and the DEVICE_STATE (+ REPLY_ACK) protocol features. No memory,
 * no rings: the device stays stopped.
 */
export function negotiateDeviceState(client: VhostUserClient): void {
  const features = client.getFeatures();
  if (!hasBit(features, VirtioFeature.PROTOCOL_FEATURES)) {
    throw new DeviceStateUnsupported("the back-end offers no protocol features");
  }
  client.setOwner();
  const offered = client.getProtocolFeatures();
  if (!hasBit(offered, ProtocolFeature.DEVICE_STATE)) {
    throw new DeviceStateUnsupported("the back-end does not offer DEVICE_STATE");
  }
  client.setProtocolFeatures(
    offered & (bit(ProtocolFeature.DEVICE_STATE) | bit(ProtocolFeature.REPLY_ACK)),
  );
}

/** Asks the back-end to SAVE and writes the stream to `out`. */
export function saveDeviceState(
  client: VhostUserClient,
  out: ByteSink,
  opts: StateTransferOptions = {},
): StateTransferResult {
  const [readEnd, writeEnd] = statePipe();
  let source = readEnd;
  let backendPipe = false;
  try {
    try {
      const own = client.setDeviceStateFd(
        DeviceStateDirection.SAVE,
        DeviceStatePhase.STOPPED,
        writeEnd,
      );
      if (own !== undefined) {
        closeQuietly(readEnd);
        source = own;
        backendPipe = true;
      }
    } finally {
      // The back-end has its own copy; ours must go, or the stream never ends.
      closeQuietly(writeEnd);
    }
    const bytes = pumpFromPipe(source, out, opts.onProgress);
    closeQuietly(source);
    source = -1;
    client.checkDeviceState();
    return { bytes, backendPipe };
  } finally {
    closeQuietly(source); // the read end, or the back-end's pipe end that replaced it
  }
}

/**
 * Sends the stream read from `input` to the back-end as a LOAD, then waits
 * for CHECK_DEVICE_STATE. A back-end that stops reading early (it refused
 * the stream) is not an error here: CHECK_DEVICE_STATE reports it.
 */
export function loadDeviceState(
  client: VhostUserClient,
  input: ByteSource,
  opts: StateTransferOptions = {},
): StateTransferResult {
  const [readEnd, writeEnd] = statePipe();
  let sink = writeEnd;
  let backendPipe = false;
  try {
    try {
      const own = client.setDeviceStateFd(
        DeviceStateDirection.LOAD,
        DeviceStatePhase.STOPPED,
        readEnd,
      );
      if (own !== undefined) {
        closeQuietly(writeEnd);
        sink = own;
        backendPipe = true;
      }
    } finally {
      closeQuietly(readEnd);
    }
    const bytes = pumpIntoPipe(input, sink, opts.onProgress);
    closeQuietly(sink);
    sink = -1;
    client.checkDeviceState();
    return { bytes, backendPipe };
  } finally {
    closeQuietly(sink); // the write end, or the back-end's pipe end that replaced it
  }
}
