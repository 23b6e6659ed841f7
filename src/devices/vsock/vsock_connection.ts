/**
 * One vsock stream connection as the virtio spec (§5.10.6) sees it, without
 * any host socket: its state, credit accounting in both directions, shutdown
 * flags and the control packets it owes the guest.
 *
 * Credit (§5.10.6.3): each side advertises `buf_alloc` (its receive buffer
 * for the connection) and `fwd_cnt` (bytes it has consumed from it, a
 * free-running u32) in every packet. A sender may have at most
 * `peer_buf_alloc - (tx_cnt - peer_fwd_cnt)` bytes unconsumed at the peer.
 * Here "consumed" means written to the host socket, so the bytes waiting for
 * the host peer are `rx_cnt - fwd_cnt`, never more than `buf_alloc`.
 *
 * @module
 */

import { VsockOp, VsockShutdown } from "./vsock_spec.ts";

/** Where a connection is in its life. */
export type VsockConnectionState =
  /** Host-initiated: REQUEST owed or sent to the guest, no RESPONSE yet. */
  | "connecting"
  /** Data flows (subject to shutdown flags). */
  | "established"
  /** Both directions are shut down; waiting for the guest's RST (or a timeout). */
  | "closing";

/** A control packet the connection owes the guest. */
export interface ControlPacket {
  /** VsockOp value. */
  op: number;
  /** SHUTDOWN flags (0 for other operations). */
  flags: number;
}

const Owed = {
  RST: 1,
  RESPONSE: 2,
  REQUEST: 4,
  SHUTDOWN: 8,
  CREDIT_UPDATE: 16,
  CREDIT_REQUEST: 32,
} as const;

/** The bookkeeping of one connection, keyed by (host port, guest port). */
export class VsockConnection {
  /** The host side's port (the port the guest connected to, or one vhostd chose). */
  readonly hostPort: number;
  /** The guest side's port. */
  readonly guestPort: number;
  /** Our receive buffer for this connection, as advertised to the guest. */
  readonly bufAlloc: number;
  /** Life-cycle state. */
  state: VsockConnectionState;
  /** Bytes received from the guest (free-running u32). */
  rxCnt = 0;
  /** Bytes of guest data written to the host socket (free-running u32). */
  fwdCnt = 0;
  /** The fwd_cnt value the guest saw last. */
  sentFwdCnt = 0;
  /** Bytes sent to the guest (free-running u32). */
  txCnt = 0;
  /** The guest's receive buffer. */
  peerBufAlloc = 0;
  /** The guest's consumed count. */
  peerFwdCnt = 0;
  /** SHUTDOWN flags the guest sent (VsockShutdown bits, cumulative). */
  peerShutdown = 0;
  /** SHUTDOWN flags sent or owed to the guest (cumulative). */
  ourShutdown = 0;
  #owed = 0;

  /** A connection in `state`, advertising `bufAlloc`. */
  constructor(hostPort: number, guestPort: number, bufAlloc: number, state: VsockConnectionState) {
    this.hostPort = hostPort;
    this.guestPort = guestPort;
    this.bufAlloc = bufAlloc;
    this.state = state;
  }

  /** Takes the credit fields every guest packet carries. */
  updatePeerCredit(bufAlloc: number, fwdCnt: number): void {
    this.peerBufAlloc = bufAlloc >>> 0;
    this.peerFwdCnt = fwdCnt >>> 0;
  }

  /** Bytes the guest can take now (0 when its buffer is full or shrank under what is in flight). */
  peerCredit(): number {
    const inFlight = (this.txCnt - this.peerFwdCnt) >>> 0;
    return inFlight >= this.peerBufAlloc ? 0 : this.peerBufAlloc - inFlight;
  }

  /** Guest bytes received and not yet written to the host. */
  get buffered(): number {
    return (this.rxCnt - this.fwdCnt) >>> 0;
  }

  /**
   * Accounts `len` payload bytes from the guest; false (nothing counted) when
   * they exceed the credit we gave, a protocol violation.
   */
  receive(len: number): boolean {
    if (this.buffered + len > this.bufAlloc) return false;
    this.rxCnt = (this.rxCnt + len) >>> 0;
    return true;
  }

  /** `n` buffered bytes reached the host socket; owes a credit update when the guest needs one. */
  forwarded(n: number): void {
    this.fwdCnt = (this.fwdCnt + n) >>> 0;
    if (this.creditUpdateDue()) this.#owed |= Owed.CREDIT_UPDATE;
  }

  /**
   * Whether the guest should hear about freed space: it believes less than
   * half of our buffer free, and either a quarter of the buffer was freed
   * since it last heard, or everything was (so a guest waiting for credit is
   * never left waiting while we have room).
   */
  creditUpdateDue(): boolean {
    if (this.fwdCnt === this.sentFwdCnt) return false;
    const guestViewFree = this.bufAlloc - ((this.rxCnt - this.sentFwdCnt) >>> 0);
    if (guestViewFree >= this.bufAlloc / 2) return false;
    const freedSince = (this.fwdCnt - this.sentFwdCnt) >>> 0;
    return freedSince >= this.bufAlloc / 4 || this.buffered === 0;
  }

  /** The guest asked for our credit (CREDIT_REQUEST). */
  oweCreditUpdate(): void {
    this.#owed |= Owed.CREDIT_UPDATE;
  }

  /** Asks the guest for its credit (CREDIT_REQUEST). */
  oweCreditRequest(): void {
    this.#owed |= Owed.CREDIT_REQUEST;
  }

  /** A guest-initiated connection was accepted: RESPONSE owed. */
  oweResponse(): void {
    this.#owed |= Owed.RESPONSE;
  }

  /** A host-initiated connection: REQUEST owed. */
  oweRequest(): void {
    this.#owed |= Owed.REQUEST;
  }

  /** The connection is torn down: RST owed, everything else forgotten. */
  oweReset(): void {
    this.#owed = Owed.RST;
  }

  /** Whether an RST is owed (the connection ends once it is sent). */
  get resetOwed(): boolean {
    return (this.#owed & Owed.RST) !== 0;
  }

  /**
   * We will send (SEND) or receive (RCV) no more: SHUTDOWN owed with the new
   * flags, unless they were sent already. Both directions shut moves the
   * connection to "closing".
   */
  shutDown(flags: number): void {
    const added = flags & ~this.ourShutdown & VsockShutdown.BOTH;
    if (added === 0) return;
    this.ourShutdown |= added;
    this.#owed |= Owed.SHUTDOWN;
    if (this.ourShutdown === VsockShutdown.BOTH) this.state = "closing";
  }

  /**
   * An RST, RESPONSE or REQUEST is owed: these go before any connection's
   * data (a guest's connect() waits for the RESPONSE with a timeout).
   */
  get owesUrgent(): boolean {
    return (this.#owed & (Owed.RST | Owed.RESPONSE | Owed.REQUEST)) !== 0;
  }

  /** Control packets are owed. */
  get owesControl(): boolean {
    return this.#owed !== 0;
  }

  /**
   * The next control packet to send, in the order the guest must see them:
   * RST ends everything; RESPONSE or REQUEST open the connection and precede
   * data; when `dataWaiting`, data goes before SHUTDOWN (data read before
   * the host's EOF belongs before it) and before credit packets (every data
   * packet carries our credit anyway). Undefined when nothing is owed now.
   */
  nextControl(dataWaiting: boolean): ControlPacket | undefined {
    const owed = this.#owed;
    if (owed & Owed.RST) return { op: VsockOp.RST, flags: 0 };
    if (owed & Owed.RESPONSE) return { op: VsockOp.RESPONSE, flags: 0 };
    if (owed & Owed.REQUEST) return { op: VsockOp.REQUEST, flags: 0 };
    if (dataWaiting) return undefined;
    if (owed & Owed.SHUTDOWN) return { op: VsockOp.SHUTDOWN, flags: this.ourShutdown };
    if (owed & Owed.CREDIT_UPDATE) return { op: VsockOp.CREDIT_UPDATE, flags: 0 };
    if (owed & Owed.CREDIT_REQUEST) return { op: VsockOp.CREDIT_REQUEST, flags: 0 };
    return undefined;
  }

  /**
   * Records that a packet of `op` with `len` payload bytes goes to the guest
   * now: it carries our current fwd_cnt (so no separate credit update is owed
   * any more), and data counts against the guest's credit. Returns the
   * credit fields to put in its header.
   */
  sent(op: number, len: number): { bufAlloc: number; fwdCnt: number } {
    switch (op) {
      case VsockOp.RST:
        this.#owed = 0;
        break;
      case VsockOp.RESPONSE:
        this.#owed &= ~Owed.RESPONSE;
        break;
      case VsockOp.REQUEST:
        this.#owed &= ~Owed.REQUEST;
        break;
      case VsockOp.SHUTDOWN:
        this.#owed &= ~Owed.SHUTDOWN;
        break;
      case VsockOp.CREDIT_REQUEST:
        this.#owed &= ~Owed.CREDIT_REQUEST;
        break;
      case VsockOp.RW:
        this.txCnt = (this.txCnt + len) >>> 0;
        break;
    }
    this.#owed &= ~Owed.CREDIT_UPDATE;
    this.sentFwdCnt = this.fwdCnt;
    return { bufAlloc: this.bufAlloc, fwdCnt: this.fwdCnt };
  }
}
