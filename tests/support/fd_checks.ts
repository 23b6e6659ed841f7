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

/**
 * What a failed fd check should show: the fds (`fdTargets()` lines) present
 * now and not before, and the threads before and after (an extra Worker
 * shows as a thread and its eventpoll/eventfd pair).
 */
export function fdLeakDetail(
  targetsBefore: readonly string[],
  targetsAfter: readonly string[],
  threadsBefore: readonly string[],
  threadsAfter: readonly string[],
): string {
  const had = new Set(targetsBefore);
  const added = targetsAfter.filter((line) => !had.has(line));
  return `fds now that were not there before:\n${added.join("\n") || "(none by number)"}\n` +
    `threads before: ${threadsBefore.join(", ")}\nthreads after: ${threadsAfter.join(", ")}\n` +
    `all fds now:\n${targetsAfter.join("\n")}`;
}
