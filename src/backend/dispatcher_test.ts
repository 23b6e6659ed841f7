import assert from "node:assert/strict";
import { closeQuietly, dupFd, eventfd, memfdCreate } from "../../ffi/mod.ts";
import { setLogLevel } from "../log.ts";
import {
  bit,
  CONFIG_HEADER_SIZE,
  decodeConfig,
  decodeHeader,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeMemoryTable,
  encodeU64,
  encodeVringFdIndex,
  encodeVringState,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FrontendRequest as R,
  HEADER_SIZE,
  type MessageHeader,
  ProtocolFeature,
  VHOST_USER_VERSION,
} from "../protocol/mod.ts";
import { MAX_MEM_SLOTS } from "./backend.ts";
import {
  type BlkBackend,
  copiesOf,
  SharedGuestMemory,
  withBlkBackend,
} from "../../tests/support/backend_doubles.ts";
import { Dispatcher, type DispatchResult, type IncomingMessage } from "./dispatcher.ts";
import { NO_FD } from "./worker_protocol.ts";

// Refused messages are expected here: keep their warnings out of the output.
setLogLevel("error");

const NEED_REPLY = VHOST_USER_VERSION | FLAG_NEED_REPLY;

function message(
  request: number,
  payload: Uint8Array = new Uint8Array(0),
  fds: number[] = [],
  flags: number = VHOST_USER_VERSION,
): IncomingMessage {
  return { header: { request, flags, size: payload.length }, payload, fds };
}

interface Reply {
  header: MessageHeader;
  payload: Uint8Array;
}

function decodeReply(result: DispatchResult): Reply {
  assert.ok(result !== undefined, "expected a reply");
  const header = decodeHeader(result.bytes);
  assert.equal(header.flags, 0x5, "reply flags must be exactly VERSION | REPLY");
  assert.equal(header.size, result.bytes.length - HEADER_SIZE);
  assert.deepEqual(result.fds, [], "no fds expected with this reply");
  return { header, payload: result.bytes.subarray(HEADER_SIZE) };
}

/** The u64 of a reply to `request`. */
function u64Reply(result: DispatchResult, request: number): bigint {
  const reply = decodeReply(result);
  assert.equal(reply.header.request, request);
  assert.equal(reply.payload.length, 8);
  return decodeU64(reply.payload);
}

/** Runs `body` with a Dispatcher over a fresh BlkBackend (two queues). */
function withDispatcher(
  body: (d: Dispatcher, b: BlkBackend) => Promise<void>,
): () => Promise<void> {
  return () => withBlkBackend((b) => body(new Dispatcher(b.backend), b), { numQueues: 2 });
}

async function negotiate(d: Dispatcher, protocol: bigint): Promise<void> {
  const r = await d.dispatch(message(R.SET_PROTOCOL_FEATURES, encodeU64(protocol)));
  assert.equal(r, undefined);
}

Deno.test(
  "GET_* requests get their own reply with flags 0x5",
  withDispatcher(async (d, b) => {
    const be = b.backend;
    assert.equal(
      u64Reply(await d.dispatch(message(R.GET_FEATURES)), R.GET_FEATURES),
      be.offeredFeatures(),
    );
    assert.equal(
      u64Reply(await d.dispatch(message(R.GET_PROTOCOL_FEATURES)), R.GET_PROTOCOL_FEATURES),
      be.offeredProtocolFeatures(),
    );
    await negotiate(d, be.offeredProtocolFeatures());
    assert.equal(u64Reply(await d.dispatch(message(R.GET_QUEUE_NUM)), R.GET_QUEUE_NUM), 2n);
    assert.equal(
      u64Reply(await d.dispatch(message(R.GET_MAX_MEM_SLOTS)), R.GET_MAX_MEM_SLOTS),
      BigInt(MAX_MEM_SLOTS),
    );
    // NEED_REPLY on a request with its own reply changes nothing (no extra ack).
    assert.equal(
      u64Reply(await d.dispatch(message(R.GET_FEATURES, undefined, [], NEED_REPLY)), 1),
      be.offeredFeatures(),
    );

    const config = decodeReply(
      await d.dispatch(
        message(
          R.GET_CONFIG,
          encodeConfig({ offset: 0, size: 40, flags: 0, data: new Uint8Array(40) }),
        ),
      ),
    );
    assert.equal(config.header.request, R.GET_CONFIG);
    assert.equal(config.payload.length, CONFIG_HEADER_SIZE + 40);
    assert.deepEqual(decodeConfig(config.payload).data, b.device.readConfig().subarray(0, 40));

    const base = decodeReply(
      await d.dispatch(message(R.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 }))),
    );
    assert.equal(base.header.request, R.GET_VRING_BASE);
    assert.deepEqual(decodeVringState(base.payload), { index: 1, num: 0 });
  }),
);

Deno.test(
  "REPLY_ACK: a u64 0 or 1 only when negotiated and NEED_REPLY is set",
  withDispatcher(async (d) => {
    // Not negotiated yet: silence even with NEED_REPLY, success or failure.
    assert.equal(await d.dispatch(message(R.SET_OWNER, undefined, [], NEED_REPLY)), undefined);
    assert.equal(
      await d.dispatch(
        message(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 3 }), [], NEED_REPLY),
      ),
      undefined,
    );
    await negotiate(d, bit(ProtocolFeature.REPLY_ACK));
    assert.equal(
      u64Reply(await d.dispatch(message(R.SET_OWNER, undefined, [], NEED_REPLY)), 3),
      0n,
    );
    assert.equal(await d.dispatch(message(R.SET_OWNER)), undefined);
    assert.equal(
      u64Reply(
        await d.dispatch(
          message(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 64 }), [], NEED_REPLY),
        ),
        R.SET_VRING_NUM,
      ),
      0n,
    );
    // Refused by the back-end, by validation (short payload), by decoding (unknown kick bits).
    for (
      const m of [
        message(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 3 }), [], NEED_REPLY),
        message(R.SET_VRING_NUM, new Uint8Array(4), [], NEED_REPLY),
        message(R.SET_VRING_CALL, encodeU64(0x200), [], NEED_REPLY),
        message(R.SET_FEATURES, encodeU64(bit(63)), [], NEED_REPLY),
      ]
    ) {
      assert.equal(
        u64Reply(await d.dispatch(m), m.header.request),
        1n,
        `request ${m.header.request}`,
      );
    }
    // The same failure without NEED_REPLY: silence.
    assert.equal(
      await d.dispatch(message(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 3 }))),
      undefined,
    );
    // A header that claims to be a reply is refused.
    assert.equal(
      u64Reply(
        await d.dispatch(message(R.SET_OWNER, undefined, [], NEED_REPLY | FLAG_REPLY)),
        R.SET_OWNER,
      ),
      1n,
    );
  }),
);

Deno.test(
  "a failed request with its own reply gets an empty payload",
  withDispatcher(async (d) => {
    const window = (offset: number, size: number) =>
      message(R.GET_CONFIG, encodeConfig({ offset, size, flags: 0, data: new Uint8Array(size) }));
    // CONFIG not negotiated: refused by validation.
    let reply = decodeReply(await d.dispatch(window(0, 8)));
    assert.equal(reply.header.request, R.GET_CONFIG);
    assert.equal(reply.payload.length, 0);
    await negotiate(d, bit(ProtocolFeature.CONFIG) | bit(ProtocolFeature.REPLY_ACK));
    assert.equal(
      decodeReply(await d.dispatch(window(0, 8))).payload.length,
      CONFIG_HEADER_SIZE + 8,
    );
    // Past the end of the configuration space.
    reply = decodeReply(await d.dispatch(window(90, 8)));
    assert.equal(reply.payload.length, 0);
    // Even with NEED_REPLY the answer is the empty own reply, not an ack.
    const asked = message(
      R.GET_CONFIG,
      encodeConfig({ offset: 200, size: 8, flags: 0, data: new Uint8Array(8) }),
      [],
      NEED_REPLY,
    );
    reply = decodeReply(await d.dispatch(asked));
    assert.equal(reply.payload.length, 0);
    // A ring that does not exist.
    reply = decodeReply(
      await d.dispatch(message(R.GET_VRING_BASE, encodeVringState({ index: 9, num: 0 }))),
    );
    assert.equal(reply.header.request, R.GET_VRING_BASE);
    assert.equal(reply.payload.length, 0);
  }),
);

Deno.test(
  "unknown and unimplemented requests: ack 1 when asked, silence otherwise",
  withDispatcher(async (d) => {
    await negotiate(d, bit(ProtocolFeature.REPLY_ACK));
    for (const request of [0, 99, 0xffff_ffff, R.GPU_SET_SOCKET, R.SET_VRING_ENDIAN]) {
      const original = eventfd();
      const fds = request === R.GPU_SET_SOCKET ? [dupFd(original)] : [];
      const payload = request === R.SET_VRING_ENDIAN
        ? encodeVringState({ index: 0, num: 0 })
        : undefined;
      assert.equal(
        u64Reply(await d.dispatch(message(request, payload, fds, NEED_REPLY)), request),
        1n,
      );
      assert.deepEqual(copiesOf(original), []);
      closeQuietly(original);
      assert.equal(await d.dispatch(message(request, payload)), undefined);
    }
  }),
);

Deno.test(
  "fds that come with a message are closed on every path",
  withDispatcher(async (d, b) => {
    await negotiate(d, b.backend.offeredProtocolFeatures());
    const shm = new SharedGuestMemory(1 << 20);
    try {
      const cases: { what: string; make: (fds: number[]) => IncomingMessage; count: number }[] = [
        {
          what: "fd on a request that takes none",
          make: (fds) => message(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 }), fds),
          count: 1,
        },
        {
          what: "fd despite the no-fd bit",
          make: (fds) =>
            message(R.SET_VRING_CALL, encodeVringFdIndex({ index: 0, noFd: true }), fds),
          count: 1,
        },
        {
          what: "two fds on a kick",
          make: (fds) =>
            message(R.SET_VRING_KICK, encodeVringFdIndex({ index: 0, noFd: false }), fds),
          count: 2,
        },
        {
          what: "kick for a ring that does not exist",
          make: (fds) =>
            message(R.SET_VRING_KICK, encodeVringFdIndex({ index: 7, noFd: false }), fds),
          count: 1,
        },
        {
          what: "call for a ring that does not exist",
          make: (fds) =>
            message(R.SET_VRING_CALL, encodeVringFdIndex({ index: 7, noFd: false }), fds),
          count: 1,
        },
        {
          what: "one region, two fds",
          make: (fds) => message(R.SET_MEM_TABLE, encodeMemoryTable([shm.desc()]), fds),
          count: 2,
        },
        {
          what: "a memory table that cannot be mapped",
          make: (fds) =>
            message(R.SET_MEM_TABLE, encodeMemoryTable([{ ...shm.desc(), size: 1n << 30n }]), fds),
          count: 1,
        },
        {
          what: "an unimplemented request",
          make: (fds) => message(R.GPU_SET_SOCKET, undefined, fds),
          count: 1,
        },
        {
          what: "an unknown request",
          make: (fds) => message(1234, undefined, fds),
          count: 3,
        },
        {
          what: "a bad version",
          make: (fds) => message(R.SET_VRING_CALL, encodeU64(0), fds, 2),
          count: 1,
        },
      ];
      let serial = 0;
      for (const c of cases) {
        const originals = Array.from(
          { length: c.count },
          () => memfdCreate(`dispatcher-test-${Deno.pid}-${++serial}`),
        );
        await d.dispatch(c.make(originals.map(dupFd)));
        for (const fd of originals) {
          assert.deepEqual(copiesOf(fd), [], `${c.what}: an fd was left open`);
          closeQuietly(fd);
        }
      }

      // Accepted: a memory table's fd is closed once mapped, a call fd is kept by the ring.
      await d.dispatch(message(R.SET_MEM_TABLE, encodeMemoryTable([shm.desc()]), [shm.dup()]));
      assert.deepEqual(shm.copies(), []);
      assert.equal(shm.mappingCount(), 2);
      const call = eventfd();
      const callMessage = message(
        R.SET_VRING_CALL,
        encodeVringFdIndex({ index: 1, noFd: false }),
        [dupFd(call)],
      );
      await d.dispatch(callMessage);
      assert.equal(copiesOf(call).length, 1, "the ring's call fd was closed");
      assert.deepEqual(callMessage.fds, [NO_FD]);
      await b.backend.disconnect();
      assert.deepEqual(copiesOf(call), []);
      closeQuietly(call);
      assert.equal(shm.mappingCount(), 1);
    } finally {
      shm.close();
    }
  }),
);
