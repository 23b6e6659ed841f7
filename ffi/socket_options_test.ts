import assert from "node:assert/strict";
import { AF_UNIX, SOCK_DGRAM, SOCK_STREAM } from "./constants.ts";
import { closeFd, pipe2 } from "./fd.ts";
import { SyscallError } from "./errno.ts";
import { bindUnix, listenSocket, socketUnix } from "./socket.ts";
import {
  closeOnExec,
  setCloseOnExec,
  SO_ACCEPTCONN,
  SO_DOMAIN,
  SO_TYPE,
  socketIntOption,
} from "./socket_options.ts";

Deno.test("socketIntOption tells family, type and listening state", () => {
  const dir = Deno.makeTempDirSync();
  const listening = socketUnix(SOCK_STREAM);
  const datagram = socketUnix(SOCK_DGRAM);
  try {
    bindUnix(listening, `${dir}/s`);
    assert.equal(socketIntOption(listening, SO_ACCEPTCONN), 0);
    listenSocket(listening, 1);
    assert.equal(socketIntOption(listening, SO_ACCEPTCONN), 1);
    assert.equal(socketIntOption(listening, SO_DOMAIN), AF_UNIX);
    assert.equal(socketIntOption(listening, SO_TYPE), SOCK_STREAM);
    assert.equal(socketIntOption(datagram, SO_TYPE), SOCK_DGRAM);
  } finally {
    closeFd(listening);
    closeFd(datagram);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("socketIntOption on a pipe is ENOTSOCK; close-on-exec can be set and cleared", () => {
  const [r, w] = pipe2(0);
  try {
    assert.throws(() => socketIntOption(r, SO_TYPE), (e) => {
      assert.ok(e instanceof SyscallError);
      assert.equal(e.code, "ENOTSOCK");
      return true;
    });
    assert.equal(closeOnExec(r), false);
    setCloseOnExec(r, true);
    assert.equal(closeOnExec(r), true);
    setCloseOnExec(r, false);
    assert.equal(closeOnExec(r), false);
  } finally {
    closeFd(r);
    closeFd(w);
  }
});
