/**
 * vhostd as a multi-call program: started under the name `vhostd-<kind>`
 * (a link to the binary), it is `vhostd <kind>`. Management software that
 * runs a back-end binary directly (`BINARY --print-capabilities`, then
 * `BINARY --fd=N ...`, as QEMU's back-end descriptors and libvirt do) needs
 * one program per device type.
 *
 * @module
 */

import { DEVICE_MODULES } from "../devices/device_list.ts";

/** The program name that makes vhostd serve `kind`: `vhostd-blk`. */
export function multiCallName(kind: string): string {
  return `vhostd-${kind}`;
}

/**
 * The arguments to run: `args` with the device kind in front when the
 * program was started as `vhostd-<kind>` (`argv0` is its argv[0]).
 */
export function multiCallArgs(argv0: string, args: string[]): string[] {
  const name = argv0.slice(argv0.lastIndexOf("/") + 1);
  const module = DEVICE_MODULES.find((m) => multiCallName(m.kind) === name);
  return module ? [module.kind, ...args] : args;
}
