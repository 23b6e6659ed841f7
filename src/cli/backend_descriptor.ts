/**
 * QEMU's vhost-user back-end descriptor (docs/interop/vhost-user.json,
 * `VhostUserBackend`): the JSON file in /usr/share/qemu/vhost-user/ (or
 * /etc/qemu/vhost-user/) through which management software finds a back-end
 * binary for a device type.
 *
 * @module
 */

import type { DeviceModule } from "../devices/device_module.ts";
import { VERSION } from "../version.ts";
import { multiCallName } from "./multi_call.ts";

/** Every `VHostUserBackendType` of the schema. */
export const VHOST_USER_BACKEND_TYPES: readonly string[] = [
  "9p",
  "balloon",
  "block",
  "caif",
  "console",
  "crypto",
  "gpu",
  "input",
  "net",
  "rng",
  "rpmsg",
  "rproc-serial",
  "scsi",
  "vsock",
  "fs",
];

/** A `VhostUserBackend`: description, type and binary are required, tags optional. */
export interface VhostUserBackendDescriptor {
  /** Human-readable; management software may show it. */
  description: string;
  /** A VHostUserBackendType. */
  type: string;
  /** Absolute path of the back-end binary. */
  binary: string;
  /** For debugging only; management software ignores them. */
  tags?: string[];
}

/** The descriptor of `module`'s device with `binary`, or undefined when it has none. */
export function backendDescriptor(
  module: DeviceModule,
  binary: string,
): VhostUserBackendDescriptor | undefined {
  const d = module.descriptor;
  if (d === undefined || !VHOST_USER_BACKEND_TYPES.includes(d.type)) return undefined;
  return {
    description: d.description,
    type: d.type,
    binary,
    tags: [`vhostd ${VERSION}`, `vhostd kind ${module.kind}`],
  };
}

/** Where the running program is, for {@linkcode defaultBinary}. */
export interface RunningProgram {
  /** A compiled binary (`deno compile`), not `deno run`. */
  standalone: boolean;
  /** The binary's path (Deno.execPath()). */
  execPath: string;
}

/**
 * The `binary` a descriptor names by default: the `vhostd-<kind>` link
 * (multi-call name) beside a compiled vhostd. Under `deno run` there is no
 * binary to name, so `/usr/local/bin/vhostd-<kind>`, with a note saying what
 * must be there.
 */
export function defaultBinary(kind: string, program: RunningProgram): {
  path: string;
  note?: string;
} {
  const name = multiCallName(kind);
  if (program.standalone) {
    return { path: `${program.execPath.slice(0, program.execPath.lastIndexOf("/"))}/${name}` };
  }
  const path = `/usr/local/bin/${name}`;
  return {
    path,
    note: `not a compiled vhostd: ${path} must be the compiled binary's ${name} link, ` +
      `or a script running \`deno run -A main.ts ${kind} "$@"\` (or give --binary)`,
  };
}
