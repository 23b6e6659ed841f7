import assert from "node:assert/strict";
import { EPOLLHUP, EPOLLIN, EPOLLOUT, SHUT_WR, shutdownSocket } from "../../../ffi/mod.ts";
import { DeviceHarness } from "../../../tests/support/device_harness.ts";
import {
  acceptFrom,
  closeAll,
  concat,
  connectTo,
  drain,
  guestHeader,
  guestOffersRx,
  guestReceives,
  guestSends,
  listenAt,
  pattern,
  type RxPacket,
  TEST_GUEST_CID,
  writeAllNow,
} from "../../../tests/support/vsock_guest.ts";
import { createVsockHandler, type VsockHandler, type VsockWorkerParams } from "./vsock_handler.ts";
import { HOST_CID, VsockOp, VsockQueue, VsockShutdown, VsockType } from "./vsock_spec.ts";
import { createMainSocket } from "./vsock_command.ts";

const BUF_ALLOC = 64 * 1024;
const CONNECT_TIMEOUT = 1000;
const CLOSE_TIMEOUT = 2000;

interface Rig {
  h: DeviceHarness;
  handler: VsockHandler;
  dir: string;
  uds: string;
  mainFd: number;
  fds: number[];
  [Symbol.dispose](): void;
}

function rig(bufAlloc = BUF_ALLOC): Rig {
  const dir = Deno.makeTempDirSync({ prefix: "vsock-test-" });
  const uds = `${dir}/v.sock`;
  const mainFd = createMainSocket(uds);
  const params: VsockWorkerParams = {
    guestCid: TEST_GUEST_CID,
    udsPath: uds,
    listenFd: mainFd,
    bufAlloc,
    connectTimeoutMs: CONNECT_TIMEOUT,
    closeTimeoutMs: CLOSE_TIMEOUT,
  };
  const h = new DeviceHarness(
    createVsockHandler,
    { kind: "vsock", params, shared: new SharedArrayBuffer(8) },
    { queues: 2, queueSize: 256, memorySize: 64 * 2 ** 20 },
  );
  const fds: number[] = [];
  return {
    h,
    handler: h.handler as VsockHandler,
    dir,
    uds,
    mainFd,
    fds,
    [Symbol.dispose]() {
      h.handler.close?.();
      closeAll(mainFd, ...fds);
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** The fds the handler watches besides the main socket. */
function linkFds(r: Rig): number[] {
  return [...r.h.watched.keys()].filter((fd) => fd !== r.mainFd);
}

/** The one connection fd added since `before`. */
function newLinkFd(r: Rig, before: number[]): number {
  const added = linkFds(r).filter((fd) => !before.includes(fd));
  assert.equal(added.length, 1, `expected one new watched fd, got ${added}`);
  return added[0];
}

/** A guest-initiated connection from guest port `guestPort` to host port `hostPort`, accepted. */
function guestConnects(r: Rig, guestPort: number, hostPort: number, guestBuf = 256 * 1024) {
  const listener = listenAt(`${r.uds}_${hostPort}`);
  r.fds.push(listener);
  const before = linkFds(r);
  guestSends(
    r.h,
    guestHeader({ op: VsockOp.REQUEST, srcPort: guestPort, dstPort: hostPort, bufAlloc: guestBuf }),
  );
  guestOffersRx(r.h, 1);
  const [response] = guestReceives(r.h);
  assert.equal(response.header.op, VsockOp.RESPONSE);
  const host = acceptFrom(listener);
  r.fds.push(host);
  return { host, link: newLinkFd(r, before) };
}

function rw(srcPort: number, dstPort: number, data: Uint8Array, fwdCnt = 0) {
  return [
    guestHeader({ op: VsockOp.RW, srcPort, dstPort, len: data.length, fwdCnt }),
    data,
  ] as const;
}

function payloadOf(packets: RxPacket[]): Uint8Array {
  return concat(packets.filter((p) => p.header.op === VsockOp.RW).map((p) => p.payload));
}

Deno.test("guest connects to host port P: PATH_P gets the connection, RESPONSE addressed back", () => {
  using r = rig();
  const listener = listenAt(`${r.uds}_5000`);
  r.fds.push(listener);
  guestOffersRx(r.h, 4);
  guestSends(r.h, guestHeader({ op: VsockOp.REQUEST, srcPort: 1234, dstPort: 5000 }));
  const [response] = guestReceives(r.h);
  assert.deepEqual(response.header, {
    srcCid: HOST_CID,
    dstCid: TEST_GUEST_CID,
    srcPort: 5000,
    dstPort: 1234,
    len: 0,
    type: VsockType.STREAM,
    op: VsockOp.RESPONSE,
    flags: 0,
    bufAlloc: BUF_ALLOC,
    fwdCnt: 0,
  });
  r.fds.push(acceptFrom(listener));
  assert.equal(r.handler.connectionCount, 1);
});

Deno.test("data both ways on a guest-initiated connection, intact and in order", () => {
  using r = rig();
  const { host, link } = guestConnects(r, 1234, 5000);
  const toHost = pattern(200_000, 7);
  for (let at = 0; at < toHost.length; at += 65536) {
    guestSends(r.h, ...rw(1234, 5000, toHost.subarray(at, at + 65536)));
  }
  assert.deepEqual(drain(host).data, toHost);
  const toGuest = pattern(20_000, 9);
  writeAllNow(host, toGuest);
  guestOffersRx(r.h, 10);
  r.h.fireFd(link, EPOLLIN);
  const packets = guestReceives(r.h);
  assert.ok(packets.every((p) => p.header.len === p.payload.length && p.payload.length <= 4096));
  assert.ok(packets.every((p) => p.header.srcPort === 5000 && p.header.dstPort === 1234));
  assert.deepEqual(payloadOf(packets), toGuest);
  assert.equal(packets.at(-1)!.header.fwdCnt, toHost.length, "fwd_cnt counts bytes the host took");
});

Deno.test("guest connects to a port nobody listens on: RST, no connection", () => {
  using r = rig();
  guestOffersRx(r.h, 2);
  guestSends(r.h, guestHeader({ op: VsockOp.REQUEST, srcPort: 1, dstPort: 7777 }));
  const [reset] = guestReceives(r.h);
  assert.equal(reset.header.op, VsockOp.RST);
  assert.equal(reset.header.dstPort, 1);
  assert.equal(reset.header.srcPort, 7777);
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("host connects with CONNECT P: REQUEST to guest port P, OK <port> after RESPONSE", () => {
  using r = rig();
  const host = connectTo(r.uds);
  r.fds.push(host);
  writeAllNow(host, new TextEncoder().encode("CONNECT 6000\nearly"));
  r.h.fireFd(r.mainFd, EPOLLIN);
  const [handshakeFd] = linkFds(r);
  r.h.fireFd(handshakeFd, EPOLLIN);
  guestOffersRx(r.h, 4);
  const [request] = guestReceives(r.h);
  assert.equal(request.header.op, VsockOp.REQUEST);
  assert.equal(request.header.dstPort, 6000);
  assert.equal(request.header.dstCid, TEST_GUEST_CID);
  const hostPort = request.header.srcPort;
  assert.equal(drain(host).data.length, 0, "no OK before the guest answered");
  guestSends(r.h, guestHeader({ op: VsockOp.RESPONSE, srcPort: 6000, dstPort: hostPort }));
  assert.equal(new TextDecoder().decode(drain(host).data), `OK ${hostPort}\n`);
  // Bytes after the CONNECT line are the stream's first bytes.
  r.h.fireFd(linkFds(r)[0], EPOLLIN);
  assert.equal(new TextDecoder().decode(payloadOf(guestReceives(r.h))), "early");
  guestSends(r.h, ...rw(6000, hostPort, new TextEncoder().encode("hi host")));
  assert.equal(new TextDecoder().decode(drain(host).data), "hi host");
});

Deno.test("host CONNECT refused by the guest (RST) or unanswered (timeout): host socket closed", () => {
  using r = rig();
  const refused = connectTo(r.uds);
  const unanswered = connectTo(r.uds);
  r.fds.push(refused, unanswered);
  writeAllNow(refused, new TextEncoder().encode("CONNECT 1\n"));
  writeAllNow(unanswered, new TextEncoder().encode("CONNECT 2\n"));
  r.h.fireFd(r.mainFd, EPOLLIN);
  for (const fd of linkFds(r)) r.h.fireFd(fd, EPOLLIN);
  guestOffersRx(r.h, 4);
  const requests = guestReceives(r.h);
  const toPort1 = requests.find((p) => p.header.dstPort === 1)!;
  guestSends(
    r.h,
    guestHeader({ op: VsockOp.RST, srcPort: 1, dstPort: toPort1.header.srcPort }),
  );
  assert.deepEqual(drain(refused), { data: new Uint8Array(0), eof: true, closed: true });
  assert.equal(drain(unanswered).eof, false);
  r.h.advance(CONNECT_TIMEOUT);
  assert.deepEqual(drain(unanswered), { data: new Uint8Array(0), eof: true, closed: true });
  const [reset] = guestReceives(r.h);
  assert.equal(reset.header.op, VsockOp.RST, "the guest hears the half-open connection is gone");
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("a bad CONNECT line closes the host connection", () => {
  using r = rig();
  for (const line of ["HELLO 5\n", "CONNECT x\n", "CONNECT 99999999999\n", "x".repeat(40)]) {
    const host = connectTo(r.uds);
    r.fds.push(host);
    writeAllNow(host, new TextEncoder().encode(line));
    r.h.fireFd(r.mainFd, EPOLLIN);
    const [fd] = linkFds(r);
    r.h.fireFd(fd, EPOLLIN);
    assert.equal(drain(host).closed, true, JSON.stringify(line));
    assert.equal(linkFds(r).length, 0);
  }
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("credit: never more host data than the guest's buf_alloc, more after CREDIT_UPDATE", () => {
  using r = rig();
  const { host, link } = guestConnects(r, 10, 5000, 10_000);
  const data = pattern(25_000, 3);
  writeAllNow(host, data);
  guestOffersRx(r.h, 20);
  r.h.fireFd(link, EPOLLIN);
  const first = payloadOf(guestReceives(r.h));
  assert.equal(first.length, 10_000);
  assert.equal(r.h.watched.get(link)!.events & EPOLLIN, 0, "no reading while out of credit");
  guestSends(
    r.h,
    guestHeader({
      op: VsockOp.CREDIT_UPDATE,
      srcPort: 10,
      dstPort: 5000,
      bufAlloc: 10_000,
      fwdCnt: 4000,
    }),
  );
  const second = payloadOf(guestReceives(r.h));
  assert.equal(second.length, 4000);
  guestSends(
    r.h,
    guestHeader({
      op: VsockOp.CREDIT_UPDATE,
      srcPort: 10,
      dstPort: 5000,
      bufAlloc: 100_000,
      fwdCnt: 14_000,
    }),
  );
  const rest = payloadOf(guestReceives(r.h));
  assert.deepEqual(concat([first, second, rest]), data);
});

Deno.test("credit: the guest asking (CREDIT_REQUEST) gets our buf_alloc and fwd_cnt", () => {
  using r = rig();
  const { host } = guestConnects(r, 10, 5000);
  guestSends(r.h, ...rw(10, 5000, pattern(1000)));
  drain(host);
  guestSends(r.h, guestHeader({ op: VsockOp.CREDIT_REQUEST, srcPort: 10, dstPort: 5000 }));
  guestOffersRx(r.h, 1);
  const [update] = guestReceives(r.h);
  assert.equal(update.header.op, VsockOp.CREDIT_UPDATE);
  assert.equal(update.header.bufAlloc, BUF_ALLOC);
  assert.equal(update.header.fwdCnt, 1000);
});

Deno.test("a host peer that stops reading holds at most buf_alloc and never stalls another", () => {
  using r = rig(1024 * 1024);
  const slow = guestConnects(r, 1, 5000);
  const fast = guestConnects(r, 2, 5001);
  const big = pattern(1024 * 1024, 11);
  for (let at = 0; at < big.length; at += 65536) {
    guestSends(r.h, ...rw(1, 5000, big.subarray(at, at + 65536)));
  }
  assert.ok(r.h.watched.get(slow.link)!.events & EPOLLOUT, "waits for the slow socket to drain");
  // The other connection flows meanwhile, both ways.
  guestSends(r.h, ...rw(2, 5001, pattern(5000, 2)));
  assert.deepEqual(drain(fast.host).data, pattern(5000, 2));
  writeAllNow(fast.host, pattern(3000, 4));
  guestOffersRx(r.h, 4);
  r.h.fireFd(fast.link, EPOLLIN);
  assert.deepEqual(payloadOf(guestReceives(r.h)), pattern(3000, 4));
  // Filling exactly what it may is accepted; one byte more resets it instead of buffering.
  guestSends(r.h, guestHeader({ op: VsockOp.CREDIT_REQUEST, srcPort: 1, dstPort: 5000 }));
  const [update] = guestReceives(r.h);
  assert.equal(update.header.op, VsockOp.CREDIT_UPDATE);
  const free = update.header.fwdCnt; // the guest sent buf_alloc; the host took fwd_cnt
  assert.ok(free > 0 && free < big.length, `the host socket took ${free} bytes`);
  for (let left = free; left > 0; left -= Math.min(left, 65536)) {
    guestSends(r.h, ...rw(1, 5000, pattern(Math.min(left, 65536))));
  }
  assert.equal(guestReceives(r.h).length, 0);
  guestSends(r.h, ...rw(1, 5000, pattern(1)));
  guestOffersRx(r.h, 1);
  const [reset] = guestReceives(r.h);
  assert.equal(reset.header.op, VsockOp.RST);
  assert.equal(reset.header.dstPort, 1);
  assert.equal(r.handler.connectionCount, 1);
});

Deno.test("a slow host peer that drains gets everything, and the guest gets its credit back", () => {
  using r = rig(1024 * 1024);
  const slow = guestConnects(r, 1, 5000);
  const big = pattern(1024 * 1024, 12);
  for (let at = 0; at < big.length; at += 65536) {
    guestSends(r.h, ...rw(1, 5000, big.subarray(at, at + 65536)));
  }
  const got: Uint8Array[] = [];
  guestOffersRx(r.h, 8);
  while (r.h.watched.get(slow.link)?.events! & EPOLLOUT) {
    got.push(drain(slow.host).data);
    r.h.fireFd(slow.link, EPOLLOUT);
  }
  got.push(drain(slow.host).data);
  assert.deepEqual(concat(got), big);
  const updates = guestReceives(r.h).filter((p) => p.header.op === VsockOp.CREDIT_UPDATE);
  assert.ok(updates.length > 0, "credit updates while draining");
  // Enough credit came back that the guest sees at least half the buffer free.
  assert.ok(updates.at(-1)!.header.fwdCnt >= big.length / 2);
});

Deno.test("guest SHUTDOWN(SEND) reaches the host as EOF after the data; SHUTDOWN(both) is answered with RST", () => {
  using r = rig();
  const { host } = guestConnects(r, 1, 5000);
  guestSends(r.h, ...rw(1, 5000, pattern(100)));
  guestSends(
    r.h,
    guestHeader({ op: VsockOp.SHUTDOWN, flags: VsockShutdown.SEND, srcPort: 1, dstPort: 5000 }),
  );
  assert.deepEqual(drain(host), { data: pattern(100), eof: true, closed: true });
  writeAllNow(host, pattern(50)); // the other direction still works
  guestOffersRx(r.h, 4);
  r.h.fireFd(linkFds(r)[0], EPOLLIN);
  assert.deepEqual(payloadOf(guestReceives(r.h)), pattern(50));
  guestSends(
    r.h,
    guestHeader({ op: VsockOp.SHUTDOWN, flags: VsockShutdown.BOTH, srcPort: 1, dstPort: 5000 }),
  );
  const [reset] = guestReceives(r.h);
  assert.equal(reset.header.op, VsockOp.RST);
  assert.equal(r.handler.connectionCount, 0);
  assert.equal(linkFds(r).length, 0, "host socket closed");
});

Deno.test("host half-close: SHUTDOWN(SEND) after the data, guest data still delivered", () => {
  using r = rig();
  const { host, link } = guestConnects(r, 1, 5000);
  writeAllNow(host, pattern(300));
  shutdownSocket(host, SHUT_WR);
  guestOffersRx(r.h, 4);
  r.h.fireFd(link, EPOLLIN);
  const packets = guestReceives(r.h);
  assert.deepEqual(payloadOf(packets), pattern(300));
  assert.equal(packets.at(-1)!.header.op, VsockOp.SHUTDOWN);
  assert.equal(packets.at(-1)!.header.flags, VsockShutdown.SEND);
  guestSends(r.h, ...rw(1, 5000, pattern(20)));
  assert.deepEqual(drain(host).data, pattern(20));
});

Deno.test("host peer vanishes: the rest of its data, then SHUTDOWN(both); RST from the guest ends it", () => {
  using r = rig();
  const { host, link } = guestConnects(r, 1, 5000, 1000);
  writeAllNow(host, pattern(3000));
  closeAll(host);
  r.fds.splice(r.fds.indexOf(host), 1);
  guestOffersRx(r.h, 8);
  r.h.fireFd(link, EPOLLIN | EPOLLHUP);
  assert.deepEqual(payloadOf(guestReceives(r.h)), pattern(1000), "credit still holds");
  guestSends(
    r.h,
    guestHeader({
      op: VsockOp.CREDIT_UPDATE,
      srcPort: 1,
      dstPort: 5000,
      bufAlloc: 1000,
      fwdCnt: 1000,
    }),
  );
  guestSends(
    r.h,
    guestHeader({
      op: VsockOp.CREDIT_UPDATE,
      srcPort: 1,
      dstPort: 5000,
      bufAlloc: 5000,
      fwdCnt: 2000,
    }),
  );
  const packets = guestReceives(r.h);
  assert.deepEqual(payloadOf(packets), pattern(3000).subarray(1000));
  assert.equal(packets.at(-1)!.header.op, VsockOp.SHUTDOWN);
  assert.equal(packets.at(-1)!.header.flags, VsockShutdown.BOTH);
  guestSends(r.h, ...rw(1, 5000, pattern(10), 3000)); // the guest may still send: dropped
  guestSends(r.h, guestHeader({ op: VsockOp.RST, srcPort: 1, dstPort: 5000 }));
  assert.equal(r.handler.connectionCount, 0);
  assert.equal(r.h.pendingTimers, 0);
});

Deno.test("no RST from the guest after our SHUTDOWN(both): RST after the close timeout", () => {
  using r = rig();
  const { host, link } = guestConnects(r, 1, 5000);
  closeAll(host);
  r.fds.splice(r.fds.indexOf(host), 1);
  guestOffersRx(r.h, 4);
  r.h.fireFd(link, EPOLLHUP);
  assert.equal(guestReceives(r.h).at(-1)!.header.op, VsockOp.SHUTDOWN);
  r.h.advance(CLOSE_TIMEOUT);
  assert.equal(guestReceives(r.h).at(-1)!.header.op, VsockOp.RST);
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("guest data to a host peer that vanished: RST", () => {
  using r = rig();
  const { host } = guestConnects(r, 1, 5000);
  closeAll(host);
  r.fds.splice(r.fds.indexOf(host), 1);
  guestOffersRx(r.h, 2);
  guestSends(r.h, ...rw(1, 5000, pattern(100)));
  const [reset] = guestReceives(r.h);
  assert.equal(reset.header.op, VsockOp.RST);
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("packets are held until the guest gives RX buffers, then sent round robin", () => {
  using r = rig();
  const a = guestConnects(r, 1, 5000);
  const b = guestConnects(r, 2, 5001);
  writeAllNow(a.host, pattern(3 * 4096, 1));
  writeAllNow(b.host, pattern(3 * 4096, 2));
  r.h.fireFd(a.link, EPOLLIN);
  r.h.fireFd(b.link, EPOLLIN);
  assert.equal(guestReceives(r.h).length, 0);
  guestOffersRx(r.h, 4);
  const order = guestReceives(r.h).map((p) => p.header.dstPort);
  assert.deepEqual(order, [1, 2, 1, 2]);
  guestOffersRx(r.h, 8);
  const rest = guestReceives(r.h);
  assert.equal(payloadOf(rest).length, 4096 * 2);
});

Deno.test("bad guest input never throws: short, malformed, foreign CID, unknown op and type", () => {
  using r = rig();
  const { host } = guestConnects(r, 1, 5000);
  guestOffersRx(r.h, 16);
  r.h.addChain(VsockQueue.TX, { readable: [new Uint8Array(10)] });
  r.h.kick(VsockQueue.TX);
  assert.equal(r.h.takeUsed(VsockQueue.TX).length, 1);
  // A foreign source CID is dropped without an answer.
  guestSends(r.h, guestHeader({ op: VsockOp.REQUEST, srcCid: 9, srcPort: 5, dstPort: 5000 }));
  assert.equal(guestReceives(r.h).length, 0);
  // An unknown op or a SEQPACKET on no connection, a packet to another CID: RST.
  guestSends(r.h, guestHeader({ op: 99, srcPort: 5, dstPort: 5 }));
  guestSends(
    r.h,
    guestHeader({ op: VsockOp.REQUEST, type: VsockType.SEQPACKET, srcPort: 6, dstPort: 5000 }),
  );
  guestSends(r.h, guestHeader({ op: VsockOp.REQUEST, dstCid: 7, srcPort: 7, dstPort: 5000 }));
  guestSends(r.h, guestHeader({ op: VsockOp.RST, srcPort: 8, dstPort: 5 })); // never answered
  assert.deepEqual(guestReceives(r.h).map((p) => [p.header.op, p.header.dstPort]), [
    [VsockOp.RST, 5],
    [VsockOp.RST, 6],
    [VsockOp.RST, 7],
  ]);
  // An unknown op on a connection is ignored; the connection lives on.
  guestSends(r.h, guestHeader({ op: 99, srcPort: 1, dstPort: 5000 }));
  guestSends(r.h, ...rw(1, 5000, pattern(10)));
  assert.deepEqual(drain(host).data, pattern(10));
  // RW whose len exceeds the chain: RST.
  guestSends(
    r.h,
    guestHeader({ op: VsockOp.RW, srcPort: 1, dstPort: 5000, len: 500 }),
    pattern(10),
  );
  assert.equal(guestReceives(r.h).at(-1)!.header.op, VsockOp.RST);
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("a guest offering header-only RX buffers cannot make the device spin", () => {
  using r = rig();
  const c = guestConnects(r, 3, 5002);
  writeAllNow(c.host, pattern(100));
  r.h.addChain(VsockQueue.RX, { writable: [44] });
  r.h.kick(VsockQueue.RX);
  r.h.fireFd(c.link, EPOLLIN);
  assert.deepEqual(r.h.takeUsed(VsockQueue.RX).map((u) => u.len), [0]);
  guestOffersRx(r.h, 1);
  assert.deepEqual(payloadOf(guestReceives(r.h)), pattern(100));
});

Deno.test("reset command drops every connection; quiesce gives back the RX buffer held", () => {
  using r = rig();
  const a = guestConnects(r, 1, 5000);
  guestOffersRx(r.h, 1);
  r.h.fireFd(a.link, EPOLLIN); // nothing to read: the buffer is held
  assert.equal(r.h.pause(VsockQueue.RX), 0);
  assert.equal(r.h.takeUsed(VsockQueue.RX)[0].len, 0);
  r.h.resume(VsockQueue.RX);
  assert.deepEqual(r.handler.command({ op: "reset" }), { connections: 0 });
  assert.equal(drain(a.host).closed, true);
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("a RESPONSE goes before other connections' waiting data", () => {
  using r = rig();
  const a = guestConnects(r, 1, 5000);
  const b = guestConnects(r, 2, 5001);
  writeAllNow(a.host, pattern(4 * 4096, 1));
  writeAllNow(b.host, pattern(4 * 4096, 2));
  r.h.fireFd(a.link, EPOLLIN);
  r.h.fireFd(b.link, EPOLLIN);
  r.fds.push(listenAt(`${r.uds}_5002`));
  guestSends(r.h, guestHeader({ op: VsockOp.REQUEST, srcPort: 3, dstPort: 5002 }));
  guestOffersRx(r.h, 3);
  const ops = guestReceives(r.h).map((p) => [p.header.op, p.header.dstPort]);
  assert.deepEqual(ops[0], [VsockOp.RESPONSE, 3]);
});

Deno.test("guest SHUTDOWN(SEND) behind data the host has not taken yet: EOF only after all of it", () => {
  using r = rig(1024 * 1024);
  const slow = guestConnects(r, 1, 5000);
  const big = pattern(1024 * 1024, 13);
  for (let at = 0; at < big.length; at += 65536) {
    guestSends(r.h, ...rw(1, 5000, big.subarray(at, at + 65536)));
  }
  guestSends(
    r.h,
    guestHeader({ op: VsockOp.SHUTDOWN, flags: VsockShutdown.SEND, srcPort: 1, dstPort: 5000 }),
  );
  const got: Uint8Array[] = [];
  let eof = false;
  for (;;) {
    const d = drain(slow.host);
    got.push(d.data);
    eof = d.eof;
    // Done at the host's EOF, or once vhostd has nothing more to write (then EOF must be there).
    if (d.closed) break;
    if ((r.h.watched.get(slow.link)?.events ?? 0) & EPOLLOUT) r.h.fireFd(slow.link, EPOLLOUT);
    else {
      const last = drain(slow.host);
      got.push(last.data);
      eof = last.eof;
      break;
    }
  }
  const all = concat(got);
  assert.equal(all.length, big.length, "every byte before the EOF");
  assert.ok(all.every((b, i) => b === big[i]), "the bytes in order");
  assert.equal(eof, true, "EOF after the data");
});

Deno.test("a REQUEST on an open connection resets it (the guest lost its state)", () => {
  using r = rig();
  const { host } = guestConnects(r, 1, 5000);
  guestSends(r.h, guestHeader({ op: VsockOp.REQUEST, srcPort: 1, dstPort: 5000 }));
  guestOffersRx(r.h, 1);
  assert.equal(guestReceives(r.h)[0].header.op, VsockOp.RST);
  assert.equal(drain(host).closed, true);
  assert.equal(r.handler.connectionCount, 0);
});

Deno.test("a host program that never sends its CONNECT line is closed after the timeout", () => {
  using r = rig();
  const host = connectTo(r.uds);
  r.fds.push(host);
  r.h.fireFd(r.mainFd, EPOLLIN);
  assert.equal(linkFds(r).length, 1);
  assert.equal(drain(host).closed, false);
  r.h.advance(CONNECT_TIMEOUT);
  assert.equal(linkFds(r).length, 0);
  assert.equal(drain(host).closed, true, "closed, not only forgotten");
});
