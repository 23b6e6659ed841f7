/**
 * What each front-end request looks like on the wire: payload size, fds,
 * the protocol feature that makes it legal, and whether it has its own reply.
 *
 * Requests vhostd does not implement (crypto, postcopy, IOTLB, GPU,
 * shared objects…) still have an entry, so that the dispatcher reads them
 * whole and answers with a clean error instead of losing framing.
 *
 * @module
 */

import { FLAG_NEED_REPLY } from "./header.ts";
import { hasBit, ProtocolFeature } from "./features.ts";
import {
  CONFIG_HEADER_SIZE,
  DEVICE_STATE_PARAMS_SIZE,
  INFLIGHT_DESC_SIZE,
  LOG_AREA_SIZE,
  MEMORY_TABLE_HEADER_SIZE,
  SINGLE_REGION_SIZE,
  U64_SIZE,
  VRING_ADDRESS_SIZE,
  VRING_STATE_SIZE,
} from "./payloads.ts";
import { FrontendRequest, type FrontendRequestName } from "./requests.ts";

/** How long a request's payload may be. */
export type PayloadRule =
  | { kind: "empty" }
  | { kind: "exact"; size: number }
  | { kind: "min"; size: number }
  | { kind: "any" };

/**
 * How many fds travel with a request:
 * - `"none"`: no fd;
 * - `"one"`: exactly one;
 * - `"optional-by-nofd"`: SET_VRING_KICK/CALL/ERR, exactly one unless bit 8 of
 *   the u64 payload is set, then none;
 * - `"per-region"`: SET_MEM_TABLE, one per region in order;
 * - `"zero-or-one"`: at most one (see `fdFeature` for when it is required).
 */
export type FdRule = "none" | "one" | "optional-by-nofd" | "per-region" | "zero-or-one";

/** Wire description of one front-end request. */
export interface RequestSpec {
  /** Request number. */
  request: number;
  /** Request name without the `VHOST_USER_` prefix. */
  name: string;
  /** Allowed payload length. */
  payload: PayloadRule;
  /** Allowed fds. */
  fds: FdRule;
  /** Protocol feature bit that must be negotiated for the request to be legal. */
  protocolFeature?: number;
  /**
   * For a `"zero-or-one"` fd: the protocol feature under which the fd is
   * required; without it an fd is refused (SET_LOG_BASE and LOG_SHMFD).
   */
  fdFeature?: number;
  /**
   * The request has its own reply (GET_*, SET_DEVICE_STATE_FD,
   * CHECK_DEVICE_STATE, SET_LOG_BASE, ...), so REPLY_ACK does not apply.
   */
  hasReply: boolean;
  /** The own reply is only sent when this protocol feature is negotiated. */
  replyFeature?: number;
}

function rule(r: PayloadRule): PayloadRule {
  return Object.freeze(r);
}

const EMPTY = rule({ kind: "empty" });
const ANY = rule({ kind: "any" });
const U64 = rule({ kind: "exact", size: U64_SIZE });
const VRING_STATE = rule({ kind: "exact", size: VRING_STATE_SIZE });
const CONFIG = rule({ kind: "min", size: CONFIG_HEADER_SIZE });
const SINGLE_REGION = rule({ kind: "exact", size: SINGLE_REGION_SIZE });
const INFLIGHT = rule({ kind: "exact", size: INFLIGHT_DESC_SIZE });
/** VhostUserShared: one 16-byte UUID. */
const SHARED_OBJECT_SIZE = 16;

type SpecFields = Omit<RequestSpec, "request" | "name">;

function entry(
  payload: PayloadRule,
  fds: FdRule,
  hasReply: boolean,
  extra: Partial<SpecFields> = {},
): SpecFields {
  return { payload, fds, hasReply, ...extra };
}

const F = ProtocolFeature;

// Sizes and fds follow vhost-user.rst and what QEMU's hw/virtio/vhost-user.c sends.
const FIELDS: Record<FrontendRequestName, SpecFields> = {
  GET_FEATURES: entry(EMPTY, "none", true),
  SET_FEATURES: entry(U64, "none", false),
  SET_OWNER: entry(EMPTY, "none", false),
  RESET_OWNER: entry(EMPTY, "none", false),
  SET_MEM_TABLE: entry(rule({ kind: "min", size: MEMORY_TABLE_HEADER_SIZE }), "per-region", false),
  // The spec text says "u64" but QEMU and libvhost-user use the 16-byte log description.
  SET_LOG_BASE: entry(rule({ kind: "exact", size: LOG_AREA_SIZE }), "zero-or-one", true, {
    fdFeature: F.LOG_SHMFD,
    replyFeature: F.LOG_SHMFD,
  }),
  SET_LOG_FD: entry(EMPTY, "one", false),
  SET_VRING_NUM: entry(VRING_STATE, "none", false),
  SET_VRING_ADDR: entry(rule({ kind: "exact", size: VRING_ADDRESS_SIZE }), "none", false),
  SET_VRING_BASE: entry(VRING_STATE, "none", false),
  GET_VRING_BASE: entry(VRING_STATE, "none", true),
  SET_VRING_KICK: entry(U64, "optional-by-nofd", false),
  SET_VRING_CALL: entry(U64, "optional-by-nofd", false),
  SET_VRING_ERR: entry(U64, "optional-by-nofd", false),
  GET_PROTOCOL_FEATURES: entry(EMPTY, "none", true),
  SET_PROTOCOL_FEATURES: entry(U64, "none", false),
  GET_QUEUE_NUM: entry(EMPTY, "none", true, { protocolFeature: F.MQ }),
  SET_VRING_ENABLE: entry(VRING_STATE, "none", false),
  SEND_RARP: entry(U64, "none", false, { protocolFeature: F.RARP }),
  NET_SET_MTU: entry(U64, "none", false, { protocolFeature: F.MTU }),
  SET_BACKEND_REQ_FD: entry(EMPTY, "one", false, { protocolFeature: F.BACKEND_REQ }),
  // Gated by the virtio feature ACCESS_PLATFORM, not a protocol feature; always answered.
  IOTLB_MSG: entry(ANY, "none", true),
  SET_VRING_ENDIAN: entry(VRING_STATE, "none", false, { protocolFeature: F.CROSS_ENDIAN }),
  GET_CONFIG: entry(CONFIG, "none", true, { protocolFeature: F.CONFIG }),
  SET_CONFIG: entry(CONFIG, "none", false, { protocolFeature: F.CONFIG }),
  CREATE_CRYPTO_SESSION: entry(ANY, "none", true, { protocolFeature: F.CRYPTO_SESSION }),
  CLOSE_CRYPTO_SESSION: entry(U64, "none", false, { protocolFeature: F.CRYPTO_SESSION }),
  POSTCOPY_ADVISE: entry(EMPTY, "none", true, { protocolFeature: F.PAGEFAULT }),
  POSTCOPY_LISTEN: entry(EMPTY, "none", false, { protocolFeature: F.PAGEFAULT }),
  POSTCOPY_END: entry(EMPTY, "none", true, { protocolFeature: F.PAGEFAULT }),
  // The request carries num_queues and queue_size; the reply the area and its fd.
  GET_INFLIGHT_FD: entry(INFLIGHT, "none", true, { protocolFeature: F.INFLIGHT_SHMFD }),
  SET_INFLIGHT_FD: entry(INFLIGHT, "one", false, { protocolFeature: F.INFLIGHT_SHMFD }),
  GPU_SET_SOCKET: entry(EMPTY, "one", false),
  RESET_DEVICE: entry(EMPTY, "none", false, { protocolFeature: F.RESET_DEVICE }),
  VRING_KICK: entry(VRING_STATE, "none", false, { protocolFeature: F.INBAND_NOTIFICATIONS }),
  GET_MAX_MEM_SLOTS: entry(EMPTY, "none", true, { protocolFeature: F.CONFIGURE_MEM_SLOTS }),
  ADD_MEM_REG: entry(SINGLE_REGION, "one", false, { protocolFeature: F.CONFIGURE_MEM_SLOTS }),
  // The spec lets back-ends accept (and close unused) one stray fd here.
  REM_MEM_REG: entry(SINGLE_REGION, "zero-or-one", false, {
    protocolFeature: F.CONFIGURE_MEM_SLOTS,
  }),
  SET_STATUS: entry(U64, "none", false, { protocolFeature: F.STATUS }),
  GET_STATUS: entry(EMPTY, "none", true, { protocolFeature: F.STATUS }),
  GET_SHARED_OBJECT: entry(rule({ kind: "exact", size: SHARED_OBJECT_SIZE }), "none", true, {
    protocolFeature: F.SHARED_OBJECT,
  }),
  SET_DEVICE_STATE_FD: entry(rule({ kind: "exact", size: DEVICE_STATE_PARAMS_SIZE }), "one", true, {
    protocolFeature: F.DEVICE_STATE,
  }),
  CHECK_DEVICE_STATE: entry(EMPTY, "none", true, { protocolFeature: F.DEVICE_STATE }),
};

const SPECS: ReadonlyMap<number, RequestSpec> = new Map(
  (Object.keys(FIELDS) as FrontendRequestName[]).map((name) => {
    const request = FrontendRequest[name];
    const spec: RequestSpec = Object.freeze({ request, name, ...FIELDS[name] });
    return [request, spec];
  }),
);

/** The wire description of `request`, or undefined for an unknown request number. */
export function requestSpec(request: number): RequestSpec | undefined {
  return SPECS.get(request);
}

/** Every known request's description, in request-number order. */
export function allRequestSpecs(): RequestSpec[] {
  return [...SPECS.values()].sort((a, b) => a.request - b.request);
}

/**
 * What the back-end must send back for a request:
 * - `"own"`: the request's own reply (GET_FEATURES' u64, GET_CONFIG's config…);
 * - `"ack"`: a REPLY_ACK u64 (0 = success), because NEED_REPLY is set and
 *   REPLY_ACK was negotiated;
 * - `"none"`: nothing.
 *
 * Unknown requests get `"ack"` or `"none"` by the same NEED_REPLY rule, so a
 * waiting front-end still hears about the failure.
 */
export function replyKind(
  request: number,
  flags: number,
  negotiatedProtocolFeatures: bigint,
): "own" | "ack" | "none" {
  const spec = requestSpec(request);
  if (
    spec?.hasReply &&
    (spec.replyFeature === undefined || hasBit(negotiatedProtocolFeatures, spec.replyFeature))
  ) {
    return "own";
  }
  const ackNegotiated = hasBit(negotiatedProtocolFeatures, ProtocolFeature.REPLY_ACK);
  return ackNegotiated && (flags & FLAG_NEED_REPLY) !== 0 ? "ack" : "none";
}
