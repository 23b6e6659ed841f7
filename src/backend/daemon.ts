/**
 * The daemon's life cycle: listen on a Unix socket (or an inherited one),
 * serve one front-end at a time, accept the next when it leaves, and shut
 * down cleanly on SIGINT/SIGTERM (rings stopped with nothing in flight,
 * backing flushed, socket removed).
 *
 * @module
 */

import {
  acceptConnection,
  bindUnix,
  closeQuietly,
  connectUnix,
  listenSocket,
  pollFd,
  POLLIN,
  POLLRDHUP,
  setNonBlocking,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  socketUnix,
  SyscallError,
} from "../../ffi/mod.ts";
import type { VirtioDevice } from "../devices/device.ts";
import { log } from "../log.ts";
import { type BackendOptions, VhostUserBackend } from "./backend.ts";
import { Connection } from "./connection.ts";
import { Dispatcher } from "./dispatcher.ts";
import { Poller } from "./poller.ts";
import { WorkerPool } from "./worker_pool.ts";
import { TransferRunner } from "../migration/state_transfer.ts";

/** How the daemon gets its listening socket and what it serves. */
export interface DaemonOptions {
  /** Path to create the listening socket at (removed again on exit). */
  socketPath?: string;
  /** An already bound and listening socket (`--fd`). */
  listenFd?: number;
  /** The device to serve. */
  device: VirtioDevice;
  /** Number of queue Workers (default: one per queue, at most the CPU count). */
  workers?: number;
  /** Device-state options (dump directory, own pipe). */
  backend?: BackendOptions;
}

/** How long a connected front-end may take to hang up when a new one arrives. */
const RECONNECT_GRACE_MS = 200;

/** Signals that shut the daemon down cleanly. */
const SIGNALS = ["SIGINT", "SIGTERM"] as const;

/** A listening socket that cannot be set up. */
export class ListenError extends Error {}

interface Session {
  id: number;
  connection: Connection;
  backend: VhostUserBackend;
  dispatcher: Dispatcher;
  token: number;
}

/** Creates a listening socket at `path`, replacing a stale socket nobody listens on. */
export function listenOnPath(path: string): number {
  let info: Deno.FileInfo | undefined;
  try {
    info = Deno.lstatSync(path);
  } catch {
    info = undefined;
  }
  if (info) {
    if (!info.isSocket) throw new ListenError(`${path} exists and is not a socket`);
    const probe = socketUnix();
    try {
      connectUnix(probe, path);
      throw new ListenError(`${path} is in use by another running back-end`);
    } catch (e) {
      if (e instanceof ListenError) throw e;
      Deno.removeSync(path); // nobody answers: a leftover from a crashed process
    } finally {
      closeQuietly(probe);
    }
  }
  const fd = socketUnix(undefined, SOCK_CLOEXEC | SOCK_NONBLOCK);
  try {
    bindUnix(fd, path);
    listenSocket(fd, 16);
  } catch (e) {
    closeQuietly(fd);
    const why = e instanceof SyscallError ? e.code : String(e);
    throw new ListenError(`cannot listen on ${path}: ${why}`);
  }
  return fd;
}

/** A running back-end daemon. */
export class Daemon {
  readonly #device: VirtioDevice;
  readonly #backendOptions: BackendOptions;
  readonly #transfers: TransferRunner | undefined;
  readonly #pool: WorkerPool;
  readonly #poller = new Poller();
  readonly #listenFd: number;
  readonly #socketPath: string | undefined;
  readonly #listenToken: number;
  #session: Session | undefined;
  #sessions = 0;
  #serial: Promise<void> = Promise.resolve();
  #stopping = false;
  #done: PromiseWithResolvers<number> = Promise.withResolvers<number>();
  readonly #signalHandler = () => this.shutdown("signal");

  private constructor(opts: DaemonOptions, pool: WorkerPool, listenFd: number) {
    this.#device = opts.device;
    this.#transfers = opts.device.stateSupport ? new TransferRunner() : undefined;
    this.#backendOptions = { ...opts.backend, runner: this.#transfers };
    this.#pool = pool;
    this.#listenFd = listenFd;
    this.#socketPath = opts.socketPath;
    this.#listenToken = this.#poller.watch(listenFd, () => this.#accept());
  }

  /** Starts the Workers and begins listening. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    // From the moment the socket exists a signal must end in a clean shutdown, even while
    // the Workers are still starting: note it now, act on it once the daemon exists.
    let signalled = false;
    const early = () => {
      signalled = true;
    };
    for (const signal of SIGNALS) Deno.addSignalListener(signal, early);
    let daemon: Daemon;
    try {
      daemon = await Daemon.#create(opts);
    } finally {
      for (const signal of SIGNALS) Deno.removeSignalListener(signal, early);
    }
    if (signalled) daemon.shutdown("signal during start-up");
    return daemon;
  }

  /** Listens, starts the Workers and installs the signal handlers. */
  static async #create(opts: DaemonOptions): Promise<Daemon> {
    let listenFd: number;
    if (opts.listenFd !== undefined) {
      listenFd = opts.listenFd;
      try {
        setNonBlocking(listenFd, true);
      } catch (e) {
        throw new ListenError(
          `--fd ${listenFd} is not usable: ${e instanceof SyscallError ? e.code : e}`,
        );
      }
    } else if (opts.socketPath !== undefined) {
      listenFd = listenOnPath(opts.socketPath);
    } else {
      throw new ListenError("no socket path and no listening fd given");
    }
    const workers = Math.min(
      opts.workers ??
        Math.max(1, Math.min(opts.device.numQueues, navigator.hardwareConcurrency || 1)),
      opts.device.maxWorkers ?? Infinity,
    );
    let pool: WorkerPool;
    try {
      pool = await WorkerPool.create(workers, opts.device.workerSetup());
    } catch (e) {
      closeQuietly(listenFd);
      if (opts.socketPath) Deno.removeSync(opts.socketPath);
      throw e;
    }
    opts.device.attachWorkers?.({ command: (request) => pool.deviceCommand(request) });
    const daemon = new Daemon(opts, pool, listenFd);
    for (const signal of SIGNALS) Deno.addSignalListener(signal, daemon.#signalHandler);
    log.info(
      `serving ${opts.device.describe()} on ${
        opts.socketPath ?? `fd ${listenFd}`
      } with ${workers} queue worker(s)`,
    );
    return daemon;
  }

  /** Resolves with the exit code once the daemon has shut down. */
  finished(): Promise<number> {
    return this.#done.promise;
  }

  /** Runs `op` after every earlier session operation (messages are handled in order). */
  #serialize(op: () => Promise<void> | void): Promise<void> {
    const next = this.#serial.then(op, op);
    this.#serial = next.catch(() => {});
    return next;
  }

  #accept(): Promise<void> {
    return this.#serialize(async () => {
      for (;;) {
        let fd: number;
        try {
          fd = acceptConnection(this.#listenFd, SOCK_CLOEXEC | SOCK_NONBLOCK);
        } catch (e) {
          if (e instanceof SyscallError && (e.code === "EAGAIN" || e.code === "EINTR")) return;
          log.error(`accept failed: ${e instanceof SyscallError ? e.code : e}`);
          return;
        }
        // The current front-end may have left already with its last message and its
        // goodbye still unread (both connections pending at once): handle those first.
        if (this.#session && !this.#stopping) await this.#serve(this.#session);
        // A front-end that reconnects may open its new connection a moment before its
        // old one is closed: give the old one a short grace period to hang up.
        if (this.#session && !this.#stopping) {
          const old = this.#session;
          if (pollFd(old.connection.fd, POLLIN | POLLRDHUP, RECONNECT_GRACE_MS) !== 0) {
            await this.#serve(old);
          }
        }
        if (this.#stopping || this.#session) {
          log.warn(
            this.#stopping
              ? "refusing a front-end: shutting down"
              : `refusing a second front-end while session ${this.#session!.id} is connected`,
          );
          closeQuietly(fd);
          continue;
        }
        const connection = new Connection(fd);
        const backend = new VhostUserBackend(this.#device, this.#pool, this.#backendOptions);
        const id = ++this.#sessions;
        const session: Session = {
          id,
          connection,
          backend,
          dispatcher: new Dispatcher(backend),
          token: 0,
        };
        this.#session = session;
        session.token = this.#poller.watch(fd, () => this.#serialize(() => this.#serve(session)));
        log.info(`front-end connected (session ${id})`);
      }
    });
  }

  /** Handles every message that has arrived on the session's socket. */
  async #serve(session: Session): Promise<void> {
    while (this.#session === session) {
      const r = session.connection.readMessage();
      if (r.kind === "again") return;
      if (r.kind === "closed") return await this.#endSession(session, "front-end disconnected");
      if (r.kind === "broken") {
        return await this.#endSession(session, `connection dropped: ${r.reason}`);
      }
      const reply = await session.dispatcher.dispatch(r.message);
      if (reply) {
        try {
          session.connection.send(reply.bytes, reply.fds);
        } catch (e) {
          return await this.#endSession(
            session,
            `cannot reply: ${e instanceof Error ? e.message : e}`,
          );
        } finally {
          // The peer holds its own copies of sent fds now.
          reply.fds.forEach(closeQuietly);
        }
      }
    }
  }

  async #endSession(session: Session, why: string): Promise<void> {
    if (this.#session !== session) return;
    this.#poller.unwatch(session.token);
    try {
      await session.backend.disconnect();
    } catch (e) {
      log.error(
        `cleanup after session ${session.id} failed: ${e instanceof Error ? e.message : e}`,
      );
    }
    session.connection.close();
    this.#session = undefined;
    log.info(`session ${session.id} ended: ${why}; waiting for the next front-end`);
  }

  /** Stops serving: finishes in-flight requests, flushes, removes the socket. */
  shutdown(reason: string): Promise<number> {
    if (this.#stopping) return this.#done.promise;
    this.#stopping = true;
    log.info(`shutting down (${reason})`);
    this.#serialize(async () => {
      let code = 0;
      if (this.#session) await this.#endSession(this.#session, "daemon shutting down");
      this.#poller.unwatch(this.#listenToken);
      closeQuietly(this.#listenFd);
      if (this.#socketPath) {
        try {
          Deno.removeSync(this.#socketPath);
        } catch {
          // Someone removed it already.
        }
      }
      try {
        this.#device.flush();
      } catch (e) {
        log.error(`final flush failed: ${e instanceof SyscallError ? e.code : e}`);
        code = 1;
      }
      await this.#pool.close();
      this.#transfers?.close();
      this.#device.close();
      this.#poller.close();
      for (const signal of ["SIGINT", "SIGTERM"] as const) {
        Deno.removeSignalListener(signal, this.#signalHandler);
      }
      log.info("stopped");
      this.#done.resolve(code);
    });
    return this.#done.promise;
  }
}
