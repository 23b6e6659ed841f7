/**
 * The one dispatcher: every received message is validated (size, fds,
 * feature gating) before any handler runs, decoded, handed to the back-end,
 * and answered as the protocol says (own reply, REPLY_ACK, or nothing).
 *
 * Fds arriving with a message belong to the dispatcher until a handler takes
 * them; whatever no handler took is closed here, on every path.
 *
 * @module
 */

import { closeQuietly } from "../../ffi/mod.ts";
import {
  decodeConfig,
  decodeDeviceStateParams,
  decodeInflightDesc,
  decodeLogArea,
  decodeMemoryTable,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddress,
  decodeVringFdIndex,
  decodeVringState,
  encodeConfig,
  encodeInflightDesc,
  encodeReply,
  encodeU64,
  encodeVringState,
  FrontendRequest,
  type MessageHeader,
  ProtocolError,
  replyKind,
  requestName,
  validateMessage,
} from "../protocol/mod.ts";
import { log, logEnabled } from "../log.ts";
import { MAX_MEM_SLOTS, RequestError, type VhostUserBackend } from "./backend.ts";
import { NO_FD } from "./worker_protocol.ts";
import { DEVICE_STATE_NO_FD } from "./device_state_session.ts";

/** One message as read from the socket. */
export interface IncomingMessage {
  /** Decoded header. */
  header: MessageHeader;
  /** Payload bytes (header.size of them). */
  payload: Uint8Array;
  /** Fds that came with it; owned by the dispatcher. */
  fds: number[];
}

/** What to send back: a whole encoded message and the fds that go with it (sent, then closed). */
export type DispatchResult = { bytes: Uint8Array; fds: number[] } | undefined;

/** An own reply that carries fds. */
interface ReplyWithFds {
  payload: Uint8Array;
  fds: number[];
}

/** A handler returns its own reply payload (with fds, if any), or nothing. */
type Handler = (
  msg: IncomingMessage,
) => Promise<Uint8Array | ReplyWithFds | void> | Uint8Array | ReplyWithFds | void;

/** Own replies that report failure in their payload instead of being empty. */
const FAILURE_REPLIES: ReadonlyMap<number, Uint8Array> = new Map([
  // Error code 1 and "no fd returned".
  [FrontendRequest.SET_DEVICE_STATE_FD, encodeU64(1 | DEVICE_STATE_NO_FD)],
  [FrontendRequest.CHECK_DEVICE_STATE, encodeU64(1)],
  [FrontendRequest.SET_LOG_BASE, encodeU64(1)],
  // mmap_size 0 and no fd: QEMU then goes on without inflight tracking.
  [
    FrontendRequest.GET_INFLIGHT_FD,
    encodeInflightDesc({ mmapSize: 0n, mmapOffset: 0n, numQueues: 0, queueSize: 0 }),
  ],
]);

function reply(request: number, payload: Uint8Array, fds: number[] = []): DispatchResult {
  return { bytes: encodeReply(request, payload), fds };
}

/** Routes messages to a VhostUserBackend. */
export class Dispatcher {
  readonly #backend: VhostUserBackend;
  readonly #handlers: Map<number, Handler>;

  /** A dispatcher for one connection's back-end. */
  constructor(backend: VhostUserBackend) {
    this.#backend = backend;
    this.#handlers = this.#buildTable();
  }

  /** Handles one message; returns the encoded reply to send, if any. Never throws. */
  async dispatch(msg: IncomingMessage): Promise<DispatchResult> {
    const { header } = msg;
    const name = requestName(header.request);
    const negotiated = this.#backend.negotiatedProtocolFeatures();
    const kind = replyKind(header.request, header.flags, negotiated);
    if (logEnabled("debug")) log.debug(`<- ${name} (${header.size} bytes, ${msg.fds.length} fds)`);
    try {
      const invalid = validateMessage(header, msg.payload, msg.fds.length, negotiated);
      if (invalid !== null) throw new RequestError(invalid);
      const handler = this.#handlers.get(header.request);
      if (!handler) throw new RequestError(`${name} is not supported by this back-end`);
      const result = await handler(msg);
      if (kind === "own") {
        if (result instanceof Uint8Array) return reply(header.request, result);
        if (result) return reply(header.request, result.payload, result.fds);
        return reply(header.request, new Uint8Array(0));
      }
      // A reply fd nobody will receive must not leak.
      if (result && !(result instanceof Uint8Array)) result.fds.forEach(closeQuietly);
      if (kind === "ack") return reply(header.request, encodeU64(0));
      return undefined;
    } catch (e) {
      const reason = e instanceof RequestError || e instanceof ProtocolError
        ? e.message
        : `internal error: ${e instanceof Error ? e.stack ?? e.message : e}`;
      log.warn(`${name} failed: ${reason}`);
      // An empty own reply tells the front-end the request failed (vhost-user.rst, GET_CONFIG),
      // unless the reply has a failure value of its own.
      if (kind === "own") {
        return reply(header.request, FAILURE_REPLIES.get(header.request) ?? new Uint8Array(0));
      }
      if (kind === "ack") return reply(header.request, encodeU64(1));
      return undefined;
    } finally {
      // Handlers that keep an fd replace it in the array with NO_FD.
      for (const fd of msg.fds) if (fd !== NO_FD) closeQuietly(fd);
    }
  }

  #buildTable(): Map<number, Handler> {
    const b = this.#backend;
    const R = FrontendRequest;
    const u64 = (m: IncomingMessage) => decodeU64(m.payload);
    return new Map<number, Handler>([
      [R.GET_FEATURES, () => encodeU64(b.offeredFeatures())],
      [R.SET_FEATURES, (m) => b.setFeatures(u64(m))],
      [R.SET_OWNER, () => b.setOwner()],
      [R.RESET_OWNER, () => b.reset()],
      [R.RESET_DEVICE, () => b.reset()],
      [R.GET_PROTOCOL_FEATURES, () => encodeU64(b.offeredProtocolFeatures())],
      [R.SET_PROTOCOL_FEATURES, (m) => b.setProtocolFeatures(u64(m))],
      [R.GET_QUEUE_NUM, () => encodeU64(b.queueCount())],
      [R.GET_MAX_MEM_SLOTS, () => encodeU64(MAX_MEM_SLOTS)],
      [R.SET_MEM_TABLE, (m) => b.setMemTable(decodeMemoryTable(m.payload), takeAll(m))],
      [R.ADD_MEM_REG, (m) => b.addMemRegion(decodeSingleRegion(m.payload), takeOne(m))],
      [R.REM_MEM_REG, (m) => b.removeMemRegion(decodeSingleRegion(m.payload))],
      [R.SET_VRING_NUM, (m) => b.setVringNum(decodeVringState(m.payload))],
      [R.SET_VRING_ADDR, (m) => b.setVringAddr(decodeVringAddress(m.payload))],
      [R.SET_VRING_BASE, (m) => b.setVringBase(decodeVringState(m.payload))],
      [R.GET_VRING_BASE, async (m) => {
        const { index } = decodeVringState(m.payload);
        return encodeVringState(await b.getVringBase(index));
      }],
      [R.SET_VRING_KICK, (m) => withRingFd(m, (i, fd) => b.setVringKick(i, fd))],
      [R.SET_VRING_CALL, (m) => withRingFd(m, (i, fd) => b.setVringCall(i, fd))],
      [R.SET_VRING_ERR, (m) => withRingFd(m, (i, fd) => b.setVringErr(i, fd))],
      [R.SET_VRING_ENABLE, (m) => b.setVringEnable(decodeVringState(m.payload))],
      [R.GET_CONFIG, (m) => encodeConfig(b.getConfig(decodeConfig(m.payload)))],
      [R.SET_CONFIG, (m) => b.setConfig(decodeConfig(m.payload))],
      [R.SET_LOG_BASE, async (m) => {
        if (m.fds.length === 0) {
          throw new RequestError("a log in guest memory is not supported: negotiate LOG_SHMFD");
        }
        await b.setLogBase(decodeLogArea(m.payload), takeOne(m));
        return encodeU64(0);
      }],
      [R.SET_LOG_FD, (m) => b.setLogFd(takeOne(m))],
      [R.SET_DEVICE_STATE_FD, async (m) => {
        const answer = await b.setDeviceStateFd(decodeDeviceStateParams(m.payload), takeOne(m));
        const fds = answer.fd === undefined ? [] : [answer.fd];
        return { payload: encodeU64(answer.value), fds };
      }],
      [R.CHECK_DEVICE_STATE, async () => encodeU64(await b.checkDeviceState())],
      [R.GET_INFLIGHT_FD, (m) => {
        const area = b.getInflightFd(decodeInflightDesc(m.payload));
        return { payload: encodeInflightDesc(area.desc), fds: [area.fd] };
      }],
      [R.SET_INFLIGHT_FD, (m) => b.setInflightFd(decodeInflightDesc(m.payload), takeOne(m))],
    ]);
  }
}

/** Takes every fd of a message (the handler owns them now). */
function takeAll(m: IncomingMessage): number[] {
  const fds = [...m.fds];
  m.fds.fill(NO_FD);
  return fds;
}

/** Takes the single fd of a message. */
function takeOne(m: IncomingMessage): number {
  const fd = m.fds[0];
  m.fds[0] = NO_FD;
  return fd;
}

/** Decodes a KICK/CALL/ERR payload and hands its fd (or NO_FD for the no-fd flag) over. */
function withRingFd(
  m: IncomingMessage,
  apply: (index: number, fd: number) => Promise<void>,
): Promise<void> {
  const { index, noFd } = decodeVringFdIndex(m.payload);
  return apply(index, noFd ? NO_FD : takeOne(m));
}
