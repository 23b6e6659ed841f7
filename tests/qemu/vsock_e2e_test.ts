/**
 * End to end against QEMU 10: a TCG guest with `vhost-user-vsock-pci` served
 * by `vhostd vsock`, Debian's socat in the guest, Deno's Unix sockets on the
 * host. Ten concurrent streams each way with SHA-256 checksums, a 64 MiB
 * guest-to-host stream, and a host peer that vanishes mid-stream while the
 * other streams run.
 */

import assert from "node:assert/strict";
import { requireGuestEnvironment, runGuest } from "./harness.ts";
import { VhostdProcess } from "./migration_harness.ts";

const MiB = 1024 * 1024;
const STREAMS = 10;
const STREAM_SIZE = MiB;
const BIG_SIZE = 64 * MiB;
const GUEST_CID = 3;
/** Guest-to-host streams go to host ports 5000..5009, the big one to 5100, the vanishing one to 5200. */
const TO_HOST_PORT = 5000;
const BIG_PORT = 5100;
const VANISH_PORT = 5200;
/** Bytes the vanishing host peer reads before it closes. */
const VANISH_AFTER = 256 * 1024;
/** Host-to-guest streams go to guest ports 6000..6009; the guest says it listens on host port 7000. */
const TO_GUEST_PORT = 6000;
const READY_PORT = 7000;

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads `conn` to EOF; returns the SHA-256 and the byte count. */
async function digestStream(conn: Deno.UnixConn): Promise<{ sha256: string; length: number }> {
  const parts: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of conn.readable) {
    parts.push(chunk);
    length += chunk.length;
  }
  const all = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return { sha256: hex(await crypto.subtle.digest("SHA-256", all)), length };
}

/** One connection accepted on `${uds}_${port}`, then the listener closes. */
async function acceptOne(path: string): Promise<Deno.UnixConn> {
  const listener = Deno.listen({ transport: "unix", path });
  try {
    return await listener.accept();
  } finally {
    listener.close();
  }
}

function randomBytes(size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) crypto.getRandomValues(out.subarray(at, at + 65536));
  return out;
}

/** Connects to the main socket, asks for guest `port`, returns the connection once OK came. */
async function connectToGuest(uds: string, port: number): Promise<Deno.UnixConn> {
  const conn = await Deno.connect({ transport: "unix", path: uds });
  await conn.write(new TextEncoder().encode(`CONNECT ${port}\n`));
  const answer = new Uint8Array(64);
  let got = 0;
  while (!answer.subarray(0, got).includes(0x0a)) {
    const n = await conn.read(answer.subarray(got));
    if (n === null) throw new Error(`CONNECT ${port}: closed before OK`);
    got += n;
  }
  const line = new TextDecoder().decode(answer.subarray(0, got));
  assert.match(line, /^OK \d+\n$/, `CONNECT ${port} answered ${JSON.stringify(line)}`);
  return conn;
}

/**
 * socat option for a guest connect() that waits 30 s for the RESPONSE
 * instead of Linux's 2 s (a busy TCG host can be slower than that):
 * SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD (6) at level AF_VSOCK (40), a 16-byte
 * struct timeval {30, 0}.
 */
const CONNECT_TIMEOUT_OPTION = "setsockopt-bin=40:6:x1e000000000000000000000000000000";

function guestScript(): string {
  const last = STREAMS - 1;
  const connect = (port: string) => `VSOCK-CONNECT:2:${port},${CONNECT_TIMEOUT_OPTION}`;
  return `
for i in $(seq 0 ${last}); do head -c ${STREAM_SIZE} /dev/urandom > /tmp/g$i; done
dd if=/dev/urandom of=/tmp/big bs=1M count=${BIG_SIZE / MiB} 2>/dev/null
for i in $(seq 0 ${last}); do echo "G$i $(sha256sum < /tmp/g$i | cut -d' ' -f1)"; done
echo "BIG $(sha256sum < /tmp/big | cut -d' ' -f1)"
# Host-to-guest listeners; wait until each says it listens, then tell the host.
for i in $(seq 0 ${last}); do
  socat -d -d -u VSOCK-LISTEN:$((${TO_GUEST_PORT} + i)) CREATE:/tmp/h$i 2>/tmp/l$i &
done
for i in $(seq 0 ${last}); do
  until grep -q "listening on" /tmp/l$i; do usleep 20000; done
done
socat -u /dev/null ${connect(String(READY_PORT))} || echo "READY-FAILED $?"
# Guest-to-host streams, the big one and the one whose host peer vanishes, all at once.
for i in $(seq 0 ${last}); do
  ( socat -u FILE:/tmp/g$i ${connect(`$((${TO_HOST_PORT} + i))`)} || echo "G$i-FAILED $?" ) &
done
( socat -u FILE:/tmp/big ${connect(String(BIG_PORT))} || echo "BIG-FAILED $?" ) &
( head -c ${16 * MiB} /dev/zero | socat -u - ${
    connect(String(VANISH_PORT))
  }; echo "VANISH-DONE $?" ) &
wait
for i in $(seq 0 ${last}); do echo "H$i $(sha256sum < /tmp/h$i | cut -d' ' -f1)"; done
echo ALL-DONE
`;
}

Deno.test("QEMU guest: vsock streams both ways through vhostd vsock, checksums, a vanishing peer", async () => {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-vsock-e2e-" });
  const socket = `${dir}/vhost.sock`;
  const uds = `${dir}/vsock`;
  let vhostd: VhostdProcess | undefined;
  try {
    vhostd = await VhostdProcess.startKind(
      "vsock",
      ["--guest-cid", String(GUEST_CID), "--uds-path", uds, "--log-level", "info"],
      dir,
    );

    // Host side of the guest-to-host streams.
    const toHost = Array.from(
      { length: STREAMS },
      (_, i) => acceptOne(`${uds}_${TO_HOST_PORT + i}`).then(digestStream),
    );
    const big = acceptOne(`${uds}_${BIG_PORT}`).then(digestStream);
    const vanish = acceptOne(`${uds}_${VANISH_PORT}`).then(async (conn) => {
      const buf = new Uint8Array(65536);
      let got = 0;
      while (got < VANISH_AFTER) {
        const n = await conn.read(buf);
        if (n === null) break;
        got += n;
      }
      conn.close();
      return got;
    });
    // Host-to-guest streams start once the guest says its listeners are up.
    const sent: string[] = [];
    const toGuest = acceptOne(`${uds}_${READY_PORT}`).then(async (ready) => {
      ready.close();
      await Promise.all(Array.from({ length: STREAMS }, async (_, i) => {
        const data = randomBytes(STREAM_SIZE);
        sent[i] = hex(await crypto.subtle.digest("SHA-256", data));
        const conn = await connectToGuest(uds, TO_GUEST_PORT + i);
        for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
        conn.close();
      }));
    });

    const result = await runGuest({
      script: guestScript(),
      chardevs: [
        "-chardev",
        `socket,id=vhostd0,path=${socket}`,
        "-device",
        "vhost-user-vsock-pci,chardev=vhostd0",
      ],
      memoryMiB: 512,
      timeoutMs: 600_000,
    });
    const context = () =>
      `\n--- guest ---\n${result.output.slice(-3000)}\n--- qemu ---\n${result.qemuStderr}`;
    assert.equal(result.timedOut, false, `guest timed out${context()}`);
    assert.equal(result.exitCode, 0, `guest script failed${context()}`);
    assert.match(result.scriptOutput, /ALL-DONE/, context());
    assert.doesNotMatch(result.scriptOutput, /FAILED/, context());
    const out = result.scriptOutput;
    const guestSum = (name: string) => new RegExp(`^${name} ([0-9a-f]{64})$`, "m").exec(out)?.[1];

    const received = await Promise.all(toHost);
    received.forEach((r, i) => {
      assert.equal(r.length, STREAM_SIZE, `guest-to-host stream ${i} length`);
      assert.equal(r.sha256, guestSum(`G${i}`), `guest-to-host stream ${i} checksum`);
    });
    const bigResult = await big;
    assert.equal(bigResult.length, BIG_SIZE, "64 MiB stream length");
    assert.equal(bigResult.sha256, guestSum("BIG"), "64 MiB stream checksum");
    await toGuest;
    for (let i = 0; i < STREAMS; i++) {
      assert.equal(guestSum(`H${i}`), sent[i], `host-to-guest stream ${i} checksum`);
    }
    // The vanished peer: the guest's writer ended (reset or EOF), nothing else suffered.
    assert.ok((await vanish) >= VANISH_AFTER);
    assert.match(out, /^VANISH-DONE \d+$/m);

    const status = await vhostd.stop();
    const log = await vhostd.log();
    assert.equal(status.code, 0, `vhostd exit status ${status.code}\n${log.slice(-2000)}`);
  } finally {
    await vhostd?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
