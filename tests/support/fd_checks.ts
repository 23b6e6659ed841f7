/**
 * The fd-leak check of the integration tests: after the work, the back-end
 * holds no more fds than before it (fewer is fine: a baseline may catch an
 * fd that was about to close).
 *
 * @module
 */

import assert from "node:assert/strict";

/** Fails with `detail` (e.g. the fd targets) when `after` exceeds `before`. */
export function assertFdsBackTo(after: number, before: number, detail: string): void {
  assert.ok(after <= before, `fds before ${before}, after ${after}:\n${detail}`);
}
