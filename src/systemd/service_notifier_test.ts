import assert from "node:assert/strict";
import { NotifyListener } from "../../tests/support/socket_activate.ts";
import { NOTIFY_SOCKET_ENV, notifySocketAddress, ServiceNotifier } from "./service_notifier.ts";

Deno.test("NOTIFY_SOCKET: a path as is, @name in the abstract namespace, nothing else", () => {
  assert.equal(notifySocketAddress("/run/systemd/notify"), "/run/systemd/notify");
  assert.equal(notifySocketAddress("@vhostd/notify"), "\0vhostd/notify");
  assert.equal(notifySocketAddress("@"), undefined);
  assert.equal(notifySocketAddress("relative/notify"), undefined);
  assert.equal(notifySocketAddress("vsock:2:1234"), undefined);
});

Deno.test("the notifier sends READY=1 with MAINPID, then STOPPING=1, to an abstract socket", () => {
  const name = `vhostd-notify-test-${Deno.pid}-${crypto.randomUUID()}`;
  const saved = Deno.env.get(NOTIFY_SOCKET_ENV);
  try {
    using listener = new NotifyListener(`\0${name}`);
    Deno.env.set(NOTIFY_SOCKET_ENV, `@${name}`);
    const notifier = ServiceNotifier.fromEnvironment();
    assert.ok(notifier);
    assert.equal(Deno.env.get(NOTIFY_SOCKET_ENV), undefined, "cleared for child programs");
    try {
      assert.equal(notifier.ready(1234), true);
      assert.deepEqual(listener.next(), new Map([["READY", "1"], ["MAINPID", "1234"]]));
      assert.equal(notifier.ready(), true);
      assert.deepEqual(listener.next(), new Map([["READY", "1"]]));
      assert.equal(notifier.stopping(), true);
      assert.deepEqual(listener.next(), new Map([["STOPPING", "1"]]));
    } finally {
      notifier.close();
    }
  } finally {
    if (saved === undefined) Deno.env.delete(NOTIFY_SOCKET_ENV);
    else Deno.env.set(NOTIFY_SOCKET_ENV, saved);
  }
});

Deno.test("an unreachable or unusable NOTIFY_SOCKET gives no notifier", () => {
  const saved = Deno.env.get(NOTIFY_SOCKET_ENV);
  try {
    Deno.env.set(NOTIFY_SOCKET_ENV, `@vhostd-nobody-listens-${crypto.randomUUID()}`);
    assert.equal(ServiceNotifier.fromEnvironment(), undefined);
    Deno.env.set(NOTIFY_SOCKET_ENV, "relative");
    assert.equal(ServiceNotifier.fromEnvironment(), undefined);
    Deno.env.delete(NOTIFY_SOCKET_ENV);
    assert.equal(ServiceNotifier.fromEnvironment(), undefined);
  } finally {
    if (saved === undefined) Deno.env.delete(NOTIFY_SOCKET_ENV);
    else Deno.env.set(NOTIFY_SOCKET_ENV, saved);
  }
});
