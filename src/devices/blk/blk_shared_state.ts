/**
 * virtio-blk state shared between the main thread and the queue Workers:
 * the writeback-cache flag (changed by SET_CONFIG on the main thread, read by
 * every request), the backing's fd (replaced when a LOAD brings new RAM
 * disk contents) and the request counters (bumped by Workers, saved with
 * the device state).
 *
 * @module
 */

/** Names of the request counters, in their slot order. */
export const BLK_COUNTERS = [
  "reads",
  "writes",
  "flushes",
  "discards",
  "writeZeroes",
  "getIds",
  "errors",
  "unsupported",
  "bytesRead",
  "bytesWritten",
] as const;

/** One counter name. */
export type BlkCounter = typeof BLK_COUNTERS[number];

const WRITEBACK_SLOT = 0;
const BACKING_FD_SLOT = 1;
const FLAG_SLOTS = 2; // Int32 slots before the counters (8-byte aligned)

/** A view of the shared state; every thread wraps the same SharedArrayBuffer. */
export class BlkSharedState {
  /** The shared memory itself (sent to Workers). */
  readonly buffer: SharedArrayBuffer;
  readonly #flags: Int32Array;
  readonly #counters: BigInt64Array;

  /** Wraps `buffer`, or allocates a new zeroed one. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(FLAG_SLOTS * 4 + BLK_COUNTERS.length * 8);
    this.#flags = new Int32Array(this.buffer, 0, FLAG_SLOTS);
    this.#counters = new BigInt64Array(this.buffer, FLAG_SLOTS * 4, BLK_COUNTERS.length);
  }

  /** Writeback cache enabled (FLUSH needed for durability) or write-through. */
  get writeback(): boolean {
    return Atomics.load(this.#flags, WRITEBACK_SLOT) === 1;
  }

  set writeback(on: boolean) {
    Atomics.store(this.#flags, WRITEBACK_SLOT, on ? 1 : 0);
  }

  /** The fd requests go to (a memfd for RAM disks). */
  get backingFd(): number {
    return Atomics.load(this.#flags, BACKING_FD_SLOT);
  }

  set backingFd(fd: number) {
    Atomics.store(this.#flags, BACKING_FD_SLOT, fd);
  }

  /** Adds `amount` to a counter. */
  count(counter: BlkCounter, amount = 1): void {
    Atomics.add(this.#counters, BLK_COUNTERS.indexOf(counter), BigInt(amount));
  }

  /** Adds to a counter by slot number (the request path avoids the name lookup). */
  countSlot(slot: number, amount: bigint): void {
    Atomics.add(this.#counters, slot, amount);
  }

  /** All counters by name. */
  counters(): Record<BlkCounter, bigint> {
    const out = {} as Record<BlkCounter, bigint>;
    BLK_COUNTERS.forEach((name, i) => out[name] = Atomics.load(this.#counters, i));
    return out;
  }

  /** Overwrites all counters (state load). */
  setCounters(values: Partial<Record<BlkCounter, bigint>>): void {
    BLK_COUNTERS.forEach((name, i) => Atomics.store(this.#counters, i, values[name] ?? 0n));
  }
}

/** Slot numbers of the counters, for the request path. */
export const CounterSlot: Record<BlkCounter, number> = Object.fromEntries(
  BLK_COUNTERS.map((name, i) => [name, i]),
) as Record<BlkCounter, number>;
