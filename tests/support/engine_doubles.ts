/**
 * Test doubles for data halves on a file I/O engine (blk, fs): a QueueContext that records
 * completions and watched fds, an engine that holds every operation until
 * the test runs it (in any order, with injected results), and a spy that
 * records what a real engine was asked to do.
 *
 * @module
 */

import {
  closeQuietly,
  eventfd,
  eventfdRead,
  eventfdWrite,
  type IovecArray,
} from "../../ffi/mod.ts";
import type { FileIoEngine, FileIoEngineKind, IoCompletion } from "../../src/io/file_io_engine.ts";
import { SyncFileIoEngine } from "../../src/io/sync_engine.ts";
import type { DescriptorChain } from "../../src/virtqueue/descriptor_chain.ts";
import type { FdReadyCallback, QueueContext } from "../../src/devices/device.ts";
import { GuestMemory } from "../../src/memory/guest_memory.ts";

/** One `complete` call. */
export interface RecordedCompletion {
  queueIndex: number;
  head: number;
  written: number;
}

/** A QueueContext that records what the handler tells it. */
export class RecordingContext implements QueueContext {
  /** Completions in the order they came. */
  readonly completions: RecordedCompletion[] = [];
  /** Watched fds and their callbacks. */
  readonly watched = new Map<number, { events: number; onReady: FdReadyCallback }>();
  /** Shared timeline (tests push their own events into it too). */
  readonly timeline: string[];
  /** Heads completed twice (must stay empty). */
  readonly doubles: number[] = [];

  constructor(timeline: string[] = []) {
    this.timeline = timeline;
  }

  complete(queueIndex: number, chain: DescriptorChain, written: number): void {
    if (this.completions.some((c) => c.queueIndex === queueIndex && c.head === chain.head)) {
      this.doubles.push(chain.head);
    }
    this.completions.push({ queueIndex, head: chain.head, written });
    this.timeline.push(`complete ${chain.head}`);
  }

  watchFd(fd: number, events: number, onReady: FdReadyCallback): void {
    this.watched.set(fd, { events, onReady });
  }

  unwatchFd(fd: number): void {
    this.watched.delete(fd);
  }

  inflightCount(_queueIndex: number): number {
    return 0;
  }

  /** blk and fs pull no queues. */
  pop(_queueIndex: number): DescriptorChain | undefined {
    return undefined;
  }

  /** No memory: blk and fs read chains through the memory `handle` gets. */
  readonly memory: GuestMemory = new GuestMemory([]);

  /** Timers are recorded and never fire (blk and fs set none). */
  readonly timers: number[] = [];

  setTimer(delayMs: number, _onFire: () => void): number {
    this.timers.push(delayMs);
    return this.timers.length;
  }

  clearTimer(_id: number): void {}

  /** The completion of `head`, taken out of the record (so a head can be reused). */
  take(head: number, queueIndex = 0): RecordedCompletion | undefined {
    const i = this.completions.findIndex((c) => c.head === head && c.queueIndex === queueIndex);
    return i < 0 ? undefined : this.completions.splice(i, 1)[0];
  }
}

/** One operation held by {@linkcode DeferredEngine}. */
export interface HeldOperation {
  op: "readv" | "writev" | "fsync" | "fallocate";
  fd: number;
  offset: number;
  length: number;
  dsync: boolean;
  dataOnly: boolean;
  mode: number;
  /** iovec [address, length] pairs as submitted. */
  iovecs: [number, number][];
  /** Runs the operation for real (through a sync engine) and reports its result. */
  run(): void;
  /** Reports `result` without running the operation. */
  fake(result: number): void;
}

/**
 * An engine whose operations wait until the test runs them. `completionFd`
 * is an eventfd signalled whenever operations are held after `submit`.
 * `intercept`, when set, sees each operation as it is run by `runAll` and
 * may return a result to report instead of running it.
 */
export class DeferredEngine implements FileIoEngine {
  readonly kind: FileIoEngineKind = "io_uring";
  readonly completionFd: number = eventfd(0);
  /** Submitted, not yet run. */
  readonly held: HeldOperation[] = [];
  /** Every operation ever submitted, in order. */
  readonly log: HeldOperation[] = [];
  readonly #queued: HeldOperation[] = [];
  readonly #sync = new SyncFileIoEngine();
  /** See the class comment. */
  intercept: ((op: HeldOperation) => number | undefined) | undefined;
  /** Called just before an operation's completion runs. */
  onComplete: ((op: HeldOperation, result: number) => void) | undefined;
  submits = 0;
  closed = false;

  get inflight(): number {
    return this.held.length + this.#queued.length;
  }

  #hold(
    partial: Omit<HeldOperation, "run" | "fake">,
    run: (done: IoCompletion) => void,
    done: IoCompletion,
  ): void {
    const finish = (result: number) => {
      const i = this.held.indexOf(op);
      if (i >= 0) this.held.splice(i, 1);
      this.onComplete?.(op, result);
      done(result);
    };
    const op: HeldOperation = {
      ...partial,
      run: () => run(finish),
      fake: (result) => finish(result),
    };
    this.#queued.push(op);
    this.log.push(op);
  }

  readv(fd: number, iov: IovecArray, count: number, offset: number, done: IoCompletion): void {
    this.#hold(
      {
        ...base("readv", fd, offset),
        length: iov.totalLength(count),
        iovecs: iovecsOf(iov, count),
      },
      (d) => this.#sync.readv(fd, iov, count, offset, d),
      done,
    );
  }

  writev(
    fd: number,
    iov: IovecArray,
    count: number,
    offset: number,
    dsync: boolean,
    done: IoCompletion,
  ): void {
    this.#hold(
      {
        ...base("writev", fd, offset),
        dsync,
        length: iov.totalLength(count),
        iovecs: iovecsOf(iov, count),
      },
      (d) => this.#sync.writev(fd, iov, count, offset, dsync, d),
      done,
    );
  }

  fsync(fd: number, dataOnly: boolean, done: IoCompletion): void {
    this.#hold(
      { ...base("fsync", fd, 0), dataOnly },
      (d) => this.#sync.fsync(fd, dataOnly, d),
      done,
    );
  }

  fallocate(fd: number, mode: number, offset: number, length: number, done: IoCompletion): void {
    this.#hold(
      { ...base("fallocate", fd, offset), mode, length },
      (d) => this.#sync.fallocate(fd, mode, offset, length, d),
      done,
    );
  }

  submit(): void {
    this.submits++;
    if (this.#queued.length === 0) return;
    this.held.push(...this.#queued.splice(0));
    eventfdWrite(this.completionFd, 1);
  }

  /** Does nothing: the test decides when operations complete (see `runAll`). */
  reap(): number {
    return 0;
  }

  /**
   * Runs held operations (newest first with `reverse`) until none is left,
   * including ones their completions submit; returns how many ran.
   */
  runAll(reverse = false): number {
    let ran = 0;
    for (;;) {
      this.submit();
      if (this.held.length === 0) return ran;
      const batch = reverse ? [...this.held].reverse() : [...this.held];
      for (const op of batch) {
        const result = this.intercept?.(op);
        if (result === undefined) op.run();
        else op.fake(result);
        ran++;
      }
    }
  }

  /** Drains the eventfd (what a Worker's reap would do). */
  drain(): void {
    try {
      eventfdRead(this.completionFd);
    } catch {
      // Not signalled.
    }
  }

  close(): void {
    this.closed = true;
    closeQuietly(this.completionFd);
    this.#sync.close();
  }
}

function base(op: HeldOperation["op"], fd: number, offset: number) {
  return { op, fd, offset, length: 0, dsync: false, dataOnly: false, mode: 0, iovecs: [] };
}

function iovecsOf(iov: IovecArray, count: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < count; i++) out.push([iov.address(i), iov.length(i)]);
  return out;
}

/** One operation a {@linkcode SpyEngine} passed on. */
export interface SpiedOperation {
  op: "readv" | "writev" | "fsync" | "fallocate";
  fd: number;
  offset: number;
  dsync: boolean;
  dataOnly: boolean;
  mode: number;
  iovecs: [number, number][];
  result?: number;
}

/** Wraps an engine and records every operation and its result. */
export class SpyEngine implements FileIoEngine {
  readonly inner: FileIoEngine;
  readonly ops: SpiedOperation[] = [];
  /** Shared timeline: "submit <op>" and "done <op> <result>". */
  readonly timeline: string[];
  /** Called just before an operation's completion runs. */
  onComplete: ((op: SpiedOperation, result: number) => void) | undefined;

  constructor(inner: FileIoEngine, timeline: string[] = []) {
    this.inner = inner;
    this.timeline = timeline;
  }

  get kind(): FileIoEngineKind {
    return this.inner.kind;
  }

  get completionFd(): number | undefined {
    return this.inner.completionFd;
  }

  get inflight(): number {
    return this.inner.inflight;
  }

  #record(op: SpiedOperation, done: IoCompletion): IoCompletion {
    this.ops.push(op);
    this.timeline.push(`submit ${op.op}`);
    return (result) => {
      op.result = result;
      this.timeline.push(`done ${op.op} ${result}`);
      this.onComplete?.(op, result);
      done(result);
    };
  }

  readv(fd: number, iov: IovecArray, count: number, offset: number, done: IoCompletion): void {
    const d = this.#record({ ...base("readv", fd, offset), iovecs: iovecsOf(iov, count) }, done);
    this.inner.readv(fd, iov, count, offset, d);
  }

  writev(
    fd: number,
    iov: IovecArray,
    count: number,
    offset: number,
    dsync: boolean,
    done: IoCompletion,
  ): void {
    const d = this.#record(
      { ...base("writev", fd, offset), dsync, iovecs: iovecsOf(iov, count) },
      done,
    );
    this.inner.writev(fd, iov, count, offset, dsync, d);
  }

  fsync(fd: number, dataOnly: boolean, done: IoCompletion): void {
    this.inner.fsync(fd, dataOnly, this.#record({ ...base("fsync", fd, 0), dataOnly }, done));
  }

  fallocate(fd: number, mode: number, offset: number, length: number, done: IoCompletion): void {
    const d = this.#record({ ...base("fallocate", fd, offset), mode }, done);
    this.inner.fallocate(fd, mode, offset, length, d);
  }

  submit(): void {
    this.inner.submit();
  }

  reap(): number {
    return this.inner.reap();
  }

  close(): void {
    this.inner.close();
  }
}
