import assert from "node:assert/strict";
import { parseMetricsAddress } from "./metrics_address.ts";
import { UsageError } from "../cli/usage_error.ts";

Deno.test("--metrics takes loopback addresses and unix: paths", () => {
  assert.deepEqual(parseMetricsAddress("127.0.0.1:9100"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 9100,
  });
  assert.deepEqual(parseMetricsAddress("127.0.0.1:0"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 0,
  });
  assert.deepEqual(parseMetricsAddress("[::1]:9100"), {
    transport: "tcp",
    hostname: "::1",
    port: 9100,
  });
  assert.deepEqual(parseMetricsAddress("localhost:80"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 80,
  });
  assert.deepEqual(parseMetricsAddress("unix:/run/m.sock"), {
    transport: "unix",
    path: "/run/m.sock",
  });
});

Deno.test("--metrics refuses anything reachable from the network, with one line", () => {
  const refused: [string, RegExp][] = [
    ["0.0.0.0:9100", /0\.0\.0\.0 is not a loopback address/],
    ["192.168.1.2:9100", /not a loopback address/],
    ["[::]:9100", /\[::\] is not a loopback address/],
    ["example.com:9100", /not a loopback address/],
    ["128.0.0.1:9100", /not a loopback address/],
    ["127.0.0.256:9100", /not a loopback address/],
    ["127.0.0.2:9100", /served only on 127\.0\.0\.1, \[::1\] or a unix: socket/],
    ["::1:9100", /must be HOST:PORT/],
    ["127.0.0.1", /must be HOST:PORT/],
    ["127.0.0.1:99999", /out of range/],
    ["127.0.0.1:-1", /must be HOST:PORT/],
    ["unix:", /needs a socket path/],
    [":9100", /not a loopback address/],
  ];
  for (const [text, message] of refused) {
    assert.throws(() => parseMetricsAddress(text), (e: unknown) => {
      assert.ok(e instanceof UsageError, text);
      assert.match(e.message, message, text);
      assert.ok(!e.message.includes("\n"), text);
      return true;
    });
  }
});
