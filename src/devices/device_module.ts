/**
 * What a device folder exports to the rest of vhostd: one object that the
 * command line, the queue Workers and the state tools find by kind in
 * `device_list.ts`. A new device is a folder under `src/devices/` plus one
 * line in that list.
 *
 * @module
 */

import type { QueueHandlerFactory } from "./device.ts";

/** A device kind as vhostd serves it: its command, its data half, its state view. */
export interface DeviceModule {
  /** Command-line name and state-file kind ("blk"); at most 15 ASCII characters. */
  readonly kind: string;
  /** One line for `vhostd --help` ("serve a virtio-blk disk"). */
  readonly summary: string;
  /**
   * Runs `vhostd <kind> ARGS` (options, `--help`, `--print-capabilities`,
   * serving); resolves with the exit code. Throws `UsageError` for bad
   * arguments. Loaded only on the main thread, so a module should import
   * its command lazily (`await import("./x_command.ts")`) to keep queue
   * Workers from loading the command line.
   */
  run(args: string[]): Promise<number>;
  /** Builds the device's data half inside a queue Worker. */
  readonly createQueueHandler: QueueHandlerFactory;
  /** Optional: readable lines about a saved device state, for `vhostd state inspect`. */
  describeState?(state: unknown): string[];
  /**
   * Optional: how QEMU's back-end descriptors (docs/interop/vhost-user.json)
   * name the device, for `vhostd descriptor <kind>`: its VHostUserBackendType
   * ("block", "fs", "rng", "vsock"...) and a description for management
   * software. The command's `--print-capabilities` must answer with the same type.
   */
  readonly descriptor?: { readonly type: string; readonly description: string };
}
