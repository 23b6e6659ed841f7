/**
 * One front-end connection: reads whole vhost-user messages (header,
 * payload, fds) from a non-blocking Unix socket and sends replies.
 *
 * Reading is incremental: {@linkcode Connection.readAvailable} takes what
 * has arrived, keeps a partial message (and the fds that came with it)
 * across calls, and never waits, so the main thread is never held by a
 * slow peer. How long a peer may stay silent inside a message is the
 * daemon's decision ({@linkcode Connection.silentForMs},
 * {@linkcode Connection.messageAgeMs}).
 *
 * @module
 */

import {
  closeQuietly,
  MSG_DONTWAIT,
  pollFd,
  POLLOUT,
  receiveMessage,
  sendMessage,
  SyscallError,
} from "../../ffi/mod.ts";
import {
  decodeHeader,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  type MessageHeader,
  requestName,
} from "../protocol/mod.ts";
import type { IncomingMessage } from "./dispatcher.ts";

/** How long a reply waits for room in the socket. */
const MESSAGE_TIMEOUT_MS = 1000;
/** Most fds any request carries (SET_MEM_TABLE: 8); one more detects excess. */
const MAX_FDS = 9;

/** The result of trying to read a message. */
export type ReadResult =
  | { kind: "message"; message: IncomingMessage }
  | { kind: "again" }
  | { kind: "closed" }
  | { kind: "broken"; reason: string };

/** A message being received. */
interface Partial {
  got: number;
  header?: MessageHeader;
  payload?: Uint8Array;
  offset: number;
  fds: number[];
  started: number;
  lastProgress: number;
}

/** A connected front-end socket. */
export class Connection {
  /** The socket fd (non-blocking). */
  readonly fd: number;
  readonly #header = new Uint8Array(HEADER_SIZE);
  #partial: Partial | undefined;
  #closed = false;

  /** Wraps an accepted, non-blocking socket; the connection owns it. */
  constructor(fd: number) {
    this.fd = fd;
  }

  /** True while a message has started to arrive but is not complete. */
  get midMessage(): boolean {
    return this.#partial !== undefined;
  }

  /** Milliseconds since the last byte of the unfinished message arrived (0 when none). */
  silentForMs(now: number = performance.now()): number {
    return this.#partial ? now - this.#partial.lastProgress : 0;
  }

  /** Milliseconds since the unfinished message began (0 when none). */
  messageAgeMs(now: number = performance.now()): number {
    return this.#partial ? now - this.#partial.started : 0;
  }

  /** Where the unfinished message stands, for a log line. */
  describePartial(): string {
    const p = this.#partial;
    if (!p) return "between messages";
    if (!p.header) return `inside a message header (${p.got} of ${HEADER_SIZE} bytes)`;
    return `inside the payload of ${
      requestName(p.header.request)
    } (${p.offset} of ${p.header.size} bytes)`;
  }

  /**
   * Takes whatever has arrived without waiting: a whole message, "again"
   * (nothing, or only part of a message so far: see `midMessage`), "closed"
   * between messages, or "broken" (closed inside a message, too many fds,
   * an absurd size). Received fds are never leaked.
   */
  readAvailable(): ReadResult {
    try {
      for (;;) {
        const p = this.#partial;
        const target = !p || !p.header
          ? this.#header.subarray(p?.got ?? 0)
          : p.payload!.subarray(p.offset);
        // A message without payload is complete as soon as its header is.
        if (p?.header && target.length === 0) return this.#complete();
        const fds: number[] = [];
        const r = this.#receive(target, fds);
        if (r === "again") return { kind: "again" };
        const now = performance.now();
        const current = this.#partial ??= {
          got: 0,
          offset: 0,
          fds: [],
          started: now,
          lastProgress: now,
        };
        current.fds.push(...fds);
        if (r === "truncated") return this.#fail("too many fds with one message");
        if (r === 0) {
          if (current.got === 0 && !current.header) {
            this.#partial = undefined;
            return { kind: "closed" };
          }
          return this.#fail(`peer closed ${this.describePartial()}`);
        }
        current.lastProgress = now;
        if (!current.header) {
          current.got += r;
          if (current.got < HEADER_SIZE) continue;
          const header = decodeHeader(this.#header);
          if (header.size > MAX_PAYLOAD_SIZE) {
            // The stream cannot be resynchronised after an absurd size.
            return this.#fail(
              `${
                requestName(header.request)
              } announces a ${header.size}-byte payload (limit ${MAX_PAYLOAD_SIZE})`,
            );
          }
          current.header = header;
          current.payload = new Uint8Array(header.size);
        } else {
          current.offset += r;
        }
        if (current.offset === current.header.size) return this.#complete();
      }
    } catch (e) {
      return this.#fail(e instanceof Error ? e.message : String(e));
    }
  }

  #complete(): ReadResult {
    const p = this.#partial!;
    this.#partial = undefined;
    return { kind: "message", message: { header: p.header!, payload: p.payload!, fds: p.fds } };
  }

  #fail(reason: string): ReadResult {
    this.#partial?.fds.forEach(closeQuietly);
    this.#partial = undefined;
    return { kind: "broken", reason };
  }

  /**
   * Gives up on the unfinished message (its fds are closed) and returns why,
   * for a caller that decided the peer took too long.
   */
  abandonPartial(why: string): string {
    const reason = `${why} ${this.describePartial()}`;
    this.#fail(reason);
    return reason;
  }

  #receive(buf: Uint8Array, fds: number[]): number | "again" | "truncated" {
    try {
      const r = receiveMessage(this.fd, buf, MAX_FDS, MSG_DONTWAIT);
      fds.push(...r.fds);
      return r.controlTruncated ? "truncated" : r.bytes;
    } catch (e) {
      if (e instanceof SyscallError && e.code === "EAGAIN") return "again";
      throw e;
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

  /** Closes the socket and any fds of an unfinished message (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#partial?.fds.forEach(closeQuietly);
    this.#partial = undefined;
    closeQuietly(this.fd);
  }
}
