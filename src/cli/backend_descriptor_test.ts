import assert from "node:assert/strict";
import { DEVICE_MODULES } from "../devices/device_list.ts";
import type { DeviceModule } from "../devices/device_module.ts";
import {
  backendDescriptor,
  defaultBinary,
  VHOST_USER_BACKEND_TYPES,
} from "./backend_descriptor.ts";

/**
 * Checks `value` against the schema's VhostUserBackend: the required
 * `description`, `type` (a VHostUserBackendType) and `binary` (absolute)
 * strings, the optional `tags` list of strings, and nothing else.
 */
function assertVhostUserBackend(value: unknown): void {
  assert.ok(typeof value === "object" && value !== null && !Array.isArray(value));
  const record = value as Record<string, unknown>;
  for (const key of ["description", "type", "binary"]) {
    assert.equal(typeof record[key], "string", `${key} must be a string`);
  }
  assert.ok(VHOST_USER_BACKEND_TYPES.includes(record.type as string), `type ${record.type}`);
  assert.ok((record.binary as string).startsWith("/"), "binary must be an absolute path");
  if ("tags" in record) {
    assert.ok(Array.isArray(record.tags) && record.tags.every((t) => typeof t === "string"));
  }
  const extra = Object.keys(record).filter(
    (k) => !["description", "type", "binary", "tags"].includes(k),
  );
  assert.deepEqual(extra, [], "members the schema does not define");
}

Deno.test("blk and fs have descriptors of the schema's block and fs types", () => {
  const types = Object.fromEntries(DEVICE_MODULES.map((m) => [m.kind, m.descriptor?.type]));
  assert.equal(types.blk, "block");
  assert.equal(types.fs, "fs");
  for (const module of DEVICE_MODULES.filter((m) => m.descriptor)) {
    const descriptor = backendDescriptor(module, "/usr/local/bin/vhostd-x");
    assert.ok(descriptor, module.kind);
    assertVhostUserBackend(JSON.parse(JSON.stringify(descriptor)));
    assert.equal(descriptor.binary, "/usr/local/bin/vhostd-x");
  }
});

Deno.test("no descriptor for a device without one, or with a type the schema lacks", () => {
  const bare: DeviceModule = {
    kind: "bare",
    summary: "test device",
    run: () => Promise.resolve(0),
    createQueueHandler: () => ({ handle: () => 0 }),
  };
  assert.equal(backendDescriptor(bare, "/x"), undefined);
  const odd = { ...bare, descriptor: { type: "teleporter", description: "no" } };
  assert.equal(backendDescriptor(odd, "/x"), undefined);
});

Deno.test("the default binary: the vhostd-KIND link beside a compiled vhostd", () => {
  assert.deepEqual(
    defaultBinary("blk", { standalone: true, execPath: "/opt/vhostd/bin/vhostd" }),
    { path: "/opt/vhostd/bin/vhostd-blk" },
  );
  const run = defaultBinary("fs", { standalone: false, execPath: "/usr/bin/deno" });
  assert.equal(run.path, "/usr/local/bin/vhostd-fs");
  assert.match(run.note ?? "", /not a compiled vhostd/);
});
