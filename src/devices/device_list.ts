/**
 * The devices vhostd serves. Adding a device means adding its module here
 * and nothing else outside its folder. Static imports keep every device
 * inside a `deno compile` binary.
 *
 * @module
 */

import type { DeviceModule } from "./device_module.ts";
import { blkModule } from "./blk/blk_module.ts";
import { fsModule } from "./fs/fs_module.ts";
import { rngModule } from "./rng/rng_module.ts";
import { vsockModule } from "./vsock/vsock_module.ts";

/** Every device kind, in the order `vhostd --help` lists them. */
export const DEVICE_MODULES: readonly DeviceModule[] = [
  blkModule,
  fsModule,
  rngModule,
  vsockModule,
];

/** The module of device `kind`, or `undefined` for an unknown kind. */
export function deviceModule(kind: string): DeviceModule | undefined {
  return DEVICE_MODULES.find((m) => m.kind === kind);
}
