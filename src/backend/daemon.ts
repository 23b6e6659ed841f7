/**
 * The daemon's life cycle: listen on a Unix socket (or an inherited one),
 * serve one front-end at a time, accept the next when it leaves, and shut
 * down cleanly on SIGINT/SIGTERM (rings stopped with nothing in flight,
 * backing flushed, socket removed).
 *
 * Nothing a front-end does can wedge it: messages are read incrementally
 * (a slow peer never holds the main thread), a peer silent inside a message
 * is dropped after MESSAGE_SILENCE_MS (or a message not complete after
 * MESSAGE_TOTAL_MS), and gives way at once to a new front-end after
 * STUCK_YIELD_MS; a front-end that hangs up while a request is still being
 * handled (CHECK_DEVICE_STATE waiting for a pipe nobody drains) aborts that
 * session's state transfer.
 *
 * @module
 */

import {
  acceptConnection,
  bindUnix,
  closeQuietly,
  connectUnix,
  listenSocket,
  POLLERR,
  pollFd,
  POLLHUP,
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
import type { DaemonMetrics } from "../metrics/daemon_metrics.ts";

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
  /** Called once when shutdown begins (systemd's STOPPING=1). */
  onStopping?: () => void;
  /** Where to count requests, sessions and transfers (`--metrics`); absent: nothing is counted. */
  metrics?: DaemonMetrics;
  /** Longest busy-poll window of a queue Worker in µs (`--poll-max-us`, 0: never); absent: the defaults. */
  pollMaxUs?: number;
}

/** How long a connected front-end may take to hang up when a new one arrives. */
const RECONNECT_GRACE_MS = 200;
/**
 * Longest silence inside a started message: 30 s, reset by every byte. A
 * front-end sends a message in one sendmsg, so a gap inside one is a peer
 * that is descheduled, stopped or swapping; on a loaded host that can take
 * seconds, and waiting costs nothing since the main thread never waits.
 */
const MESSAGE_SILENCE_MS = 30_000;
/** Longest time for one whole message, however it trickles in (the largest is 4 KiB). */
const MESSAGE_TOTAL_MS = 120_000;
/**
 * A session silent inside a message for this long gives way when a new
 * front-end connects (the one front-end a device serves is then the one that
 * is alive); the same 1 s the old whole-message limit allowed.
 */
const STUCK_YIELD_MS = 1000;
/** While a request is being handled, the socket is checked this often for a hang-up. */
const HANGUP_CHECK_MS = 250;

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
  /** Aborted when the front-end is gone: cancels its state transfer. */
  gone: AbortController;
  /** Fires when an unfinished message has been silent (or slow) too long. */
  stallTimer?: ReturnType<typeof setTimeout>;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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
  readonly #metrics: DaemonMetrics | undefined;
  #session: Session | undefined;
  #sessions = 0;
  #serial: Promise<void> = Promise.resolve();
  #stopping = false;
  #done: PromiseWithResolvers<number> = Promise.withResolvers<number>();
  readonly #signalHandler = () => this.shutdown("signal");
  readonly #onStopping: (() => void) | undefined;

  private constructor(opts: DaemonOptions, pool: WorkerPool, listenFd: number) {
    this.#device = opts.device;
    this.#transfers = opts.device.stateSupport ? new TransferRunner() : undefined;
    const metrics = this.#metrics = opts.metrics;
    this.#backendOptions = {
      ...opts.backend,
      runner: this.#transfers,
      onTransferEnded: metrics && ((record) => metrics.transferEnded(record)),
    };
    this.#pool = pool;
    this.#listenFd = listenFd;
    this.#socketPath = opts.socketPath;
    this.#onStopping = opts.onStopping;
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
      opts.workers ?? opts.device.preferredWorkers ??
        Math.max(1, Math.min(opts.device.numQueues, navigator.hardwareConcurrency || 1)),
      opts.device.maxWorkers ?? Infinity,
    );
    let pool: WorkerPool;
    try {
      pool = await WorkerPool.create(workers, opts.device.workerSetup(), {
        stats: opts.metrics?.queueStats,
        pollMaxUs: opts.pollMaxUs,
      });
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
        // A session stuck inside a message gives way to the new front-end.
        if (this.#session && !this.#stopping && this.#session.connection.midMessage) {
          await this.#yieldIfStuck(this.#session);
        }
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
          this.#metrics?.sessionRefused();
          continue;
        }
        const connection = new Connection(fd);
        const gone = new AbortController();
        const backend = new VhostUserBackend(this.#device, this.#pool, {
          ...this.#backendOptions,
          peerGone: gone.signal,
        });
        const id = ++this.#sessions;
        const session: Session = {
          id,
          connection,
          backend,
          dispatcher: new Dispatcher(backend),
          token: 0,
          gone,
        };
        this.#session = session;
        this.#metrics?.sessionStarted();
        session.token = this.#poller.watch(fd, () => this.#serialize(() => this.#serve(session)));
        log.info(`front-end connected (session ${id})`);
      }
    });
  }

  /**
   * A new front-end is waiting and `session` is inside a message: once it has
   * been silent for STUCK_YIELD_MS (waiting out the rest, without blocking),
   * it is dropped so the new one can be served.
   */
  async #yieldIfStuck(session: Session): Promise<void> {
    const left = STUCK_YIELD_MS - session.connection.silentForMs();
    if (left > 0) {
      // Timers round to whole milliseconds (and may fire a fraction early): wait past the mark.
      await delay(Math.ceil(left) + 1);
      await this.#serve(session);
    }
    const c = session.connection;
    if (this.#session !== session || !c.midMessage || c.silentForMs() < STUCK_YIELD_MS) return;
    const reason = c.abandonPartial(`silent for ${(c.silentForMs() / 1000).toFixed(1)} s`);
    await this.#endSession(session, `connection dropped for a new front-end: ${reason}`);
  }

  /** Arms the timer that drops a session whose unfinished message takes too long. */
  #armStallTimer(session: Session): void {
    if (session.stallTimer !== undefined) return;
    const c = session.connection;
    const due = Math.min(
      MESSAGE_SILENCE_MS - c.silentForMs(),
      MESSAGE_TOTAL_MS - c.messageAgeMs(),
    );
    session.stallTimer = setTimeout(() => {
      session.stallTimer = undefined;
      this.#serialize(() => this.#checkStall(session));
    }, Math.max(0, Math.ceil(due)) + 1);
  }

  async #checkStall(session: Session): Promise<void> {
    const c = session.connection;
    if (this.#session !== session || !c.midMessage) return;
    const silent = c.silentForMs() >= MESSAGE_SILENCE_MS;
    if (silent || c.messageAgeMs() >= MESSAGE_TOTAL_MS) {
      const reason = c.abandonPartial(
        silent
          ? `peer silent for ${MESSAGE_SILENCE_MS / 1000} s`
          : `message not complete after ${MESSAGE_TOTAL_MS / 1000} s`,
      );
      return await this.#endSession(session, `connection dropped: ${reason}`);
    }
    this.#armStallTimer(session);
  }

  /**
   * While a request is being handled, looks at the socket every
   * HANGUP_CHECK_MS: a front-end that hung up meanwhile aborts its session's
   * state transfer (CHECK_DEVICE_STATE may be waiting on a pipe that a hung
   * peer holds open). Returns the function that stops watching.
   */
  #watchHangup(session: Session): () => void {
    const timer = setInterval(() => {
      if (session.gone.signal.aborted) return;
      let events: number;
      try {
        events = pollFd(session.connection.fd, POLLRDHUP, 0);
      } catch {
        return;
      }
      if (events & (POLLRDHUP | POLLHUP | POLLERR)) {
        log.warn(`session ${session.id}: the front-end hung up while a request was handled`);
        session.gone.abort();
      }
    }, HANGUP_CHECK_MS);
    return () => clearInterval(timer);
  }

  /** Handles every message that has arrived on the session's socket. */
  async #serve(session: Session): Promise<void> {
    while (this.#session === session) {
      const r = session.connection.readAvailable();
      if (r.kind === "again") {
        if (session.connection.midMessage) this.#armStallTimer(session);
        return;
      }
      if (r.kind === "closed") return await this.#endSession(session, "front-end disconnected");
      if (r.kind === "broken") {
        return await this.#endSession(session, `connection dropped: ${r.reason}`);
      }
      const stopWatching = this.#watchHangup(session);
      let reply;
      try {
        reply = await session.dispatcher.dispatch(r.message);
      } finally {
        stopWatching();
      }
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
    clearTimeout(session.stallTimer);
    session.stallTimer = undefined;
    session.gone.abort();
    try {
      await session.backend.disconnect();
    } catch (e) {
      log.error(
        `cleanup after session ${session.id} failed: ${e instanceof Error ? e.message : e}`,
      );
    }
    session.connection.close();
    this.#session = undefined;
    this.#metrics?.sessionEnded();
    log.info(`session ${session.id} ended: ${why}; waiting for the next front-end`);
  }

  /** Stops serving: finishes in-flight requests, flushes, removes the socket. */
  shutdown(reason: string): Promise<number> {
    if (this.#stopping) return this.#done.promise;
    this.#stopping = true;
    log.info(`shutting down (${reason})`);
    this.#onStopping?.();
    // A request waiting on a state transfer must not hold the shutdown up.
    this.#session?.gone.abort();
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
