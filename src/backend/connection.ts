/**
 * One front-end connection: reads whole vhost-user messages (header,
 * payload, fds) from a non-blocking Unix socket and sends replies.
 *
 * A front-end sends each message in one sendmsg, so once the header is there
 * the payload follows at once; a peer that takes longer than
 * MESSAGE_TIMEOUT_MS to finish a started message is treated as broken, so it
 * cannot hang the daemon.
 *
 * @module
 */

import {
  closeQuietly,
  MSG_DONTWAIT,
  pollFd,
  POLLIN,
  POLLOUT,
  receiveMessage,
  sendMessage,
  SyscallError,
} from "../../ffi/mod.ts";
import { decodeHeader, HEADER_SIZE, MAX_PAYLOAD_SIZE, requestName } from "../protocol/mod.ts";
import type { IncomingMessage } from "./dispatcher.ts";

/** Longest wait for the rest of a started message, or for room to send a reply. */
const MESSAGE_TIMEOUT_MS = 1000;
/** Most fds any request carries (SET_MEM_TABLE: 8); one more detects excess. */
const MAX_FDS = 9;

/** The result of trying to read a message. */
export type ReadResult =
  | { kind: "message"; message: IncomingMessage }
  | { kind: "again" }
  | { kind: "closed" }
  | { kind: "broken"; reason: string };

/** A connected front-end socket. */
export class Connection {
  /** The socket fd (non-blocking). */
  readonly fd: number;
  readonly #header = new Uint8Array(HEADER_SIZE);
  #closed = false;

  /** Wraps an accepted, non-blocking socket; the connection owns it. */
  constructor(fd: number) {
    this.fd = fd;
  }

  /** Reads the next message if one has arrived. Received fds are never leaked. */
  readMessage(): ReadResult {
    const fds: number[] = [];
    const fail = (reason: string): ReadResult => {
      fds.forEach(closeQuietly);
      return { kind: "broken", reason };
    };
    try {
      const first = this.#receive(this.#header, fds, MSG_DONTWAIT);
      if (first === "again") return { kind: "again" };
      if (first === 0) return { kind: "closed" };
      if (first === "truncated") return fail("too many fds with one message");
      // One deadline for the whole rest of the message: a peer trickling bytes cannot hold
      // the main thread (and every other session) for longer than that.
      const deadline = performance.now() + MESSAGE_TIMEOUT_MS;
      let got = first;
      while (got < HEADER_SIZE) {
        const n = this.#receiveWithin(this.#header.subarray(got), fds, deadline);
        if (typeof n === "string") return fail(`${n} inside a message header`);
        got += n;
      }
      const header = decodeHeader(this.#header);
      if (header.size > MAX_PAYLOAD_SIZE) {
        // The stream cannot be resynchronised after an absurd size.
        return fail(
          `${
            requestName(header.request)
          } announces a ${header.size}-byte payload (limit ${MAX_PAYLOAD_SIZE})`,
        );
      }
      const payload = new Uint8Array(header.size);
      for (let off = 0; off < header.size;) {
        const n = this.#receiveWithin(payload.subarray(off), fds, deadline);
        if (typeof n === "string") {
          return fail(`${n} inside the payload of ${requestName(header.request)}`);
        }
        off += n;
      }
      return { kind: "message", message: { header, payload, fds } };
    } catch (e) {
      return fail(e instanceof Error ? e.message : String(e));
    }
  }

  #receive(buf: Uint8Array, fds: number[], flags: number): number | "again" | "truncated" {
    try {
      const r = receiveMessage(this.fd, buf, MAX_FDS, flags);
      fds.push(...r.fds);
      return r.controlTruncated ? "truncated" : r.bytes;
    } catch (e) {
      if (e instanceof SyscallError && e.code === "EAGAIN") return "again";
      throw e;
    }
  }

  /** Receives at least one byte of the rest of a message, waiting until `deadline` at most. */
  #receiveWithin(buf: Uint8Array, fds: number[], deadline: number): number | string {
    for (;;) {
      const r = this.#receive(buf, fds, MSG_DONTWAIT);
      if (r === "truncated") return "too many fds";
      if (r === 0) return "peer closed";
      if (r !== "again") return r;
      const left = Math.ceil(deadline - performance.now());
      if (left <= 0 || (pollFd(this.fd, POLLIN, left) & POLLIN) === 0) return "peer stalled";
    }
  }

  /** Sends a whole encoded message; throws if the peer does not take it in time. */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    let off = 0;
    while (off < bytes.length) {
      try {
        off += sendMessage(this.fd, bytes.subarray(off), off === 0 ? fds : []);
      } catch (e) {
        if (!(e instanceof SyscallError && e.code === "EAGAIN")) throw e;
        if ((pollFd(this.fd, POLLOUT, MESSAGE_TIMEOUT_MS) & POLLOUT) === 0) {
          throw new Error("front-end does not read its replies");
        }
      }
    }
  }

  /** Closes the socket (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.fd);
  }
}
