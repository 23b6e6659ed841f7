/**
 * The guest driver's side of virtio-vsock for unit tests of the vsock data
 * half through {@linkcode DeviceHarness}: packets on TX, buffers on RX, the
 * packets the device wrote, and real host Unix sockets.
 *
 * @module
 */

import {
  acceptConnection,
  bindUnix,
  closeQuietly,
  connectUnix,
  ECONNRESET,
  listenSocket,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  socketUnix,
} from "../../ffi/mod.ts";
import type { DeviceHarness } from "./device_harness.ts";
import {
  decodeVsockHeader,
  encodeVsockHeader,
  HOST_CID,
  VSOCK_HEADER_SIZE,
  type VsockHeader,
  VsockQueue,
  VsockType,
} from "../../src/devices/vsock/vsock_spec.ts";
import { readSome, writeSome } from "../../src/devices/vsock/host_socket_io.ts";

/** The guest CID the tests use. */
export const TEST_GUEST_CID = 3;

/** A packet the device put on RX. */
export interface RxPacket {
  header: VsockHeader;
  payload: Uint8Array;
}

/** A header from the guest with defaults (stream, guest to host, our credit). */
export function guestHeader(fields: Partial<VsockHeader>): VsockHeader {
  return {
    srcCid: TEST_GUEST_CID,
    dstCid: HOST_CID,
    srcPort: 0,
    dstPort: 0,
    len: 0,
    type: VsockType.STREAM,
    op: 0,
    flags: 0,
    bufAlloc: 256 * 1024,
    fwdCnt: 0,
    ...fields,
  };
}

/** Offers one TX packet (header and payload in separate descriptors, as Linux does) and kicks. */
export function guestSends(h: DeviceHarness, header: VsockHeader, payload?: Uint8Array): void {
  const data = payload ?? new Uint8Array(0);
  const readable = [encodeVsockHeader({ ...header, len: header.len || data.length })];
  if (data.length > 0) readable.push(data);
  h.addChain(VsockQueue.TX, { readable });
  h.kick(VsockQueue.TX);
  // TX chains always complete at once, with nothing written.
  for (const used of h.takeUsed(VsockQueue.TX)) {
    if (used.len !== 0) throw new Error(`TX chain completed with len ${used.len}`);
  }
}

/** Offers `count` RX buffers of header + `payload` bytes (Linux: 44 + 4096) and kicks. */
export function guestOffersRx(h: DeviceHarness, count: number, payload = 4096): void {
  for (let i = 0; i < count; i++) {
    h.addChain(VsockQueue.RX, { writable: [VSOCK_HEADER_SIZE, payload] });
  }
  h.kick(VsockQueue.RX);
}

/** Packets the device completed on RX since the last call. */
export function guestReceives(h: DeviceHarness): RxPacket[] {
  return h.takeUsed(VsockQueue.RX).map((used) => {
    const header = decodeVsockHeader(used.data);
    if (!header) throw new Error(`RX buffer ${used.head} completed with only ${used.len} bytes`);
    return { header, payload: used.data.slice(VSOCK_HEADER_SIZE) };
  });
}

/** A non-blocking listening Unix socket at `path`. */
export function listenAt(path: string): number {
  const fd = socketUnix(SOCK_STREAM, SOCK_CLOEXEC | SOCK_NONBLOCK);
  bindUnix(fd, path);
  listenSocket(fd, 16);
  return fd;
}

/** Accepts a pending connection as a non-blocking fd. */
export function acceptFrom(listenFd: number): number {
  return acceptConnection(listenFd, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

/** A non-blocking connection to `path`. */
export function connectTo(path: string): number {
  const fd = socketUnix(SOCK_STREAM, SOCK_CLOEXEC | SOCK_NONBLOCK);
  connectUnix(fd, path);
  return fd;
}

/**
 * Everything readable on `fd` now; `eof` when the peer closed cleanly,
 * `closed` also when it closed with our data unread (ECONNRESET).
 */
export function drain(fd: number): { data: Uint8Array; eof: boolean; closed: boolean } {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  let n: number;
  for (;;) {
    n = readSome(fd, buf);
    if (n <= 0) break;
    parts.push(buf.slice(0, n));
  }
  return { data: concat(parts), eof: n === 0, closed: n === 0 || n === -ECONNRESET };
}

/** Writes all of `data` to a non-blocking fd that has room (throws when it does not). */
export function writeAllNow(fd: number, data: Uint8Array): void {
  let at = 0;
  while (at < data.length) {
    const n = writeSome(fd, data.subarray(at));
    if (n <= 0) throw new Error(`host socket took ${at} of ${data.length} bytes (${n})`);
    at += n;
  }
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Deterministic test bytes. */
export function pattern(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Closes fds, ignoring errors. */
export function closeAll(...fds: number[]): void {
  for (const fd of fds) closeQuietly(fd);
}
