/**
 * The hand-shake between the launcher (the `vhostd fs` the user started) and
 * the sandboxed daemon it spawned, over a Unix socket pair: the daemon says
 * `ready` once it only waits for its new root; the launcher switches it and
 * answers `go`; the daemon confines itself the rest of the way and says
 * `confined`; the launcher creates the socket and sends it with `listen`.
 * Instead of an answer the launcher may say `fail <why>`.
 *
 * @module
 */

import {
  closeQuietly,
  dupFd,
  pollFd,
  POLLIN,
  receiveMessage,
  sendMessage,
  SOCK_STREAM,
  socketPair,
} from "../../ffi/mod.ts";

/** The environment variable that names the daemon's end of the channel. */
export const STAGE_CHANNEL_ENV = "VHOSTD_SANDBOX_CHANNEL";

/** What one side received. */
export interface StageMessage {
  /** The text (one line, without the newline); "" when the peer closed. */
  text: string;
  /** Fds that came with it (close-on-exec; the caller owns them). */
  fds: number[];
}

/**
 * A socket pair for the hand-shake: the launcher's end has close-on-exec
 * set, the daemon's end does not (it is inherited through execve).
 */
export function openStageChannel(): { launcherEnd: number; daemonEnd: number } {
  const [a, b] = socketPair(SOCK_STREAM, 0);
  try {
    return { launcherEnd: dupFd(a), daemonEnd: b };
  } finally {
    closeQuietly(a);
  }
}

/** Sends one line, with `fds` attached. */
export function sendStageMessage(fd: number, text: string, fds: readonly number[] = []): void {
  sendMessage(fd, new TextEncoder().encode(`${text}\n`), fds);
}

/** Receives one line (blocking), with up to 4 attached fds. */
export function receiveStageMessage(fd: number): StageMessage {
  const buf = new Uint8Array(4096);
  const received = receiveMessage(fd, buf, 4);
  return {
    text: new TextDecoder().decode(buf.subarray(0, received.bytes)).trimEnd(),
    fds: received.fds,
  };
}

/**
 * Receives one line without blocking the event loop for long: waits in
 * short polls and yields between them, so signal listeners keep running.
 */
export async function awaitStageMessage(fd: number): Promise<StageMessage> {
  while (pollFd(fd, POLLIN, 50) === 0) await new Promise((resolve) => setTimeout(resolve, 0));
  return receiveStageMessage(fd);
}
