/**
 * A small QMP (QEMU Machine Protocol) client over a Unix socket, enough for
 * tests that drive QEMU: it reads the greeting, enters command mode with
 * `qmp_capabilities`, runs commands one reply at a time (matched by `id`),
 * and keeps every asynchronous event so that a test can wait for one that
 * may already have arrived.
 *
 * @module
 */

/** One asynchronous QMP event, e.g. `{ event: "MIGRATION", data: { status: "completed" } }`. */
export interface QmpEvent {
  /** Event name, e.g. `MIGRATION`, `STOP`, `RESUME`. */
  event: string;
  /** Event payload (absent for some events). */
  data?: Record<string, unknown>;
  /** When QEMU emitted it. */
  timestamp?: { seconds: number; microseconds: number };
}

/** A command QEMU answered with an `error` object. */
export class QmpCommandError extends Error {
  /** QEMU's error class, e.g. `GenericError`. */
  readonly errorClass: string;

  /** An error for `command`, carrying QEMU's class and description. */
  constructor(command: string, errorClass: string, description: string) {
    super(`QMP ${command} failed: ${errorClass}: ${description}`);
    this.name = "QmpCommandError";
    this.errorClass = errorClass;
  }
}

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

interface EventWaiter {
  name: string;
  predicate: (event: QmpEvent) => boolean;
  resolve: (event: QmpEvent) => void;
  reject: (error: Error) => void;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** A connected QMP session in command mode. */
export class QmpClient {
  readonly #conn: Deno.UnixConn;
  readonly #pending = new Map<number, PendingCommand>();
  readonly #events: QmpEvent[] = [];
  readonly #eventWaiters = new Set<EventWaiter>();
  readonly #encoder = new TextEncoder();
  #nextId = 1;
  #closedReason: string | undefined;
  #readLoop: Promise<void> = Promise.resolve();

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  /**
   * Connects to QEMU's `-qmp unix:PATH,server=on,wait=off` socket, retrying
   * until it exists or `timeoutMs` runs out, then negotiates capabilities.
   *
   * @throws {Error} when the socket never accepts, QEMU sends no greeting,
   *   or `qmp_capabilities` fails
   */
  static async connect(path: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let conn: Deno.UnixConn | undefined;
    let lastError: unknown;
    while (conn === undefined) {
      try {
        conn = await Deno.connect({ transport: "unix", path });
      } catch (error) {
        lastError = error;
        if (Date.now() > deadline) {
          throw new Error(`QMP socket ${path} did not accept a connection: ${lastError}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    const client = new QmpClient(conn);
    try {
      await client.#start(deadline - Date.now());
      await client.execute("qmp_capabilities");
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  /** Every event received so far, oldest first. */
  get events(): readonly QmpEvent[] {
    return this.#events;
  }

  /**
   * Runs `command` with `args` and returns QEMU's `return` value.
   *
   * @throws {QmpCommandError} when QEMU answers with an error
   * @throws {Error} when the connection closes or no answer comes in `timeoutMs`
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<T> {
    if (this.#closedReason !== undefined) {
      return Promise.reject(new Error(`QMP ${command}: connection closed (${this.#closedReason})`));
    }
    const id = this.#nextId++;
    const message = args === undefined
      ? { execute: command, id }
      : { execute: command, arguments: args, id };
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`QMP ${command}: no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        command,
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#conn.write(this.#encoder.encode(JSON.stringify(message) + "\n")).catch((error) => {
        this.#pending.get(id)?.reject(new Error(`QMP ${command}: write failed: ${error}`));
        this.#pending.delete(id);
      });
    });
  }

  /**
   * Resolves with the first event named `name` that satisfies `predicate`,
   * including one that arrived before the call.
   *
   * @throws {Error} when none arrives within `timeoutMs` or the connection closes first
   */
  waitForEvent(
    name: string,
    predicate: (event: QmpEvent) => boolean = () => true,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<QmpEvent> {
    const seen = this.#events.find((event) => event.event === name && predicate(event));
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.#closedReason !== undefined) {
      return Promise.reject(
        new Error(`QMP event ${name}: connection closed (${this.#closedReason})`),
      );
    }
    return new Promise<QmpEvent>((resolve, reject) => {
      const waiter: EventWaiter = {
        name,
        predicate,
        resolve: (event) => {
          clearTimeout(timer);
          this.#eventWaiters.delete(waiter);
          resolve(event);
        },
        reject: (error) => {
          clearTimeout(timer);
          this.#eventWaiters.delete(waiter);
          reject(error);
        },
      };
      const timer = setTimeout(
        () => waiter.reject(new Error(`QMP event ${name} did not arrive in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#eventWaiters.add(waiter);
    });
  }

  /** Closes the connection; pending commands fail. Safe to call more than once. */
  close(): void {
    this.#shutDown("closed by the client");
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  /** Resolves once the read loop has ended (after {@linkcode close} or QEMU going away). */
  get closed(): Promise<void> {
    return this.#readLoop;
  }

  /** Waits for the greeting, then keeps reading messages in the background. */
  async #start(timeoutMs: number): Promise<void> {
    let resolveGreeting!: () => void;
    let rejectGreeting!: (error: Error) => void;
    const greeting = new Promise<void>((resolve, reject) => {
      resolveGreeting = resolve;
      rejectGreeting = reject;
    });
    let greeted = false;
    this.#readLoop = this.#read((message) => {
      if (!greeted && "QMP" in message) {
        greeted = true;
        resolveGreeting();
      } else {
        this.#dispatch(message);
      }
    }).then(() => rejectGreeting(new Error("QMP connection closed before the greeting")));
    const timer = setTimeout(
      () => rejectGreeting(new Error(`no QMP greeting in ${timeoutMs} ms`)),
      Math.max(timeoutMs, 1),
    );
    try {
      await greeting;
    } finally {
      clearTimeout(timer);
    }
  }

  async #read(onMessage: (message: Record<string, unknown>) => void): Promise<void> {
    const decoder = new TextDecoder();
    let buffered = "";
    let reason = "QEMU closed the connection";
    try {
      for await (const chunk of this.#conn.readable) {
        buffered += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line === "") continue;
          let parsed: unknown;
          try {
            parsed = JSON.parse(line);
          } catch {
            continue; // QMP only sends JSON; a garbled line is skipped, not fatal.
          }
          if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
            onMessage(parsed as Record<string, unknown>);
          }
        }
      }
    } catch (error) {
      reason = `read failed: ${error}`;
    }
    this.#shutDown(reason);
  }

  #dispatch(message: Record<string, unknown>): void {
    if (typeof message.event === "string") {
      const event = message as unknown as QmpEvent;
      this.#events.push(event);
      for (const waiter of [...this.#eventWaiters]) {
        if (waiter.name === event.event && waiter.predicate(event)) waiter.resolve(event);
      }
      return;
    }
    const id = message.id;
    if (typeof id !== "number") return;
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    if ("return" in message) {
      pending.resolve(message.return);
    } else {
      const error = (message.error ?? {}) as { class?: unknown; desc?: unknown };
      pending.reject(
        new QmpCommandError(pending.command, String(error.class), String(error.desc)),
      );
    }
  }

  #shutDown(reason: string): void {
    if (this.#closedReason !== undefined) return;
    this.#closedReason = reason;
    for (const pending of this.#pending.values()) {
      pending.reject(new Error(`QMP ${pending.command}: connection closed (${reason})`));
    }
    this.#pending.clear();
    for (const waiter of [...this.#eventWaiters]) {
      waiter.reject(new Error(`QMP event ${waiter.name}: connection closed (${reason})`));
    }
  }
}
