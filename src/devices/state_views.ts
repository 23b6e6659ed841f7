/**
 * Readable views of device states by device kind, for `vhostd state inspect`.
 *
 * @module
 */

import { describeFsState } from "./fs/fs_state_view.ts";

const VIEWS: Record<string, (state: unknown) => string[]> = {
  fs: describeFsState,
};

/** Extra lines describing `state` of a device of `kind`, or none when the kind has no view. */
export function describeDeviceState(kind: string, state: unknown): string[] {
  return VIEWS[kind]?.(state) ?? [];
}
