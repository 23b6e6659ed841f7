import assert from "node:assert/strict";
import { VsockConnection } from "./vsock_connection.ts";
import { VsockOp, VsockShutdown } from "./vsock_spec.ts";

const BUF = 1024;

function established(): VsockConnection {
  return new VsockConnection(80, 5000, BUF, "established");
}

Deno.test("peer credit: buf_alloc minus bytes in flight, u32 wrap-around, never negative", () => {
  const c = established();
  assert.equal(c.peerCredit(), 0, "no credit before the guest advertised any");
  c.updatePeerCredit(4096, 0);
  assert.equal(c.peerCredit(), 4096);
  c.sent(VsockOp.RW, 1000);
  assert.equal(c.peerCredit(), 3096);
  c.updatePeerCredit(4096, 1000);
  assert.equal(c.peerCredit(), 4096);
  // Counters wrap at 2^32.
  c.txCnt = 0xffff_ff00;
  c.updatePeerCredit(4096, 0xffff_ff00);
  c.sent(VsockOp.RW, 0x200);
  assert.equal(c.txCnt, 0x100);
  assert.equal(c.peerCredit(), 4096 - 0x200);
  // The guest shrinking its buffer below what is in flight leaves no credit.
  c.updatePeerCredit(0x100, 0xffff_ff00);
  assert.equal(c.peerCredit(), 0);
});

Deno.test("receive: refuses data beyond the credit we gave", () => {
  const c = established();
  assert.equal(c.receive(BUF), true);
  assert.equal(c.buffered, BUF);
  assert.equal(c.receive(1), false);
  assert.equal(c.rxCnt, BUF, "refused data is not counted");
  c.forwarded(100);
  assert.equal(c.buffered, BUF - 100);
  assert.equal(c.receive(100), true);
  assert.equal(c.receive(1), false);
});

Deno.test("credit update: owed when the guest believes the buffer mostly full and space was freed", () => {
  const c = established();
  c.receive(300);
  c.forwarded(300);
  assert.equal(c.nextControl(false), undefined, "guest still sees more than half free");
  c.sent(VsockOp.RW, 0); // the guest sees fwd_cnt 300 in a packet
  assert.equal(c.receive(BUF), true); // and fills the whole buffer
  assert.equal(c.receive(1), false);
  c.forwarded(100);
  assert.equal(c.nextControl(false), undefined, "a small gain while data is still buffered");
  c.forwarded(200);
  assert.deepEqual(c.nextControl(false), { op: VsockOp.CREDIT_UPDATE, flags: 0 });
  const credit = c.sent(VsockOp.CREDIT_UPDATE, 0);
  assert.deepEqual(credit, { bufAlloc: BUF, fwdCnt: 600 });
  assert.equal(c.nextControl(false), undefined);
});

Deno.test("credit update: a drained buffer always tells a guest that was short of credit", () => {
  const c = established();
  c.receive(BUF);
  c.forwarded(BUF - 10);
  c.sent(VsockOp.CREDIT_UPDATE, 0);
  c.receive(BUF - 10); // full again in the guest's view
  c.forwarded(5);
  assert.equal(c.nextControl(false), undefined);
  c.forwarded(BUF - 10 + 5);
  assert.equal(c.buffered, 0);
  assert.deepEqual(c.nextControl(false), { op: VsockOp.CREDIT_UPDATE, flags: 0 });
});

Deno.test("any packet sent carries the credit: no separate update owed afterwards", () => {
  const c = established();
  c.oweCreditUpdate();
  c.updatePeerCredit(4096, 0);
  assert.equal(c.nextControl(true), undefined, "data first");
  const credit = c.sent(VsockOp.RW, 10);
  assert.equal(credit.bufAlloc, BUF);
  assert.equal(c.owesControl, false);
});

Deno.test("control order: RST over all, RESPONSE before data, SHUTDOWN after data", () => {
  const c = established();
  c.oweResponse();
  c.shutDown(VsockShutdown.SEND);
  assert.deepEqual(c.nextControl(true), { op: VsockOp.RESPONSE, flags: 0 });
  c.sent(VsockOp.RESPONSE, 0);
  assert.equal(c.nextControl(true), undefined);
  assert.deepEqual(c.nextControl(false), { op: VsockOp.SHUTDOWN, flags: VsockShutdown.SEND });
  c.sent(VsockOp.SHUTDOWN, 0);
  assert.equal(c.state, "established");
  c.shutDown(VsockShutdown.SEND);
  assert.equal(c.owesControl, false, "flags already sent are not sent again");
  c.shutDown(VsockShutdown.RCV);
  assert.equal(c.state, "closing");
  assert.deepEqual(c.nextControl(false), { op: VsockOp.SHUTDOWN, flags: VsockShutdown.BOTH });
  c.oweCreditRequest();
  c.oweReset();
  assert.equal(c.resetOwed, true);
  assert.deepEqual(c.nextControl(true), { op: VsockOp.RST, flags: 0 });
  c.sent(VsockOp.RST, 0);
  assert.equal(c.owesControl, false, "nothing follows an RST");
});

Deno.test("host-initiated: REQUEST owed, then CREDIT_REQUEST", () => {
  const c = new VsockConnection(49152, 1234, BUF, "connecting");
  c.oweRequest();
  c.oweCreditRequest();
  assert.deepEqual(c.nextControl(false), { op: VsockOp.REQUEST, flags: 0 });
  c.sent(VsockOp.REQUEST, 0);
  assert.deepEqual(c.nextControl(false), { op: VsockOp.CREDIT_REQUEST, flags: 0 });
  c.sent(VsockOp.CREDIT_REQUEST, 0);
  assert.equal(c.nextControl(false), undefined);
});
