/**
 * The front-end end of a vhost-user connection: every front-end request as a
 * typed, synchronous method. Each call blocks until the back-end has answered
 * (or, for a request without an answer, until the message is sent); every
 * receive is preceded by a `poll` bounded by the client's timeout, so a
 * silent back-end gives a {@linkcode BackendTimeout}, never a hang.
 *
 * Once REPLY_ACK is negotiated, every request that has no reply of its own
 * carries NEED_REPLY and its u64 acknowledgement is checked: a non-zero one
 * throws {@linkcode BackendRefused} naming the request.
 *
 * @module
 */

import {
  closeQuietly,
  connectUnix,
  isErrno,
  POLLERR,
  pollFd,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  receiveMessage,
  sendMessage,
  socketUnix,
} from "../../ffi/mod.ts";
import {
  CONFIG_FLAG_WRITABLE,
  decodeConfig,
  decodeHeader,
  decodeInflightDesc,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeDeviceStateParams,
  encodeInflightDesc,
  encodeLogArea,
  encodeMemoryTable,
  encodeMessage,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringFdIndex,
  encodeVringState,
  FLAG_NEED_REPLY,
  FrontendRequest,
  HEADER_SIZE,
  INFLIGHT_DESC_SIZE,
  type InflightDesc,
  type LogArea,
  MAX_PAYLOAD_SIZE,
  type MemoryRegionDesc,
  type MessageHeader,
  ProtocolError,
  replyFlags,
  replyKind,
  requestName,
  VHOST_USER_VERSION,
  type VringAddress,
} from "../protocol/mod.ts";
import { BackendDisconnected, BackendRefused, BackendTimeout } from "./errors.ts";
import { sleepSync } from "./sleep.ts";

/** Default limit, in milliseconds, for connecting and for each reply. */
export const DEFAULT_TIMEOUT_MS = 5000;
/** Pause between connection attempts while the socket does not exist yet. */
const CONNECT_RETRY_MS = 10;
/** Most fds accepted with one reply (none is expected except for device state and inflight). */
const MAX_REPLY_FDS = 8;
/** SET_DEVICE_STATE_FD reply: bits 0-7 are the result, 0 meaning success. */
const DEVICE_STATE_RESULT_MASK = 0xffn;
/** SET_DEVICE_STATE_FD reply: bit 8 says the back-end returns no fd of its own. */
const DEVICE_STATE_NO_FD = 0x100n;

/** One reply read off the socket by {@linkcode VhostUserClient.receiveReply}. */
export interface VhostUserReply {
  /** The decoded header (flags already checked to be exactly REPLY | version 1). */
  header: MessageHeader;
  /** The payload bytes. */
  payload: Uint8Array;
  /** Fds that came with the reply; the caller owns them. */
  fds: number[];
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A connection to a vhost-user back-end, driven synchronously. */
export class VhostUserClient {
  /** The connected socket. */
  readonly fd: number;
  /** Limit in milliseconds for each reply (and for sending a message). */
  timeoutMs: number;
  #protocolFeatures = 0n;
  #closed = false;

  /**
   * Wraps a connected stream socket (for example one end of a socketpair in
   * a test); the client owns it from now on.
   */
  constructor(fd: number, timeoutMs: number = DEFAULT_TIMEOUT_MS) {
    this.fd = fd;
    this.timeoutMs = timeoutMs;
  }

  /**
   * Connects to the back-end listening on `path`, retrying while the socket
   * does not exist yet or nobody listens on it, for up to `timeoutMs`.
   * Throws {@linkcode BackendTimeout} when the time runs out and the
   * {@linkcode SyscallError} for any other failure (a path that is no socket).
   */
  static connect(path: string, timeoutMs: number = DEFAULT_TIMEOUT_MS): VhostUserClient {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const fd = socketUnix();
      try {
        connectUnix(fd, path);
        return new VhostUserClient(fd, timeoutMs);
      } catch (e) {
        closeQuietly(fd);
        const retryable = isErrno(e, "ENOENT") || isErrno(e, "ECONNREFUSED") ||
          isErrno(e, "EAGAIN");
        if (!retryable) throw e;
        if (performance.now() >= deadline) {
          const error = new BackendTimeout(`a back-end listening on ${path}`, timeoutMs);
          error.cause = e;
          throw error;
        }
        sleepSync(CONNECT_RETRY_MS);
      }
    }
  }

  /** Protocol features in force (set by a successful {@linkcode setProtocolFeatures}). */
  get protocolFeatures(): bigint {
    return this.#protocolFeatures;
  }

  // ---- features and ownership -------------------------------------------

  /** GET_FEATURES: the virtio features the back-end offers. */
  getFeatures(): bigint {
    return this.#u64Reply(FrontendRequest.GET_FEATURES);
  }

  /** SET_FEATURES: the virtio features the driver accepts. */
  setFeatures(features: bigint): void {
    this.request(FrontendRequest.SET_FEATURES, encodeU64(features));
  }

  /** SET_OWNER: claims the session. */
  setOwner(): void {
    this.request(FrontendRequest.SET_OWNER);
  }

  /** RESET_OWNER: the back-end forgets the session's rings and features. */
  resetOwner(): void {
    this.request(FrontendRequest.RESET_OWNER);
  }

  /** RESET_DEVICE (needs protocol feature RESET_DEVICE). */
  resetDevice(): void {
    this.request(FrontendRequest.RESET_DEVICE);
  }

  /** GET_PROTOCOL_FEATURES: the protocol features the back-end offers. */
  getProtocolFeatures(): bigint {
    return this.#u64Reply(FrontendRequest.GET_PROTOCOL_FEATURES);
  }

  /**
   * SET_PROTOCOL_FEATURES. The features apply to every later request: with
   * REPLY_ACK among them, later requests without a reply of their own are
   * acknowledged. (This message itself is never acknowledged, as in QEMU.)
   */
  setProtocolFeatures(features: bigint): void {
    this.request(FrontendRequest.SET_PROTOCOL_FEATURES, encodeU64(features));
    this.#protocolFeatures = features;
  }

  /** GET_QUEUE_NUM (needs MQ): how many queues the device has. */
  getQueueNum(): number {
    return Number(this.#u64Reply(FrontendRequest.GET_QUEUE_NUM));
  }

  /** GET_MAX_MEM_SLOTS (needs CONFIGURE_MEM_SLOTS). */
  getMaxMemSlots(): number {
    return Number(this.#u64Reply(FrontendRequest.GET_MAX_MEM_SLOTS));
  }

  // ---- memory -------------------------------------------------------------

  /** SET_MEM_TABLE: `fds[i]` backs `regions[i]` (the same fd may repeat). Fds stay open here. */
  setMemTable(regions: readonly MemoryRegionDesc[], fds: readonly number[]): void {
    if (regions.length !== fds.length) {
      throw new RangeError(`${regions.length} memory regions but ${fds.length} fds`);
    }
    this.request(FrontendRequest.SET_MEM_TABLE, encodeMemoryTable(regions), fds);
  }

  /** ADD_MEM_REG (needs CONFIGURE_MEM_SLOTS). The fd stays open here. */
  addMemReg(region: MemoryRegionDesc, fd: number): void {
    this.request(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(region), [fd]);
  }

  /**
   * ADD_MEM_REG for each of `regions` in order, all mapped from `fd` (for
   * example `SharedGuestMemory.splitRegionDescs`), one message each as QEMU
   * hot-plugs memory. Stops at the first refusal, which it throws.
   */
  addMemRegs(regions: readonly MemoryRegionDesc[], fd: number): void {
    for (const region of regions) this.addMemReg(region, fd);
  }

  /** REM_MEM_REG (needs CONFIGURE_MEM_SLOTS). */
  remMemReg(region: MemoryRegionDesc): void {
    this.request(FrontendRequest.REM_MEM_REG, encodeSingleRegion(region));
  }

  // ---- vrings -------------------------------------------------------------

  /** SET_VRING_NUM: the ring's size. */
  setVringNum(index: number, num: number): void {
    this.request(FrontendRequest.SET_VRING_NUM, encodeVringState({ index, num }));
  }

  /** SET_VRING_ADDR: ring addresses in this process's address space. */
  setVringAddr(address: VringAddress): void {
    this.request(FrontendRequest.SET_VRING_ADDR, encodeVringAddress(address));
  }

  /** SET_VRING_BASE: the next available index the back-end will read. */
  setVringBase(index: number, base: number): void {
    this.request(FrontendRequest.SET_VRING_BASE, encodeVringState({ index, num: base }));
  }

  /** GET_VRING_BASE: stops the ring and returns its next available index. */
  getVringBase(index: number): number {
    const reply = this.#ownReply(
      FrontendRequest.GET_VRING_BASE,
      encodeVringState({ index, num: 0 }),
    );
    const state = decodeVringState(reply);
    if (state.index !== index) {
      throw new ProtocolError(
        `GET_VRING_BASE reply is for ring ${state.index}, asked for ${index}`,
      );
    }
    return state.num;
  }

  /** SET_VRING_KICK: the kick eventfd, or `undefined` for the no-fd flag (the back-end polls). */
  setVringKick(index: number, fd: number | undefined): void {
    this.#ringFd(FrontendRequest.SET_VRING_KICK, index, fd);
  }

  /** SET_VRING_CALL: the call eventfd, or `undefined` for the no-fd flag (the driver polls). */
  setVringCall(index: number, fd: number | undefined): void {
    this.#ringFd(FrontendRequest.SET_VRING_CALL, index, fd);
  }

  /** SET_VRING_ERR: the error eventfd, or `undefined` for none. */
  setVringErr(index: number, fd: number | undefined): void {
    this.#ringFd(FrontendRequest.SET_VRING_ERR, index, fd);
  }

  /** SET_VRING_ENABLE. */
  setVringEnable(index: number, on: boolean): void {
    this.request(FrontendRequest.SET_VRING_ENABLE, encodeVringState({ index, num: on ? 1 : 0 }));
  }

  #ringFd(request: number, index: number, fd: number | undefined): void {
    const payload = encodeVringFdIndex({ index, noFd: fd === undefined });
    this.request(request, payload, fd === undefined ? [] : [fd]);
  }

  // ---- configuration space -------------------------------------------------

  /**
   * GET_CONFIG (needs CONFIG): `size` bytes of the configuration space from
   * `offset`. Throws BackendRefused when the back-end answers with an empty
   * payload, ProtocolError when it answers with another window.
   */
  getConfig(offset: number, size: number, flags: number = CONFIG_FLAG_WRITABLE): Uint8Array {
    const reply = this.#ownReply(
      FrontendRequest.GET_CONFIG,
      encodeConfig({ offset, size, flags, data: new Uint8Array(size) }),
    );
    const config = decodeConfig(reply);
    if (config.offset !== offset || config.size !== size) {
      throw new ProtocolError(
        `GET_CONFIG reply covers ${config.size} bytes at ${config.offset}, asked for ${size} at ${offset}`,
      );
    }
    return config.data;
  }

  /** SET_CONFIG (needs CONFIG): writes `data` at `offset` of the configuration space. */
  setConfig(offset: number, data: Uint8Array, flags: number = CONFIG_FLAG_WRITABLE): void {
    this.request(
      FrontendRequest.SET_CONFIG,
      encodeConfig({ offset, size: data.byteLength, flags, data }),
    );
  }

  // ---- dirty-page log ------------------------------------------------------

  /**
   * SET_LOG_BASE: shares the dirty-page bitmap, `area.mmapSize` bytes at
   * `area.mmapOffset` of `fd` (the fd stays open here). With LOG_SHMFD
   * negotiated the back-end answers with a u64 of its own: a non-zero one
   * (or an empty reply) throws BackendRefused.
   */
  setLogBase(area: LogArea, fd: number): void {
    const reply = this.request(FrontendRequest.SET_LOG_BASE, encodeLogArea(area), [fd]);
    if (reply === undefined) return; // no own reply without LOG_SHMFD (acked or not at all)
    if (reply.byteLength === 0) throw new BackendRefused("SET_LOG_BASE");
    if (reply.byteLength !== 8) {
      throw new ProtocolError(`SET_LOG_BASE reply is ${reply.byteLength} bytes, expected 8`);
    }
    const value = decodeU64(reply);
    if (value !== 0n) throw new BackendRefused("SET_LOG_BASE", value);
  }

  /** SET_LOG_FD: the eventfd the back-end signals after updating the log (stays open here). */
  setLogFd(fd: number): void {
    this.request(FrontendRequest.SET_LOG_FD, new Uint8Array(0), [fd]);
  }

  // ---- inflight tracking ----------------------------------------------------

  /**
   * GET_INFLIGHT_FD (needs INFLIGHT_SHMFD): asks for an inflight area for
   * `numQueues` queues of `queueSize` entries and returns the back-end's
   * description and the fd holding it (the caller owns it). Throws
   * BackendRefused when the back-end answers with no area (mmap_size 0),
   * ProtocolError when the reply is malformed or carries no single fd.
   */
  getInflightFd(numQueues: number, queueSize: number): { desc: InflightDesc; fd: number } {
    const reply = this.#exchange(
      FrontendRequest.GET_INFLIGHT_FD,
      encodeInflightDesc({ mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize }),
      [],
    );
    if (reply === undefined) throw new ProtocolError("GET_INFLIGHT_FD got no reply");
    try {
      if (reply.payload.byteLength !== INFLIGHT_DESC_SIZE) {
        throw new ProtocolError(
          `GET_INFLIGHT_FD reply is ${reply.payload.byteLength} bytes, expected ${INFLIGHT_DESC_SIZE}`,
        );
      }
      const desc = decodeInflightDesc(reply.payload);
      if (desc.mmapSize === 0n) {
        if (reply.fds.length !== 0) {
          throw new ProtocolError("GET_INFLIGHT_FD reply has no area but carries an fd");
        }
        throw new BackendRefused("GET_INFLIGHT_FD");
      }
      if (reply.fds.length !== 1) {
        throw new ProtocolError(
          `GET_INFLIGHT_FD reply carries ${reply.fds.length} fds, expected 1`,
        );
      }
      return { desc, fd: reply.fds.pop()! };
    } finally {
      reply.fds.forEach(closeQuietly);
    }
  }

  /**
   * SET_INFLIGHT_FD (needs INFLIGHT_SHMFD): hands the area back (the fd
   * stays open here). There is no reply; with REPLY_ACK a refusal throws
   * BackendRefused.
   */
  setInflightFd(desc: InflightDesc, fd: number): void {
    this.request(FrontendRequest.SET_INFLIGHT_FD, encodeInflightDesc(desc), [fd]);
  }

  // ---- device state -------------------------------------------------------

  /**
   * SET_DEVICE_STATE_FD (needs DEVICE_STATE): hands over `fd` (the write end
   * of a pipe for SAVE, the read end for LOAD) and returns the fd the
   * back-end prefers instead, if it sent one (the caller owns it). Throws
   * BackendRefused when the back-end reports failure.
   */
  setDeviceStateFd(direction: number, phase: number, fd: number): number | undefined {
    const reply = this.#exchange(
      FrontendRequest.SET_DEVICE_STATE_FD,
      encodeDeviceStateParams({ direction, phase }),
      [fd],
    );
    if (reply === undefined) throw new ProtocolError("SET_DEVICE_STATE_FD got no reply");
    try {
      if (reply.payload.byteLength === 0) throw new BackendRefused("SET_DEVICE_STATE_FD");
      const value = decodeU64(reply.payload);
      if ((value & DEVICE_STATE_RESULT_MASK) !== 0n) {
        throw new BackendRefused("SET_DEVICE_STATE_FD", value);
      }
      if ((value & DEVICE_STATE_NO_FD) !== 0n) return undefined;
      if (reply.fds.length !== 1) {
        throw new ProtocolError(
          `SET_DEVICE_STATE_FD reply promises an fd but carries ${reply.fds.length}`,
        );
      }
      return reply.fds.pop();
    } finally {
      reply.fds.forEach(closeQuietly);
    }
  }

  /** CHECK_DEVICE_STATE (needs DEVICE_STATE): throws BackendRefused unless the transfer succeeded. */
  checkDeviceState(): void {
    const value = this.#u64Reply(FrontendRequest.CHECK_DEVICE_STATE);
    if (value !== 0n) throw new BackendRefused("CHECK_DEVICE_STATE", value);
  }

  // ---- generic and low-level ----------------------------------------------

  /**
   * Sends any request and handles its answer the way the protocol says: sets
   * NEED_REPLY when REPLY_ACK is in force and the request has no reply of
   * its own, checks the acknowledgement, and returns the payload of an own
   * reply (`undefined` when the request has none). Fds stay open here.
   */
  request(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
  ): Uint8Array | undefined {
    const reply = this.#exchange(request, payload, fds);
    if (reply === undefined) return undefined;
    reply.fds.forEach(closeQuietly);
    return reply.payload;
  }

  /** Sends `request` and returns its reply (own or ack), or undefined when none comes. */
  #exchange(
    request: number,
    payload: Uint8Array,
    fds: readonly number[],
  ): VhostUserReply | undefined {
    // NEED_REPLY only where an acknowledgement will actually come back.
    const ackWanted =
      replyKind(request, VHOST_USER_VERSION | FLAG_NEED_REPLY, this.#protocolFeatures) === "ack";
    const flags = VHOST_USER_VERSION | (ackWanted ? FLAG_NEED_REPLY : 0);
    const kind = replyKind(request, flags, this.#protocolFeatures);
    this.sendRaw(encodeMessage(request, flags, payload), fds);
    if (kind === "none") return undefined;
    const reply = this.receiveReply(request);
    if (kind === "own") return reply;
    reply.fds.forEach(closeQuietly);
    if (reply.payload.byteLength !== 8) {
      throw new ProtocolError(
        `${requestName(request)} ack is ${reply.payload.byteLength} bytes, expected 8`,
      );
    }
    const ack = decodeU64(reply.payload);
    if (ack !== 0n) throw new BackendRefused(requestName(request), ack);
    return undefined;
  }

  #ownReply(request: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    const reply = this.request(request, payload);
    if (reply === undefined) throw new ProtocolError(`${requestName(request)} got no reply`);
    if (reply.byteLength === 0) throw new BackendRefused(requestName(request));
    return reply;
  }

  #u64Reply(request: number): bigint {
    const reply = this.#ownReply(request);
    if (reply.byteLength !== 8) {
      throw new ProtocolError(
        `${requestName(request)} reply is ${reply.byteLength} bytes, expected 8`,
      );
    }
    return decodeU64(reply);
  }

  /**
   * Sends bytes as they are (a whole message, or deliberately broken ones in
   * hostile tests) with `fds` attached to the first byte. Throws
   * BackendDisconnected when the back-end has closed the connection.
   */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.#checkOpen();
    const deadline = performance.now() + this.timeoutMs;
    let sent = 0;
    while (sent < bytes.byteLength) {
      this.#waitFor(POLLOUT, deadline, "room in the socket to send a message");
      try {
        sent += sendMessage(this.fd, bytes.subarray(sent), sent === 0 ? fds : []);
      } catch (e) {
        if (isErrno(e, "EPIPE") || isErrno(e, "ECONNRESET")) {
          throw new BackendDisconnected(`while sending (${errorText(e)})`);
        }
        throw e;
      }
    }
  }

  /** Polls until `events` is ready; throws BackendTimeout or BackendDisconnected. */
  #waitFor(events: number, deadline: number, what: string): void {
    for (;;) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new BackendTimeout(what, this.timeoutMs);
      const revents = pollFd(this.fd, events, Math.ceil(remaining));
      if ((revents & events) !== 0) return;
      // Hang-up or error without the wanted event: the peer is gone.
      if ((revents & (POLLHUP | POLLERR | POLLNVAL)) !== 0) {
        throw new BackendDisconnected(`while waiting for ${what}`);
      }
    }
  }

  /**
   * Reads one reply, waiting at most `timeoutMs` for all of it. Checks that
   * its size is within the protocol limit (otherwise the connection is
   * beyond repair), then, once the whole message is read, that its flags are
   * exactly REPLY | version 1 and that it answers `expectedRequest` (when
   * given). Throws BackendTimeout, BackendDisconnected or ProtocolError.
   */
  receiveReply(expectedRequest?: number): VhostUserReply {
    this.#checkOpen();
    const deadline = performance.now() + this.timeoutMs;
    const what = expectedRequest === undefined
      ? "a reply"
      : `the reply to ${requestName(expectedRequest)}`;
    const fds: number[] = [];
    try {
      const headerBytes = new Uint8Array(HEADER_SIZE);
      this.#receiveExactly(headerBytes, fds, deadline, what);
      const header = decodeHeader(headerBytes);
      if (header.size > MAX_PAYLOAD_SIZE) {
        // The stream cannot be resynchronised after this.
        throw new ProtocolError(`${what}: announces ${header.size} payload bytes`);
      }
      // Read the whole message before judging it, so that the next reply is framed right.
      const payload = new Uint8Array(header.size);
      this.#receiveExactly(payload, fds, deadline, what);
      if (header.flags !== replyFlags()) {
        throw new ProtocolError(
          `${what}: flags 0x${header.flags.toString(16)}, expected 0x${replyFlags().toString(16)}`,
        );
      }
      if (expectedRequest !== undefined && header.request !== expectedRequest) {
        throw new ProtocolError(`${what}: got a reply to ${requestName(header.request)}`);
      }
      return { header, payload, fds };
    } catch (e) {
      fds.forEach(closeQuietly);
      throw e;
    }
  }

  #receiveExactly(buf: Uint8Array, fds: number[], deadline: number, what: string): void {
    let got = 0;
    while (got < buf.byteLength) {
      this.#waitFor(POLLIN, deadline, what);
      let n: number;
      try {
        const r = receiveMessage(this.fd, buf.subarray(got), MAX_REPLY_FDS);
        fds.push(...r.fds);
        n = r.bytes;
      } catch (e) {
        if (isErrno(e, "ECONNRESET")) {
          throw new BackendDisconnected(`while waiting for ${what} (${errorText(e)})`);
        }
        throw e;
      }
      if (n === 0) throw new BackendDisconnected(`while waiting for ${what}`);
      got += n;
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("the vhost-user client is closed");
  }

  /** Closes the connection (idempotent); the back-end sees the front-end leave. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.fd);
  }
}
