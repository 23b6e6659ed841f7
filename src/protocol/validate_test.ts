import assert from "node:assert/strict";
import { maskOf, ProtocolFeature } from "./features.ts";
import { FLAG_NEED_REPLY, FLAG_REPLY, type MessageHeader, VHOST_USER_VERSION } from "./header.ts";
import {
  DeviceStateDirection,
  DeviceStatePhase,
  encodeConfig,
  encodeDeviceStateParams,
  encodeInflightDesc,
  encodeLogArea,
  encodeMemoryTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringFdIndex,
  encodeVringState,
  type MemoryRegionDesc,
} from "./payloads.ts";
import { FrontendRequest } from "./requests.ts";
import { validateMessage } from "./validate.ts";

const R = FrontendRequest;
const F = ProtocolFeature;
const NONE = 0n;
const ALL = maskOf(Object.values(ProtocolFeature));

function header(request: number, payload: Uint8Array, flags = VHOST_USER_VERSION): MessageHeader {
  return { request, flags, size: payload.byteLength };
}

/** validateMessage for a header built from the payload. */
function check(
  request: number,
  payload: Uint8Array,
  fdCount = 0,
  features = ALL,
  flags = VHOST_USER_VERSION,
): string | null {
  return validateMessage(header(request, payload, flags), payload, fdCount, features);
}

const EMPTY = new Uint8Array(0);

function region(i: number): MemoryRegionDesc {
  const base = BigInt(i) << 30n;
  return { guestAddr: base, size: 1n << 30n, userAddr: 0x7f00_0000_0000n + base, mmapOffset: 0n };
}

const inflight = encodeInflightDesc({
  mmapSize: 2112n,
  mmapOffset: 0n,
  numQueues: 1,
  queueSize: 128,
});

const config = (size: number) =>
  encodeConfig({ offset: 0, size, flags: 0, data: new Uint8Array(size) });

Deno.test("accepts well-formed messages", () => {
  assert.equal(check(R.GET_FEATURES, EMPTY, 0, NONE), null);
  assert.equal(check(R.SET_FEATURES, encodeU64(1n << 32n), 0, NONE), null);
  assert.equal(check(R.SET_OWNER, EMPTY, 0, NONE), null);
  assert.equal(check(R.GET_PROTOCOL_FEATURES, EMPTY, 0, NONE), null);
  assert.equal(check(R.SET_PROTOCOL_FEATURES, encodeU64(3n), 0, NONE), null);
  assert.equal(
    check(
      R.SET_VRING_NUM,
      encodeVringState({ index: 0, num: 256 }),
      0,
      NONE,
      0x1 | FLAG_NEED_REPLY,
    ),
    null,
  );
  const address = {
    index: 0,
    flags: 0,
    descUserAddr: 1n,
    usedUserAddr: 2n,
    availUserAddr: 3n,
    logGuestAddr: 0n,
  };
  assert.equal(check(R.SET_VRING_ADDR, encodeVringAddress(address), 0, NONE), null);
  assert.equal(check(R.SET_VRING_KICK, encodeVringFdIndex({ index: 1, noFd: false }), 1), null);
  assert.equal(check(R.SET_VRING_CALL, encodeVringFdIndex({ index: 1, noFd: true }), 0), null);
  assert.equal(check(R.SET_MEM_TABLE, encodeMemoryTable([region(0), region(1)]), 2), null);
  const fullTable = new Uint8Array(264);
  fullTable.set(encodeMemoryTable([region(0)]));
  assert.equal(check(R.SET_MEM_TABLE, fullTable, 1), null);
  assert.equal(check(R.GET_CONFIG, config(60)), null);
  assert.equal(check(R.SET_CONFIG, config(4)), null);
  assert.equal(check(R.ADD_MEM_REG, encodeSingleRegion(region(2)), 1), null);
  assert.equal(check(R.REM_MEM_REG, encodeSingleRegion(region(2)), 0), null);
  assert.equal(check(R.REM_MEM_REG, encodeSingleRegion(region(2)), 1), null);
  const log = encodeLogArea({ mmapSize: 4096n, mmapOffset: 0n });
  assert.equal(check(R.SET_LOG_BASE, log, 1), null);
  assert.equal(check(R.SET_LOG_FD, EMPTY, 1), null);
  const params = encodeDeviceStateParams({
    direction: DeviceStateDirection.SAVE,
    phase: DeviceStatePhase.STOPPED,
  });
  assert.equal(check(R.SET_DEVICE_STATE_FD, params, 1), null);
  assert.equal(check(R.CHECK_DEVICE_STATE, EMPTY), null);
  assert.equal(check(R.SET_STATUS, encodeU64(0xf)), null);
  assert.equal(check(R.GET_STATUS, EMPTY), null);
  assert.equal(check(R.RESET_DEVICE, EMPTY), null);
  assert.equal(check(R.GET_MAX_MEM_SLOTS, EMPTY), null);
  // Unimplemented requests with free-form payloads still pass when gated in.
  assert.equal(check(R.CREATE_CRYPTO_SESSION, new Uint8Array(300)), null);
});

Deno.test("refuses a wrong version", () => {
  for (const flags of [0x0, 0x2, 0x3]) {
    assert.equal(
      check(R.GET_FEATURES, EMPTY, 0, NONE, flags),
      `GET_FEATURES: version ${flags} in flags 0x${flags}, expected 1`,
    );
  }
});

Deno.test("refuses the REPLY flag on a request", () => {
  assert.equal(
    check(R.GET_FEATURES, EMPTY, 0, NONE, VHOST_USER_VERSION | FLAG_REPLY),
    "GET_FEATURES: REPLY flag set on a request",
  );
});

Deno.test("refuses an unknown request", () => {
  assert.equal(check(99, EMPTY), "UNKNOWN(99): unknown request");
  assert.equal(check(0, EMPTY), "UNKNOWN(0): unknown request");
});

Deno.test("refuses a wrong payload size", () => {
  assert.equal(
    check(R.SET_VRING_NUM, new Uint8Array(4)),
    "SET_VRING_NUM: payload is 4 bytes, expected 8",
  );
  assert.equal(
    check(R.GET_FEATURES, new Uint8Array(8)),
    "GET_FEATURES: payload is 8 bytes, expected 0",
  );
  assert.match(check(R.SET_VRING_ADDR, new Uint8Array(48)) ?? "", /48 bytes, expected 40/);
  assert.match(check(R.SET_MEM_TABLE, new Uint8Array(4)) ?? "", /expected at least 8/);
  assert.match(check(R.SET_DEVICE_STATE_FD, new Uint8Array(16), 1) ?? "", /expected 8/);
});

Deno.test("refuses a header size that disagrees with the payload or exceeds the limit", () => {
  const payload = encodeU64(1n);
  assert.match(
    validateMessage({ request: R.SET_FEATURES, flags: 1, size: 4 }, payload, 0, NONE) ?? "",
    /header says 4 payload bytes, got 8/,
  );
  assert.match(
    validateMessage({ request: R.SET_FEATURES, flags: 1, size: 5000 }, payload, 0, NONE) ?? "",
    /exceeds 4096/,
  );
});

Deno.test("refuses a missing fd", () => {
  assert.equal(
    check(R.SET_VRING_CALL, encodeVringFdIndex({ index: 0, noFd: false }), 0),
    "SET_VRING_CALL: 0 fds attached, expected 1",
  );
  assert.match(check(R.SET_LOG_FD, EMPTY, 0) ?? "", /0 fds attached, expected 1/);
  assert.match(check(R.ADD_MEM_REG, encodeSingleRegion(region(0)), 0) ?? "", /expected 1/);
  const params = encodeDeviceStateParams({ direction: 1, phase: 0 });
  assert.match(check(R.SET_DEVICE_STATE_FD, params, 0) ?? "", /expected 1/);
});

Deno.test("refuses an extra fd", () => {
  assert.equal(
    check(R.SET_FEATURES, encodeU64(0n), 1),
    "SET_FEATURES: 1 fd attached, expected none",
  );
  assert.match(
    check(R.SET_VRING_KICK, encodeVringFdIndex({ index: 0, noFd: false }), 2) ?? "",
    /2 fds attached, expected 1/,
  );
  assert.match(check(R.REM_MEM_REG, encodeSingleRegion(region(0)), 2) ?? "", /at most 1/);
});

Deno.test("refuses an fd sent with the no-fd bit, and stray bits in the index", () => {
  assert.equal(
    check(R.SET_VRING_KICK, encodeVringFdIndex({ index: 2, noFd: true }), 1),
    "SET_VRING_KICK: 1 fd attached although the no-fd bit is set",
  );
  assert.match(check(R.SET_VRING_ERR, encodeU64(0x201n), 1) ?? "", /unknown bits set in 0x201/);
});

Deno.test("refuses requests whose protocol feature is not negotiated", () => {
  const allBut = (bit: number) => ALL & ~(1n << BigInt(bit));
  assert.equal(
    check(R.GET_CONFIG, config(8), 0, allBut(F.CONFIG)),
    "GET_CONFIG: needs protocol feature CONFIG, not negotiated",
  );
  const gated: [number, Uint8Array, number, number][] = [
    [R.SET_CONFIG, config(8), 0, F.CONFIG],
    [R.ADD_MEM_REG, encodeSingleRegion(region(0)), 1, F.CONFIGURE_MEM_SLOTS],
    [R.REM_MEM_REG, encodeSingleRegion(region(0)), 0, F.CONFIGURE_MEM_SLOTS],
    [R.GET_MAX_MEM_SLOTS, EMPTY, 0, F.CONFIGURE_MEM_SLOTS],
    [R.RESET_DEVICE, EMPTY, 0, F.RESET_DEVICE],
    [R.SET_DEVICE_STATE_FD, encodeDeviceStateParams({ direction: 0, phase: 0 }), 1, F.DEVICE_STATE],
    [R.CHECK_DEVICE_STATE, EMPTY, 0, F.DEVICE_STATE],
    [R.GET_STATUS, EMPTY, 0, F.STATUS],
    [R.SET_STATUS, encodeU64(0n), 0, F.STATUS],
    [R.GET_QUEUE_NUM, EMPTY, 0, F.MQ],
    [R.GET_INFLIGHT_FD, inflight, 0, F.INFLIGHT_SHMFD],
    [R.SET_INFLIGHT_FD, inflight, 1, F.INFLIGHT_SHMFD],
  ];
  for (const [request, payload, fds, feature] of gated) {
    assert.equal(check(request, payload, fds, ALL), null, `${request} with all features`);
    assert.match(check(request, payload, fds, allBut(feature)) ?? "", /needs protocol feature/);
  }
});

Deno.test("SET_LOG_BASE's fd needs LOG_SHMFD, and LOG_SHMFD needs the fd", () => {
  const log = encodeLogArea({ mmapSize: 4096n, mmapOffset: 0n });
  const shmfd = maskOf([F.LOG_SHMFD]);
  assert.equal(check(R.SET_LOG_BASE, log, 1, shmfd), null);
  assert.equal(check(R.SET_LOG_BASE, log, 0, NONE), null);
  assert.equal(
    check(R.SET_LOG_BASE, log, 1, NONE),
    "SET_LOG_BASE: fd attached but protocol feature LOG_SHMFD is not negotiated",
  );
  assert.match(check(R.SET_LOG_BASE, log, 0, shmfd) ?? "", /0 fds attached, expected 1/);
});

Deno.test("SET_MEM_TABLE: fd count must match nregions", () => {
  const table = encodeMemoryTable([region(0), region(1), region(2)]);
  assert.equal(check(R.SET_MEM_TABLE, table, 3), null);
  assert.equal(check(R.SET_MEM_TABLE, table, 2), "SET_MEM_TABLE: 2 fds attached for 3 regions");
  assert.equal(check(R.SET_MEM_TABLE, table, 4), "SET_MEM_TABLE: 4 fds attached for 3 regions");
});

Deno.test("SET_MEM_TABLE: too many regions, or too few bytes for them", () => {
  const nine = new Uint8Array(264);
  new DataView(nine.buffer).setUint32(0, 9, true);
  assert.equal(check(R.SET_MEM_TABLE, nine, 9), "SET_MEM_TABLE: 9 regions, at most 8 allowed");
  const table = encodeMemoryTable([region(0), region(1)]);
  assert.match(check(R.SET_MEM_TABLE, table.subarray(0, 40), 2) ?? "", /2 regions need 72/);
  assert.match(check(R.SET_MEM_TABLE, new Uint8Array(272), 0) ?? "", /at most 264/);
});

Deno.test("GET_CONFIG/SET_CONFIG: size field must match the payload", () => {
  const bytes = config(8);
  assert.match(check(R.GET_CONFIG, bytes.subarray(0, 16)) ?? "", /config size 8 needs 20/);
  const big = new Uint8Array(12 + 300);
  new DataView(big.buffer).setUint32(4, 300, true);
  assert.match(check(R.SET_CONFIG, big) ?? "", /config size 300 exceeds 256/);
});

Deno.test("GET/SET_INFLIGHT_FD: 24-byte payload; GET carries no fd, SET exactly one", () => {
  assert.equal(check(R.GET_INFLIGHT_FD, inflight), null);
  assert.equal(check(R.SET_INFLIGHT_FD, inflight, 1), null);
  assert.equal(
    check(R.GET_INFLIGHT_FD, inflight.subarray(0, 20)),
    "GET_INFLIGHT_FD: payload is 20 bytes, expected 24",
  );
  assert.equal(
    check(R.SET_INFLIGHT_FD, new Uint8Array(32), 1),
    "SET_INFLIGHT_FD: payload is 32 bytes, expected 24",
  );
  assert.equal(
    check(R.SET_INFLIGHT_FD, inflight, 0),
    "SET_INFLIGHT_FD: 0 fds attached, expected 1",
  );
  assert.equal(
    check(R.SET_INFLIGHT_FD, inflight, 2),
    "SET_INFLIGHT_FD: 2 fds attached, expected 1",
  );
  assert.equal(
    check(R.GET_INFLIGHT_FD, inflight, 1),
    "GET_INFLIGHT_FD: 1 fd attached, expected none",
  );
});
