/**
 * systemd readiness notification (sd_notify(3)): when `NOTIFY_SOCKET` names
 * an AF_UNIX datagram socket (a path, or `@name` in the abstract namespace),
 * the service sends `READY=1` once it serves and `STOPPING=1` when it begins
 * to shut down, one datagram each.
 *
 * The socket is connected when the notifier is made, so a daemon that later
 * confines itself (a new root) still reaches it. A notification that cannot
 * be sent is logged; it never stops the daemon.
 *
 * @module
 */

import {
  closeQuietly,
  connectUnix,
  sendMessage,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  socketUnix,
  SyscallError,
} from "../../ffi/mod.ts";
import { log } from "../log.ts";

/** The variable that names the notification socket. */
export const NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET";

/**
 * The socket address `NOTIFY_SOCKET` names: an absolute path, or a leading
 * '@' for the abstract namespace (a NUL byte); undefined for what vhostd
 * cannot reach (a relative path, `vsock:`).
 */
export function notifySocketAddress(value: string): string | undefined {
  if (value.startsWith("/")) return value;
  if (value.startsWith("@") && value.length > 1) return `\0${value.slice(1)}`;
  return undefined;
}

/** A connected line to the service manager. */
export class ServiceNotifier {
  readonly #fd: number;
  readonly #where: string;

  private constructor(fd: number, where: string) {
    this.#fd = fd;
    this.#where = where;
  }

  /**
   * The notifier `NOTIFY_SOCKET` asks for, or undefined when it is not set
   * (or unusable, with a warning). `clear` removes the variable so that the
   * programs this one starts do not notify in its name; a launcher whose
   * sandboxed daemon notifies for it keeps it.
   */
  static fromEnvironment(clear = true): ServiceNotifier | undefined {
    const value = Deno.env.get(NOTIFY_SOCKET_ENV);
    if (value === undefined) return undefined;
    if (clear) Deno.env.delete(NOTIFY_SOCKET_ENV);
    const address = notifySocketAddress(value);
    if (address === undefined) {
      log.warn(`${NOTIFY_SOCKET_ENV}="${value}" is not a Unix socket path or @name: not notifying`);
      return undefined;
    }
    // Non-blocking: a manager that stopped reading must not hold the daemon up.
    const fd = socketUnix(SOCK_DGRAM, SOCK_CLOEXEC | SOCK_NONBLOCK);
    try {
      connectUnix(fd, address);
    } catch (e) {
      closeQuietly(fd);
      log.warn(`cannot reach ${NOTIFY_SOCKET_ENV} ${value}: ${describe(e)}; not notifying`);
      return undefined;
    }
    return new ServiceNotifier(fd, value);
  }

  /** Sends `fields` (`KEY=value` lines) as one datagram; false (logged) when it cannot. */
  notify(fields: string[]): boolean {
    try {
      sendMessage(this.#fd, new TextEncoder().encode(fields.join("\n") + "\n"));
      return true;
    } catch (e) {
      log.warn(`cannot notify ${this.#where} (${fields.join(", ")}): ${describe(e)}`);
      return false;
    }
  }

  /** `READY=1`, with `MAINPID=` when given (the pid systemd should watch). */
  ready(mainPid?: number): boolean {
    return this.notify(mainPid === undefined ? ["READY=1"] : ["READY=1", `MAINPID=${mainPid}`]);
  }

  /** `STOPPING=1`: shutdown has begun. */
  stopping(): boolean {
    return this.notify(["STOPPING=1"]);
  }

  /** Closes the socket. */
  close(): void {
    closeQuietly(this.#fd);
  }
}

function describe(e: unknown): string {
  return e instanceof SyscallError ? e.code : e instanceof Error ? e.message : String(e);
}
