/**
 * virtio-vsock, data half: one queue Worker owns both queues, every
 * connection and every host socket.
 *
 * TX (queue 1) is served per chain: each guest packet is handled at once
 * (data written to the host socket straight from guest memory, the rest
 * kept until the socket takes it) and the chain completes with 0 bytes.
 * RX (queue 0) is pulled: a buffer is taken only when a connection has a
 * packet for the guest, connections take turns (round robin) and host data
 * is read straight into the guest buffer, never more than the guest's
 * credit. A connection whose host peer stops reading keeps at most the
 * credit we gave (buf_alloc) and never holds up another: nothing blocks.
 *
 * Hybrid addressing (Firecracker, vhost-device-vsock): a guest connection
 * to host port P goes to the Unix socket `<uds-path>_P`; a host program
 * connecting to `<uds-path>` writes `CONNECT P\n` to reach guest port P.
 *
 * @module
 */

import {
  closeQuietly,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  pollFd,
  SHUT_WR,
  shutdownSocket,
} from "../../../ffi/mod.ts";
import { log, logEnabled } from "../../log.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { type DescriptorChain, forEachPiece } from "../../virtqueue/descriptor_chain.ts";
import type { HandleResult, QueueContext, QueueHandler, WorkerSetup } from "../device.ts";
import { MAX_CONNECT_LINE, okLine, parseConnectLine } from "./connect_line.ts";
import {
  acceptNonBlocking,
  connectNonBlocking,
  peekSome,
  readSome,
  WOULD_BLOCK,
  writeSome,
} from "./host_socket_io.ts";
import { PendingOutput } from "./pending_output.ts";
import { VsockConnection } from "./vsock_connection.ts";
import {
  decodeVsockHeader,
  encodeVsockHeader,
  HOST_CID,
  VSOCK_HEADER_SIZE,
  VSOCK_MAX_PACKET_PAYLOAD,
  VSOCK_OP_NAMES,
  type VsockHeader,
  VsockOp,
  VsockQueue,
  VsockShutdown,
  VsockType,
} from "./vsock_spec.ts";

/** Worker parameters of the vsock data half. */
export interface VsockWorkerParams extends Record<string, unknown> {
  /** The guest's context id. */
  guestCid: number;
  /** The main Unix socket's path; guest connections to port P go to `<udsPath>_P`. */
  udsPath: string;
  /** The listening socket at `udsPath` (non-blocking, owned by the control half). */
  listenFd: number;
  /** Receive buffer advertised per connection (buf_alloc). */
  bufAlloc: number;
  /** Milliseconds a host-initiated connection waits for the guest's answer. */
  connectTimeoutMs: number;
  /** Milliseconds a fully shut connection waits for the guest's RST before sending one. */
  closeTimeoutMs: number;
}

/** Default per-connection receive buffer: Linux's default buf_alloc. */
export const DEFAULT_BUF_ALLOC = 256 * 1024;
/** Default wait for a guest to answer a host CONNECT (TCG guests are slow). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Default wait for the guest's RST after a clean shutdown (Linux's VSOCK_CLOSE_TIMEOUT). */
export const DEFAULT_CLOSE_TIMEOUT_MS = 8_000;

/** Most RST replies to unknown connections kept while the guest gives no RX buffers. */
const MAX_ORPHAN_RESETS = 256;
/** First port vhostd picks for the host side of a host-initiated connection. */
const FIRST_HOST_PORT = 0x4000_0000;

/** A connection with its host socket. */
interface Link {
  readonly key: string;
  readonly conn: VsockConnection;
  /** The host socket, -1 once closed. */
  fd: number;
  /** Events watched now; -1 when the fd is not watched. */
  mask: number;
  /** Guest bytes the host socket has not taken yet. */
  readonly pending: PendingOutput;
  /** The host socket has data (or EOF) we have not read. */
  readable: boolean;
  /** Read EOF from the host: it sends no more. */
  readDone: boolean;
  /** The host peer closed its end (HUP): nothing more can be written. */
  hostGone: boolean;
  /** SHUT_WR done on the host socket after the guest's SHUTDOWN(SEND). */
  writeShut: boolean;
  /** Connect or close timer, if any. */
  timer: number | undefined;
  /** The host side chose `conn.hostPort` (host-initiated). */
  readonly hostChosenPort: boolean;
}

/** A host program on the main socket that has not finished its CONNECT line. */
interface Handshake {
  fd: number;
  timer: number;
}

function key(hostPort: number, guestPort: number): string {
  return `${hostPort}:${guestPort}`;
}

/** Builds the data half inside a Worker. */
export function createVsockHandler(setup: WorkerSetup): QueueHandler {
  return new VsockHandler(setup.params as VsockWorkerParams);
}

/** The vsock data half. */
export class VsockHandler implements QueueHandler {
  readonly #params: VsockWorkerParams;
  #ctx: QueueContext | undefined;
  readonly #links = new Map<string, Link>();
  /** Connections with a packet for the guest, in turn order. */
  readonly #ready = new Set<Link>();
  /** Connections owing an RST, RESPONSE or REQUEST: served before #ready. */
  readonly #urgent = new Set<Link>();
  /** RST answers to packets of no connection. */
  readonly #orphanResets: VsockHeader[] = [];
  readonly #handshakes = new Map<number, Handshake>();
  /** An RX buffer taken for data that turned out not to be there yet. */
  #spareRx: DescriptorChain | undefined;
  #nextHostPort = FIRST_HOST_PORT;
  readonly #usedHostPorts = new Set<number>();
  readonly #headerIn = new Uint8Array(VSOCK_HEADER_SIZE);
  readonly #headerOut = new Uint8Array(VSOCK_HEADER_SIZE);
  readonly #peek = new Uint8Array(MAX_CONNECT_LINE);
  #pumping = false;

  /** A handler for `params`. */
  constructor(params: VsockWorkerParams) {
    this.#params = params;
  }

  // ---- QueueHandler ------------------------------------------------------

  /** Watches the main socket. */
  attach(context: QueueContext): void {
    this.#ctx = context;
    if (this.#params.listenFd >= 0) {
      context.watchFd(this.#params.listenFd, EPOLLIN, () => this.#acceptAll());
    }
  }

  /** RX buffers are taken when there is something to put in them. */
  pullsQueue(queueIndex: number): boolean {
    return queueIndex === VsockQueue.RX;
  }

  /** The guest gave RX buffers (or the ring started). */
  queueReady(queueIndex: number): void {
    if (queueIndex === VsockQueue.RX) this.#pump();
  }

  /** One TX packet from the guest; always complete at once. */
  handle(chain: DescriptorChain, memory: GuestMemory, queueIndex: number): HandleResult {
    if (queueIndex !== VsockQueue.TX) return 0;
    if (chain.error !== undefined) {
      log.debug(`vsock: malformed TX chain ${chain.head}: ${chain.error}`);
      return 0;
    }
    if (chain.readFrom(memory, 0, this.#headerIn) < VSOCK_HEADER_SIZE) {
      log.debug(`vsock: TX chain ${chain.head} shorter than a packet header`);
      return 0;
    }
    this.#guestPacket(decodeVsockHeader(this.#headerIn)!, chain, memory);
    return 0;
  }

  /** Sends what became ready in this round. */
  submitQueued(): void {
    this.#pump();
  }

  /** The RX ring stops: give back the buffer we hold. */
  quiesce(queueIndex: number): void {
    if (queueIndex === VsockQueue.RX && this.#spareRx) {
      this.#ctx?.complete(VsockQueue.RX, this.#spareRx, 0);
      this.#spareRx = undefined;
    }
  }

  /** `{ op: "reset" }`: the driver reset the device; `{ op: "count" }`: connections open. */
  command(request: unknown): unknown {
    const op = (request as { op?: unknown } | null)?.op;
    if (op === "reset") {
      this.#dropEverything();
      return { connections: 0 };
    }
    if (op === "count") return { connections: this.#links.size, handshakes: this.#handshakes.size };
    throw new Error(`vsock: unknown command ${JSON.stringify(request)}`);
  }

  /** Closes every host socket (the Worker exits). */
  close(): void {
    this.#dropEverything();
    if (this.#params.listenFd >= 0) this.#ctx?.unwatchFd(this.#params.listenFd);
  }

  /** Open connections (for tests and state views). */
  get connectionCount(): number {
    return this.#links.size;
  }

  // ---- guest packets -------------------------------------------------------

  #guestPacket(h: VsockHeader, chain: DescriptorChain, memory: GuestMemory): void {
    if (logEnabled("debug")) {
      log.debug(
        `vsock: guest ${VSOCK_OP_NAMES[h.op] ?? `op ${h.op}`} ${h.srcCid}:${h.srcPort} -> ` +
          `${h.dstCid}:${h.dstPort} len ${h.len}`,
      );
    }
    if (h.srcCid !== this.#params.guestCid) {
      // A guest cannot speak for another CID; like vhost-vsock, such packets are dropped.
      log.debug(
        `vsock: dropped a packet from CID ${h.srcCid}, the guest is ${this.#params.guestCid}`,
      );
      return;
    }
    if (h.dstCid !== HOST_CID || h.type !== VsockType.STREAM) {
      this.#resetUnknown(h);
      return;
    }
    const link = this.#links.get(key(h.dstPort, h.srcPort));
    if (!link) {
      if (h.op === VsockOp.REQUEST) this.#guestConnect(h);
      else this.#resetUnknown(h);
      return;
    }
    const conn = link.conn;
    conn.updatePeerCredit(h.bufAlloc, h.fwdCnt);
    if (h.op === VsockOp.RST) {
      this.#forget(link);
      return;
    }
    switch (conn.state) {
      case "connecting":
        if (h.op === VsockOp.RESPONSE) this.#established(link);
        else this.#reset(link, `${VSOCK_OP_NAMES[h.op] ?? `op ${h.op}`} before RESPONSE`);
        break;
      case "established":
      case "closing":
        this.#connectedPacket(link, h, chain, memory);
        break;
    }
    this.#update(link);
  }

  #connectedPacket(link: Link, h: VsockHeader, chain: DescriptorChain, memory: GuestMemory): void {
    const conn = link.conn;
    switch (h.op) {
      case VsockOp.RW:
        this.#guestData(link, h, chain, memory);
        break;
      case VsockOp.CREDIT_UPDATE:
        break; // the credit fields were taken above
      case VsockOp.CREDIT_REQUEST:
        conn.oweCreditUpdate();
        break;
      case VsockOp.SHUTDOWN:
        conn.peerShutdown |= h.flags & VsockShutdown.BOTH;
        this.#applyGuestShutdown(link);
        break;
      case VsockOp.REQUEST:
        // The guest no longer knows this connection (it lost its state): start over.
        this.#reset(link, "REQUEST on an open connection");
        break;
      default:
        // Linux ignores other operations on a connected socket too.
        log.debug(`vsock: ignored ${VSOCK_OP_NAMES[h.op] ?? `op ${h.op}`} on ${link.key}`);
    }
  }

  #guestData(link: Link, h: VsockHeader, chain: DescriptorChain, memory: GuestMemory): void {
    const conn = link.conn;
    if (h.len === 0) return;
    if (h.len > chain.readableLength() - VSOCK_HEADER_SIZE) {
      this.#reset(link, `RW says ${h.len} bytes, the chain holds fewer`);
      return;
    }
    if (!conn.receive(h.len)) {
      this.#reset(link, `guest sent ${h.len} bytes beyond its credit`);
      return;
    }
    if (link.fd < 0 || link.hostGone || link.writeShut || conn.state !== "established") {
      conn.forwarded(h.len); // nobody to deliver to: consumed
      return;
    }
    if (link.pending.size > 0) {
      link.pending.push(this.#copyPayload(chain, memory, 0, h.len));
      return;
    }
    // Straight from guest memory into the socket; what it does not take waits, copied.
    let written = 0;
    let error = 0;
    forEachPiece(chain.segments, VSOCK_HEADER_SIZE, h.len, (gpa, len) => {
      const view = memory.slice(gpa, len);
      if (view === undefined) return false;
      const n = writeSome(link.fd, view);
      if (n < 0) {
        if (n !== WOULD_BLOCK) error = n;
        return false;
      }
      written += n;
      return n === len;
    });
    if (error !== 0) {
      this.#hostFailed(link, `write to the host socket failed (errno ${-error})`);
      return;
    }
    if (written > 0) conn.forwarded(written);
    if (written < h.len) {
      link.pending.push(this.#copyPayload(chain, memory, written, h.len - written));
    }
  }

  #copyPayload(chain: DescriptorChain, memory: GuestMemory, from: number, len: number): Uint8Array {
    const copy = new Uint8Array(len);
    chain.readFrom(memory, VSOCK_HEADER_SIZE + from, copy);
    return copy;
  }

  /** Carries out the guest's shutdown flags once its data reached the host. */
  #applyGuestShutdown(link: Link): void {
    const conn = link.conn;
    if (link.pending.size > 0 && !link.hostGone) return; // after the data
    if ((conn.peerShutdown & VsockShutdown.SEND) && !link.writeShut && link.fd >= 0) {
      link.writeShut = true;
      try {
        shutdownSocket(link.fd, SHUT_WR);
      } catch {
        // The host peer is gone already; the next event says so.
      }
    }
    if (conn.peerShutdown === VsockShutdown.BOTH) {
      // The clean end of a connection: the peer's SHUTDOWN is answered with RST.
      conn.oweReset();
      this.#closeHostSocket(link);
    }
  }

  #guestConnect(h: VsockHeader): void {
    const path = `${this.#params.udsPath}_${h.dstPort}`;
    const fd = connectNonBlocking(path);
    if (fd < 0) {
      log.debug(`vsock: guest port ${h.srcPort} -> host port ${h.dstPort}: ${path}: errno ${-fd}`);
      this.#resetUnknown(h);
      return;
    }
    const conn = new VsockConnection(h.dstPort, h.srcPort, this.#params.bufAlloc, "established");
    conn.updatePeerCredit(h.bufAlloc, h.fwdCnt);
    conn.oweResponse();
    const link = this.#addLink(conn, fd, false);
    this.#update(link);
  }

  #established(link: Link): void {
    this.#clearTimer(link);
    link.conn.state = "established";
    const answer = okLine(link.conn.hostPort);
    if (writeSome(link.fd, answer) !== answer.length) {
      this.#reset(link, "the host program did not take the OK line");
    }
  }

  /** RST for a packet that belongs to no connection (never in answer to an RST). */
  #resetUnknown(h: VsockHeader): void {
    if (h.op === VsockOp.RST) return;
    if (this.#orphanResets.length >= MAX_ORPHAN_RESETS) return;
    this.#orphanResets.push({
      srcCid: HOST_CID,
      dstCid: this.#params.guestCid,
      srcPort: h.dstPort,
      dstPort: h.srcPort,
      len: 0,
      type: VsockType.STREAM,
      op: VsockOp.RST,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
    });
  }

  // ---- host side -----------------------------------------------------------

  #addLink(conn: VsockConnection, fd: number, hostChosenPort: boolean): Link {
    const link: Link = {
      key: key(conn.hostPort, conn.guestPort),
      conn,
      fd,
      mask: -1,
      pending: new PendingOutput(),
      readable: false,
      readDone: false,
      hostGone: false,
      writeShut: false,
      timer: undefined,
      hostChosenPort,
    };
    this.#links.set(link.key, link);
    return link;
  }

  #acceptAll(): void {
    for (;;) {
      const fd = acceptNonBlocking(this.#params.listenFd);
      if (fd < 0) {
        if (fd !== WOULD_BLOCK) log.warn(`vsock: accept on ${this.#params.udsPath}: errno ${-fd}`);
        return;
      }
      const ctx = this.#ctx!;
      const timer = ctx.setTimer(this.#params.connectTimeoutMs, () => {
        log.debug(`vsock: host connection fd ${fd} sent no CONNECT line in time`);
        this.#endHandshake(fd);
        closeQuietly(fd);
      });
      this.#handshakes.set(fd, { fd, timer });
      ctx.watchFd(fd, EPOLLIN, () => this.#handshakeReadable(fd));
    }
  }

  #endHandshake(fd: number): void {
    const handshake = this.#handshakes.get(fd);
    if (!handshake) return;
    this.#handshakes.delete(fd);
    this.#ctx?.clearTimer(handshake.timer);
    this.#ctx?.unwatchFd(fd);
  }

  #handshakeReadable(fd: number): void {
    const n = peekSome(fd, this.#peek);
    if (n === WOULD_BLOCK) return;
    const line = n > 0
      ? parseConnectLine(this.#peek.subarray(0, n))
      : { kind: "invalid" as const, reason: n === 0 ? "closed" : `errno ${-n}` };
    if (line.kind === "incomplete") return;
    this.#endHandshake(fd);
    if (line.kind === "invalid") {
      log.debug(`vsock: host connection fd ${fd}: ${line.reason}`);
      closeQuietly(fd);
      return;
    }
    // Consume exactly the line: what follows is data for the guest.
    readSome(fd, this.#peek.subarray(0, line.length));
    const hostPort = this.#takeHostPort();
    const conn = new VsockConnection(hostPort, line.port, this.#params.bufAlloc, "connecting");
    conn.oweRequest();
    const link = this.#addLink(conn, fd, true);
    link.timer = this.#ctx!.setTimer(this.#params.connectTimeoutMs, () => {
      link.timer = undefined;
      this.#reset(link, `guest port ${line.port} did not answer in time`);
      this.#update(link);
    });
    this.#update(link);
  }

  #takeHostPort(): number {
    while (this.#usedHostPorts.has(this.#nextHostPort)) this.#advanceHostPort();
    const port = this.#nextHostPort;
    this.#usedHostPorts.add(port);
    this.#advanceHostPort();
    return port;
  }

  #advanceHostPort(): void {
    this.#nextHostPort = this.#nextHostPort >= 0xffff_fffe
      ? FIRST_HOST_PORT
      : this.#nextHostPort + 1;
  }

  #hostEvent(link: Link, events: number): void {
    if (link.fd < 0) return;
    if (events & EPOLLERR) {
      this.#hostFailed(link, "error on the host socket");
    } else if ((events & EPOLLHUP) && (pollFd(link.fd, 0, 0) & EPOLLHUP)) {
      // (Checked again: a number reused within one batch of events must not inherit a HUP.)
      this.#hostHungUp(link);
    } else {
      if (events & EPOLLIN) link.readable = true;
      if (events & EPOLLOUT) this.#flush(link);
    }
    this.#update(link);
  }

  /** The host peer closed its end: read what it left, then shut the connection down. */
  #hostHungUp(link: Link): void {
    link.hostGone = true;
    link.pending.clear();
    if (link.conn.state === "connecting") {
      this.#reset(link, "the host program left before the guest answered");
      return;
    }
    link.readable = !link.readDone;
    if (link.readDone) this.#hostFinished(link);
  }

  /** Nothing more will come from or go to the host: SHUTDOWN both ways, wait for the RST. */
  #hostFinished(link: Link): void {
    this.#closeHostSocket(link);
    link.conn.shutDown(VsockShutdown.BOTH);
    this.#clearTimer(link);
    link.timer = this.#ctx!.setTimer(this.#params.closeTimeoutMs, () => {
      link.timer = undefined;
      this.#reset(link, "no RST from the guest after SHUTDOWN");
      this.#update(link);
    });
  }

  #hostFailed(link: Link, why: string): void {
    this.#reset(link, why);
  }

  /** Ends the connection with an RST to the guest. */
  #reset(link: Link, why: string): void {
    log.debug(`vsock: reset ${link.key}: ${why}`);
    this.#clearTimer(link);
    link.conn.oweReset();
    link.pending.clear();
    this.#closeHostSocket(link);
  }

  #flush(link: Link): void {
    const { written, error } = link.pending.flush(link.fd);
    if (written > 0) link.conn.forwarded(written);
    if (error !== 0) {
      this.#hostFailed(link, `write to the host socket failed (errno ${-error})`);
      return;
    }
    if (link.pending.size === 0 && link.conn.peerShutdown !== 0) this.#applyGuestShutdown(link);
  }

  #closeHostSocket(link: Link): void {
    if (link.fd < 0) return;
    if (link.mask >= 0) this.#ctx?.unwatchFd(link.fd);
    closeQuietly(link.fd);
    link.fd = -1;
    link.mask = -1;
    link.readable = false;
  }

  #clearTimer(link: Link): void {
    if (link.timer !== undefined) this.#ctx?.clearTimer(link.timer);
    link.timer = undefined;
  }

  /** Removes a connection for good. */
  #forget(link: Link): void {
    this.#clearTimer(link);
    this.#closeHostSocket(link);
    this.#links.delete(link.key);
    this.#ready.delete(link);
    this.#urgent.delete(link);
    if (link.hostChosenPort) this.#usedHostPorts.delete(link.conn.hostPort);
  }

  #dropEverything(): void {
    for (const link of [...this.#links.values()]) this.#forget(link);
    for (const fd of [...this.#handshakes.keys()]) {
      this.#endHandshake(fd);
      closeQuietly(fd);
    }
    this.#orphanResets.length = 0;
  }

  // ---- what to watch, what to send -------------------------------------------

  /** Host data can go to the guest now. */
  #dataReady(link: Link): boolean {
    const conn = link.conn;
    return link.readable && link.fd >= 0 && conn.state === "established" &&
      (conn.peerShutdown & VsockShutdown.RCV) === 0 && conn.peerCredit() > 0;
  }

  /** Puts the link in the send turn or takes it out, and watches what it waits for. */
  #update(link: Link): void {
    if (!this.#links.has(link.key)) return;
    if (link.conn.owesUrgent) this.#urgent.add(link);
    else this.#urgent.delete(link);
    if (link.conn.owesControl || this.#dataReady(link)) this.#ready.add(link);
    else this.#ready.delete(link);
    this.#syncWatch(link);
  }

  #syncWatch(link: Link): void {
    if (link.fd < 0) return;
    let want = -1;
    if (!link.hostGone) {
      const conn = link.conn;
      want = 0; // HUP and ERR are reported even so
      if (
        conn.state === "established" && !link.readable && !link.readDone &&
        (conn.peerShutdown & VsockShutdown.RCV) === 0
      ) want |= EPOLLIN;
      if (link.pending.size > 0) want |= EPOLLOUT;
    }
    if (want === link.mask) return;
    const ctx = this.#ctx!;
    if (want < 0) ctx.unwatchFd(link.fd);
    else ctx.watchFd(link.fd, want, (events) => this.#hostEvent(link, events));
    link.mask = want;
  }

  /** Fills RX buffers while connections have packets for the guest. */
  #pump(): void {
    const ctx = this.#ctx;
    if (!ctx || this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#orphanResets.length > 0 || this.#urgent.size > 0 || this.#ready.size > 0) {
        const chain = this.#spareRx ?? ctx.pop(VsockQueue.RX);
        this.#spareRx = undefined;
        if (!chain) return; // queueReady comes when the guest adds buffers
        if (chain.error !== undefined || chain.writableLength() < VSOCK_HEADER_SIZE) {
          log.debug(`vsock: unusable RX chain ${chain.head}: ${chain.error ?? "too short"}`);
          ctx.complete(VsockQueue.RX, chain, 0);
          continue;
        }
        const orphan = this.#orphanResets.shift();
        if (orphan) {
          chain.writeTo(ctx.memory, 0, encodeVsockHeader(orphan, this.#headerOut));
          ctx.complete(VsockQueue.RX, chain, VSOCK_HEADER_SIZE);
          continue;
        }
        const turn = this.#urgent.size > 0 ? this.#urgent : this.#ready;
        const link: Link = turn.values().next().value!;
        this.#urgent.delete(link);
        this.#ready.delete(link);
        const used = this.#fill(link, chain);
        // 0: nothing to send after all (keep the buffer); -1: the buffer has no room for data.
        if (used !== 0) ctx.complete(VsockQueue.RX, chain, Math.max(used, 0));
        else this.#spareRx = chain;
        this.#update(link); // back at the end of the turn if it has more
      }
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * Writes one packet of `link` into `chain`; returns the used length, 0 when
   * there was nothing to send after all, -1 when the chain has no room for
   * the data that waits (a guest giving header-sized buffers).
   */
  #fill(link: Link, chain: DescriptorChain): number {
    const conn = link.conn;
    const memory = this.#ctx!.memory;
    const dataReady = this.#dataReady(link);
    const control = conn.nextControl(dataReady);
    if (control) {
      this.#writeHeader(chain, memory, link, control.op, 0, control.flags);
      if (control.op === VsockOp.RST) this.#forget(link);
      return VSOCK_HEADER_SIZE;
    }
    if (!dataReady) return 0;
    const room = Math.min(
      conn.peerCredit(),
      chain.writableLength() - VSOCK_HEADER_SIZE,
      VSOCK_MAX_PACKET_PAYLOAD,
    );
    if (room <= 0) return -1;
    const start = chain.readableLength() + VSOCK_HEADER_SIZE;
    let got = 0;
    let result = 0;
    forEachPiece(chain.segments, start, room, (gpa, len) => {
      const view = memory.slice(gpa, len);
      if (view === undefined) return false;
      const n = readSome(link.fd, view);
      if (n <= 0) {
        result = n;
        return false;
      }
      memory.markWritten(gpa, n);
      got += n;
      return n === len;
    });
    if (got === 0) {
      link.readable = false;
      if (result === 0) {
        link.readDone = true;
        if (link.hostGone) this.#hostFinished(link);
        else conn.shutDown(VsockShutdown.SEND);
      } else if (result !== WOULD_BLOCK) {
        this.#hostFailed(link, `read from the host socket failed (errno ${-result})`);
      }
      return 0;
    }
    this.#writeHeader(chain, memory, link, VsockOp.RW, got, 0);
    return VSOCK_HEADER_SIZE + got;
  }

  #writeHeader(
    chain: DescriptorChain,
    memory: GuestMemory,
    link: Link,
    op: number,
    len: number,
    flags: number,
  ): void {
    const conn = link.conn;
    const credit = conn.sent(op, len);
    chain.writeTo(
      memory,
      0,
      encodeVsockHeader({
        srcCid: HOST_CID,
        dstCid: this.#params.guestCid,
        srcPort: conn.hostPort,
        dstPort: conn.guestPort,
        len,
        type: VsockType.STREAM,
        op,
        flags,
        bufAlloc: credit.bufAlloc,
        fwdCnt: credit.fwdCnt,
      }, this.#headerOut),
    );
  }
}
