/**
 * Test Worker: maps memory shared by the main thread from its address, checks
 * what the main thread wrote and answers by writing into it.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { mapArrayBuffer } from "../memory.ts";

/** Request from the test. */
export interface MapRequest {
  /** Address of the mapping (from mmap in the main thread). */
  addr: bigint;
  /** Bytes mapped. */
  length: number;
}

/** Reply to the test. */
export interface MapReply {
  /** Byte-wise sum of what the Worker saw. */
  sum: number;
  /** First byte seen. */
  first: number;
}

self.onmessage = (event: MessageEvent<MapRequest>) => {
  const { addr, length } = event.data;
  const bytes = new Uint8Array(mapArrayBuffer(addr, length));
  let sum = 0;
  for (const byte of bytes) sum += byte;
  const first = bytes[0];
  // Answer through the shared memory itself: byte i becomes 255 - i % 256.
  for (let i = 0; i < bytes.length; i++) bytes[i] = 255 - (i & 255);
  const reply: MapReply = { sum, first };
  self.postMessage(reply);
};
