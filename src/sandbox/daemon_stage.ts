/**
 * The sandboxed daemon's side of the switch: tell the launcher it is
 * ready, wait for its new root and the listening socket, check that the
 * root really changed.
 *
 * @module
 */

import {
  chdir,
  chroot,
  closeQuietly,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  openFile,
  setThreadCapabilities,
  threadCapabilities,
  useProcSelfFdDirectory,
} from "../../ffi/mod.ts";
import { CAPABILITY_NUMBERS } from "./capabilities.ts";
import { receiveStageMessage, sendStageMessage, STAGE_CHANNEL_ENV } from "./stage_channel.ts";
import { isSandboxMode, type SandboxMode } from "./sandbox_mode.ts";

/** An error of the sandbox set-up (the daemon must not serve). */
export class SandboxError extends Error {}

/** When this process is a sandboxed daemon: its end of the launcher channel and its mode. */
export function sandboxStage(): { channel: number; mode: SandboxMode } | undefined {
  const value = Deno.env.get(STAGE_CHANNEL_ENV);
  if (value === undefined) return undefined;
  const [fd, mode] = value.split(":");
  if (!/^\d+$/.test(fd) || mode === undefined || !isSandboxMode(mode)) {
    throw new SandboxError(`${STAGE_CHANNEL_ENV} must be FD:MODE, got "${value}"`);
  }
  return { channel: Number(fd), mode };
}

function rootIdentity(): string {
  const info = Deno.statSync("/");
  return `${info.dev}:${info.ino}`;
}

/**
 * Says `ready` on `channel` and waits for the launcher's `go`. With
 * `expectNewRoot` (namespace mode) the launcher has switched this process's
 * root by then, which is checked: everything this process needs from outside
 * the new root must be open (or loaded) before.
 */
export function awaitLauncher(channel: number, expectNewRoot: boolean): void {
  Deno.env.delete(STAGE_CHANNEL_ENV);
  // A working directory on the old root would stay a way out of the new one.
  chdir("/");
  const before = rootIdentity();
  sendStageMessage(channel, "ready");
  expectMessage(channel, "go", 0);
  chdir("/");
  if (expectNewRoot && rootIdentity() === before) {
    throw new SandboxError("sandbox set-up failed: the root directory did not change");
  }
}

/**
 * Says `confined` on `channel` (so the socket appears only now) and waits
 * for the listening socket; closes the channel.
 */
export function receiveListener(channel: number): number {
  try {
    sendStageMessage(channel, "confined");
    return expectMessage(channel, "listen", 1)[0];
  } finally {
    closeQuietly(channel);
  }
}

function expectMessage(channel: number, text: string, fdCount: number): number[] {
  const reply = receiveStageMessage(channel);
  if (reply.text !== text || reply.fds.length !== fdCount) {
    for (const fd of reply.fds) closeQuietly(fd);
    const why = reply.text.startsWith("fail ") ? reply.text.slice(5) : "the launcher went away";
    throw new SandboxError(`sandbox set-up failed: ${why}`);
  }
  return reply.fds;
}

/**
 * `--sandbox chroot`: makes `sharedDir` this process's root (every thread
 * shares it), keeping /proc/self/fd reachable through an fd opened before,
 * and gives up CAP_SYS_CHROOT on this thread. The runtime threads keep it
 * (capabilities are per thread); the seccomp filter refuses chroot and setns,
 * the only calls it allows.
 */
export function enterChroot(sharedDir: string): void {
  useProcSelfFdDirectory(openFile("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  chroot(sharedDir);
  chdir("/");
  const sets = threadCapabilities();
  const chrootBit = ~(1n << BigInt(CAPABILITY_NUMBERS.sys_chroot));
  setThreadCapabilities({
    effective: sets.effective & chrootBit,
    permitted: sets.permitted & chrootBit,
    inheritable: sets.inheritable & chrootBit,
  });
}
