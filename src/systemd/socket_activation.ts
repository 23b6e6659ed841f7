/**
 * systemd socket activation (sd_listen_fds(3)): a service started for a
 * `.socket` unit finds its listening socket at fd 3, announced by
 * `LISTEN_PID` (this process) and `LISTEN_FDS` (how many fds), optionally
 * named by `LISTEN_FDNAMES`. The variables are removed once read, so no
 * program this one starts takes them for its own.
 *
 * @module
 */

import {
  AF_UNIX,
  setCloseOnExec,
  SO_ACCEPTCONN,
  SO_DOMAIN,
  SO_TYPE,
  SOCK_STREAM,
  socketIntOption,
  SyscallError,
} from "../../ffi/mod.ts";

/** The first fd systemd passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/** The variables socket activation sets. */
export const LISTEN_VARIABLES = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] as const;

/**
 * Set (to "1") in this process's environment once it took an activated
 * socket, so that a sandboxed daemon it launches knows its listener comes
 * from the launcher and not from a socket path of its own.
 */
export const ACTIVATED_LISTENER_ENV = "VHOSTD_ACTIVATED_LISTENER";

/** Socket activation that cannot be used (the message says why, for the operator). */
export class SocketActivationError extends Error {}

/** The environment as socket activation reads and clears it (`Deno.env` by default). */
export interface ActivationEnvironment {
  /** The value of `name`, or undefined. */
  get(name: string): string | undefined;
  /** Removes `name`. */
  delete(name: string): void;
}

/** Whether this process was started with socket activation variables. */
export function socketActivationRequested(env: ActivationEnvironment = Deno.env): boolean {
  return env.get("LISTEN_FDS") !== undefined;
}

/** The activated socket. */
export interface ActivatedSocket {
  /** Its fd (always LISTEN_FDS_START). */
  fd: number;
  /** Its name from LISTEN_FDNAMES (FileDescriptorName=, default the socket unit's name). */
  name?: string;
}

/**
 * Checks the activation variables (which are removed from `env` whatever
 * the outcome) and the socket at fd 3: it must be one listening AF_UNIX
 * stream socket passed to this process. Close-on-exec is set on it.
 * Throws SocketActivationError otherwise.
 */
export function takeActivatedSocket(
  env: ActivationEnvironment = Deno.env,
  pid: number = Deno.pid,
): ActivatedSocket {
  const [listenPid, listenFds, names] = LISTEN_VARIABLES.map((name) => env.get(name));
  for (const name of LISTEN_VARIABLES) env.delete(name);
  if (listenFds === undefined) throw new SocketActivationError("LISTEN_FDS is not set");
  if (listenPid === undefined) {
    throw new SocketActivationError("LISTEN_FDS is set but LISTEN_PID is not");
  }
  if (!/^\d+$/.test(listenPid) || Number(listenPid) !== pid) {
    throw new SocketActivationError(
      `LISTEN_PID is ${listenPid}, not this process (${pid}): the sockets were passed to another program`,
    );
  }
  if (listenFds !== "1") {
    throw new SocketActivationError(
      `LISTEN_FDS is ${listenFds}: vhostd serves exactly one socket (one ListenStream= in the .socket unit)`,
    );
  }
  const fd = LISTEN_FDS_START;
  const problem = listeningUnixStreamProblem(fd);
  if (problem) {
    throw new SocketActivationError(`socket activation: fd ${fd} ${problem}`);
  }
  setCloseOnExec(fd, true);
  const name = names?.split(":")[0];
  return name ? { fd, name } : { fd };
}

/** Why `fd` is not a listening AF_UNIX stream socket, or undefined when it is one. */
function listeningUnixStreamProblem(fd: number): string | undefined {
  try {
    if (socketIntOption(fd, SO_DOMAIN) !== AF_UNIX) return "is not a Unix socket";
    if (socketIntOption(fd, SO_TYPE) !== SOCK_STREAM) return "is not a stream socket";
    if (socketIntOption(fd, SO_ACCEPTCONN) !== 1) {
      return "is not listening (the .socket unit needs Accept=no)";
    }
    return undefined;
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    if (e.code === "EBADF") return "is not open";
    if (e.code === "ENOTSOCK") return "is not a socket";
    return `is not usable: ${e.code}`;
  }
}
