/**
 * The sandboxed daemon's side of the switch: tell the launcher it is
 * ready, wait for its new root and the listening socket, check that the
 * root really changed.
 *
 * @module
 */

import { chdir, closeQuietly } from "../../ffi/mod.ts";
import { receiveStageMessage, sendStageMessage, STAGE_CHANNEL_ENV } from "./stage_channel.ts";

/** An error of the sandbox set-up (the daemon must not serve). */
export class SandboxError extends Error {}

/** The daemon's end of the launcher channel when this process is a sandboxed daemon. */
export function sandboxStageChannel(): number | undefined {
  const value = Deno.env.get(STAGE_CHANNEL_ENV);
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) {
    throw new SandboxError(`${STAGE_CHANNEL_ENV} must be an fd, got "${value}"`);
  }
  return Number(value);
}

function rootIdentity(): string {
  const info = Deno.statSync("/");
  return `${info.dev}:${info.ino}`;
}

/**
 * Waits on `channel` until the launcher has switched this process's root;
 * returns the listening socket it sent. Everything this process needs from
 * outside the new root must be open (or loaded) before.
 */
export function awaitNewRoot(channel: number): number {
  Deno.env.delete(STAGE_CHANNEL_ENV);
  try {
    // A working directory on the old root would stay a way out of the new one.
    chdir("/");
    const before = rootIdentity();
    sendStageMessage(channel, "ready");
    const reply = receiveStageMessage(channel);
    if (reply.text !== "go" || reply.fds.length !== 1) {
      for (const fd of reply.fds) closeQuietly(fd);
      const why = reply.text.startsWith("fail ") ? reply.text.slice(5) : "the launcher went away";
      throw new SandboxError(`sandbox set-up failed: ${why}`);
    }
    chdir("/");
    if (rootIdentity() === before) {
      closeQuietly(reply.fds[0]);
      throw new SandboxError("sandbox set-up failed: the root directory did not change");
    }
    return reply.fds[0];
  } finally {
    closeQuietly(channel);
  }
}
