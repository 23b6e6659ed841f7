/**
 * The split-ring inflight region of VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD
 * (vhost-user.rst, "Inflight I/O tracking"): pure layout and bookkeeping
 * over bytes, no I/O. The front-end keeps the region (a memfd the back-end
 * created for GET_INFLIGHT_FD) across back-end crashes and hands it back
 * with SET_INFLIGHT_FD, so a restarted back-end can resubmit the requests
 * that were in flight when it died, even when later ones had completed
 * first (out-of-order completion makes "restart from used.idx" skip them).
 *
 * ## Layout
 *
 * The region is `num_queues` queue regions back to back, each
 * {@linkcode inflightQueueRegionSize} bytes (QEMU and libvhost-user compute
 * `ALIGN_UP(16 * queue_size + 2, 64)`; the 16-byte header always fits in
 * the rounding). One queue region, native byte order (little-endian here):
 *
 * | offset        | field             | type |
 * |---------------|-------------------|------|
 * | 0             | features          | u64 (0) |
 * | 8             | version           | u16 (1; 0 = not initialised) |
 * | 10            | desc_num          | u16 (entries in `desc`) |
 * | 12            | last_batch_head   | u16 |
 * | 14            | used_idx          | u16 |
 * | 16 + 16 × i   | desc[i].inflight  | u8 (0 or 1) |
 * | 17 + 16 × i   | padding           | 5 bytes |
 * | 22 + 16 × i   | desc[i].next      | u16 (batch list link) |
 * | 24 + 16 × i   | desc[i].counter   | u64 (submission order) |
 *
 * ## How a queue Worker must use {@linkcode InflightQueue}
 *
 * When the "start" command carries an inflight slice:
 *
 * 1. `InflightQueue.open(bytes, ringSize)` over the slice (a string means
 *    the region is unusable: treat it as a broken ring or run untracked).
 * 2. `recover(usedIdx)` once, with the used ring's `idx` as found in guest
 *    memory, before anything else. It applies the spec's crash rule and
 *    returns the heads still in flight in submission order (`resubmit`),
 *    their `count`, and `nextAvail = usedIdx + count`: the ring must
 *    continue popping the available ring there, not at SET_VRING_BASE's
 *    value (as libvhost-user's vu_check_queue_inflights does). The main
 *    thread has already made the same computation for the "start" state.
 * 3. Process the `resubmit` heads first, in that order, building each chain
 *    from its head (they are not popped from the available ring again). Do
 *    not call `begin()` for them: they are already recorded.
 * 4. For every head popped from the available ring: `begin(head)` in pop
 *    order, right after the pop and before its I/O is submitted or the next
 *    head is popped.
 * 5. For every batch of completions published with one used.idx store:
 *    `completing(head)` for each head whose used element is in the batch,
 *    after writing its used element and before the used.idx store; then the
 *    used.idx store; then `completed(head, newUsedIdx)` for each head of the
 *    batch, all before the next batch's first `completing()`. (A batch of
 *    one: completing, store, completed.)
 * 6. On "stop" (no request in flight any more), drop the queue and its views
 *    before answering: the main thread may unmap the region afterwards.
 *
 * A crash between 4 and 5 leaves the request in flight (resubmitted); a
 * crash after the used.idx store but before every `completed()` leaves
 * `used_idx` behind the ring's, and `recover()` clears the batch's flags.
 *
 * Everything read from a region comes from the front-end: `open()` and
 * `recover()` check it and return an error string, never throw. The other
 * methods throw only on misuse by the caller (a bug, not bad input).
 *
 * @module
 */

/** Queue regions are aligned (and sized) to this many bytes. */
export const INFLIGHT_ALIGNMENT = 64;
/** The region format version this module writes and reads. */
export const INFLIGHT_VERSION = 1;
/** Bytes of a queue region before `desc[0]`. */
export const QUEUE_REGION_HEADER_SIZE = 16;
/** Bytes of one DescStateSplit entry. */
export const DESC_STATE_SPLIT_SIZE = 16;
/** Largest queue size a split ring can have (and so the largest desc_num). */
export const MAX_INFLIGHT_QUEUE_SIZE = 32768;

const FEATURES_LO = 0;
const FEATURES_HI = 4;
const VERSION = 8;
const DESC_NUM = 10;
const LAST_BATCH_HEAD = 12;
const USED_IDX = 14;
const DESC_INFLIGHT = 0;
const DESC_NEXT = 6;
const DESC_COUNTER_LO = 8;
const DESC_COUNTER_HI = 12;
const TWO_TO_32 = 2 ** 32;
/** Largest high half of a counter that keeps it an exact JS number (below 2^53). */
const MAX_COUNTER_HI = 2 ** 21 - 1;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function isQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= MAX_INFLIGHT_QUEUE_SIZE;
}

/**
 * Bytes of one queue's region for a queue of `queueSize` entries, as QEMU
 * and libvhost-user compute it: `ALIGN_UP(16 * queueSize + 2, 64)`.
 */
export function inflightQueueRegionSize(queueSize: number): number {
  if (!isQueueSize(queueSize)) {
    throw new RangeError(
      `inflight queue size ${queueSize} is outside 1..${MAX_INFLIGHT_QUEUE_SIZE}`,
    );
  }
  const raw = DESC_STATE_SPLIT_SIZE * queueSize + 2;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/** Bytes of the whole inflight region: `numQueues` queue regions of `queueSize` entries. */
export function inflightRegionSize(numQueues: number, queueSize: number): number {
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) {
    throw new RangeError(`inflight queue count ${numQueues} is outside 1..65535`);
  }
  return numQueues * inflightQueueRegionSize(queueSize);
}

/** Byte offset of queue `index`'s region inside the whole region. */
export function inflightQueueOffset(index: number, queueSize: number): number {
  return index * inflightQueueRegionSize(queueSize);
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function headerProblem(view: DataView): string | undefined {
  if (view.getUint32(FEATURES_LO, true) !== 0 || view.getUint32(FEATURES_HI, true) !== 0) {
    const features = view.getBigUint64(FEATURES_LO, true);
    return `inflight region: unknown features 0x${features.toString(16)}`;
  }
  return undefined;
}

/**
 * Checks (and, for a fresh region, labels) one queue region when
 * SET_INFLIGHT_FD arrives, before any ring of it runs. `queueSize` is the
 * message's queue_size. A region never used (version 0) gets desc_num =
 * `queueSize` and stays version 0 until {@linkcode InflightQueue.recover}
 * initialises it against the ring; a used one (version 1) must have
 * features 0 and desc_num = `queueSize`. Returns an error string for
 * anything else.
 */
export function prepareInflightQueue(bytes: Uint8Array, queueSize: number): string | undefined {
  if (!isQueueSize(queueSize)) return `inflight queue size ${queueSize} is out of range`;
  if (bytes.byteLength < inflightQueueRegionSize(queueSize)) {
    return `inflight queue region is ${bytes.byteLength} bytes, ${queueSize} entries need ${
      inflightQueueRegionSize(queueSize)
    }`;
  }
  const view = viewOf(bytes);
  const version = view.getUint16(VERSION, true);
  if (version === 0) {
    view.setUint16(DESC_NUM, queueSize, true);
    return undefined;
  }
  if (version !== INFLIGHT_VERSION) return `inflight region: unknown version ${version}`;
  const problem = headerProblem(view);
  if (problem !== undefined) return problem;
  const descNum = view.getUint16(DESC_NUM, true);
  if (descNum !== queueSize) {
    return `inflight region: desc_num is ${descNum}, the message says queue size ${queueSize}`;
  }
  return undefined;
}

/** What {@linkcode InflightQueue.recover} found. */
export interface InflightRecovery {
  /** Heads still in flight, oldest submission first: the order to resubmit them in. */
  resubmit: number[];
  /** `resubmit.length`. */
  count: number;
  /** Where the ring continues popping the available ring: `(usedIdx + count) & 0xffff`. */
  nextAvail: number;
  /** Heads of the last batch whose flags were cleared (used.idx was published, the flags not). */
  clearedBatch: number;
  /** The region had never been used (version 0) and was initialised. */
  fresh: boolean;
}

/** One queue's inflight region, as the queue Worker keeps it up to date (see the module doc). */
export class InflightQueue {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #u16: Uint16Array;
  readonly #ringSize: number;
  readonly #descNum: number;
  readonly #inBatch: Uint8Array;
  #batchLength = 0;
  #batchDone = 0;
  #counter = 0;
  #recovered = false;

  private constructor(bytes: Uint8Array, ringSize: number, descNum: number) {
    this.#bytes = bytes;
    this.#view = viewOf(bytes);
    this.#u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1);
    this.#ringSize = ringSize;
    this.#descNum = descNum;
    this.#inBatch = new Uint8Array(ringSize);
  }

  /**
   * A queue over `bytes` (one queue's region) for a ring of `ringSize`
   * entries. Checks the header: version 0 (fresh) or 1, features 0,
   * desc_num at least `ringSize` and within `bytes` (a fresh region without
   * desc_num uses `ringSize`). Returns an error string when it is unusable.
   */
  static open(bytes: Uint8Array, ringSize: number): InflightQueue | string {
    if (!LITTLE_ENDIAN) return "inflight tracking needs a little-endian host";
    if (!isQueueSize(ringSize)) return `ring size ${ringSize} is out of range`;
    if (bytes.byteOffset % 8 !== 0) return "inflight queue region is not 8-byte aligned";
    if (bytes.byteLength < QUEUE_REGION_HEADER_SIZE) {
      return `inflight queue region is only ${bytes.byteLength} bytes`;
    }
    const view = viewOf(bytes);
    const version = view.getUint16(VERSION, true);
    if (version !== 0 && version !== INFLIGHT_VERSION) {
      return `inflight region: unknown version ${version}`;
    }
    const problem = version === 0 ? undefined : headerProblem(view);
    if (problem !== undefined) return problem;
    let descNum = view.getUint16(DESC_NUM, true);
    if (version === 0 && descNum === 0) descNum = ringSize;
    if (descNum < ringSize) {
      return `inflight region: desc_num ${descNum} is smaller than the ring size ${ringSize}`;
    }
    const needed = QUEUE_REGION_HEADER_SIZE + descNum * DESC_STATE_SPLIT_SIZE;
    if (needed > bytes.byteLength) {
      return `inflight region: desc_num ${descNum} needs ${needed} bytes, the region has ${bytes.byteLength}`;
    }
    return new InflightQueue(bytes, ringSize, descNum);
  }

  /** Entries in the region's desc array (at least the ring size). */
  get descNum(): number {
    return this.#descNum;
  }

  /**
   * Crash recovery, once, before any other call: `ringUsedIdx` is the used
   * ring's idx in guest memory. A fresh region is initialised (nothing in
   * flight). Otherwise, when the region's used_idx differs from
   * `ringUsedIdx`, the last batch (the `ringUsedIdx - used_idx` heads of the
   * list from last_batch_head) was published before its flags were
   * cleared: they are cleared and used_idx is set to `ringUsedIdx`. Then the
   * heads still in flight are returned sorted by counter, and later
   * `begin()` counters continue after the largest of theirs.
   *
   * Returns an error string, changing nothing, for a region that cannot be
   * trusted: an inflight byte other than 0/1, a head in flight at or beyond
   * the ring size, a batch larger than the ring, a batch list that leaves
   * the ring or visits a head twice, counters at or above 2^53 or shared by
   * two heads.
   */
  recover(ringUsedIdx: number): InflightRecovery | string {
    if (this.#recovered) throw new Error("InflightQueue.recover() called twice");
    if (!Number.isInteger(ringUsedIdx) || ringUsedIdx < 0 || ringUsedIdx > 0xffff) {
      throw new RangeError(`used index ${ringUsedIdx} is not a u16`);
    }
    const view = this.#view;
    if (view.getUint16(VERSION, true) === 0) {
      this.#bytes.fill(0, 0, QUEUE_REGION_HEADER_SIZE + this.#descNum * DESC_STATE_SPLIT_SIZE);
      view.setUint16(DESC_NUM, this.#descNum, true);
      view.setUint16(USED_IDX, ringUsedIdx, true);
      view.setUint16(VERSION, INFLIGHT_VERSION, true);
      this.#recovered = true;
      return { resubmit: [], count: 0, nextAvail: ringUsedIdx, clearedBatch: 0, fresh: true };
    }
    for (let i = 0; i < this.#descNum; i++) {
      const flag = this.#bytes[this.#entry(i) + DESC_INFLIGHT];
      if (flag > 1) return `inflight region: entry ${i} has inflight value ${flag}`;
      if (flag === 1 && i >= this.#ringSize) {
        return `inflight region: head ${i} is in flight but the ring has ${this.#ringSize} entries`;
      }
    }
    const regionUsedIdx = view.getUint16(USED_IDX, true);
    const batch = (ringUsedIdx - regionUsedIdx) & 0xffff;
    const batchHeads: number[] = [];
    if (batch !== 0) {
      if (batch > this.#ringSize) {
        return `inflight region: used_idx ${regionUsedIdx} is ${batch} behind the ring's ${ringUsedIdx}, more than the ring holds`;
      }
      const seen = new Uint8Array(this.#ringSize);
      let head = view.getUint16(LAST_BATCH_HEAD, true);
      for (let n = 0; n < batch; n++) {
        if (head >= this.#ringSize) {
          return `inflight region: last batch reaches head ${head}, outside the ring`;
        }
        if (seen[head]) return `inflight region: last batch visits head ${head} twice`;
        seen[head] = 1;
        batchHeads.push(head);
        head = view.getUint16(this.#entry(head) + DESC_NEXT, true);
      }
    }
    const inBatch = new Set(batchHeads);
    const pending: { head: number; counter: number }[] = [];
    for (let head = 0; head < this.#ringSize; head++) {
      const at = this.#entry(head);
      if (this.#bytes[at + DESC_INFLIGHT] !== 1 || inBatch.has(head)) continue;
      const hi = view.getUint32(at + DESC_COUNTER_HI, true);
      if (hi > MAX_COUNTER_HI) return `inflight region: head ${head} has a counter beyond 2^53`;
      pending.push({ head, counter: hi * TWO_TO_32 + view.getUint32(at + DESC_COUNTER_LO, true) });
    }
    pending.sort((a, b) => a.counter - b.counter);
    for (let i = 1; i < pending.length; i++) {
      if (pending[i].counter === pending[i - 1].counter) {
        return `inflight region: heads ${pending[i - 1].head} and ${
          pending[i].head
        } share counter ${pending[i].counter}`;
      }
    }
    // Checked: now apply. Flags before used_idx, as when completing normally.
    for (const head of batchHeads) Atomics.store(this.#bytes, this.#entry(head) + DESC_INFLIGHT, 0);
    if (batch !== 0) Atomics.store(this.#u16, USED_IDX >>> 1, ringUsedIdx);
    this.#counter = pending.length === 0 ? 0 : pending[pending.length - 1].counter + 1;
    this.#recovered = true;
    const resubmit = pending.map((p) => p.head);
    return {
      resubmit,
      count: resubmit.length,
      nextAvail: (ringUsedIdx + resubmit.length) & 0xffff,
      clearedBatch: batchHeads.length,
      fresh: false,
    };
  }

  /** Records `head` as in flight with the next counter (step 4 of the module doc). */
  begin(head: number): void {
    this.#checkHead(head, "begin");
    const at = this.#entry(head);
    const counter = this.#counter++;
    this.#view.setUint32(at + DESC_COUNTER_LO, counter >>> 0, true);
    this.#view.setUint32(at + DESC_COUNTER_HI, Math.floor(counter / TWO_TO_32), true);
    // The counter is in place before the flag says the entry counts.
    Atomics.store(this.#bytes, at + DESC_INFLIGHT, 1);
  }

  /**
   * Adds `head` to the batch about to be published: links it in front of
   * last_batch_head and makes it the head of the list. Call it after
   * writing the head's used element and before storing used.idx.
   */
  completing(head: number): void {
    this.#checkHead(head, "completing");
    if (this.#batchDone !== 0) {
      throw new Error("InflightQueue.completing(): the previous batch is not completed yet");
    }
    if (this.#inBatch[head]) throw new Error(`InflightQueue.completing(): head ${head} twice`);
    this.#inBatch[head] = 1;
    this.#batchLength++;
    const at = this.#entry(head);
    Atomics.store(this.#u16, (at + DESC_NEXT) >>> 1, this.#u16[LAST_BATCH_HEAD >>> 1]);
    Atomics.store(this.#u16, LAST_BATCH_HEAD >>> 1, head);
  }

  /**
   * After used.idx was stored as `usedIdx`: clears `head`'s inflight flag;
   * once every head given to `completing()` since the last publication is
   * completed, records `usedIdx` as the region's used_idx.
   */
  completed(head: number, usedIdx: number): void {
    this.#checkHead(head, "completed");
    if (!this.#inBatch[head]) {
      throw new Error(`InflightQueue.completed(): head ${head} was not given to completing()`);
    }
    this.#inBatch[head] = 0;
    Atomics.store(this.#bytes, this.#entry(head) + DESC_INFLIGHT, 0);
    if (++this.#batchDone === this.#batchLength) {
      Atomics.store(this.#u16, USED_IDX >>> 1, usedIdx & 0xffff);
      this.#batchDone = 0;
      this.#batchLength = 0;
    }
  }

  #entry(head: number): number {
    return QUEUE_REGION_HEADER_SIZE + head * DESC_STATE_SPLIT_SIZE;
  }

  #checkHead(head: number, what: string): void {
    if (!this.#recovered) throw new Error(`InflightQueue.${what}() before recover()`);
    if (!(head >= 0 && head < this.#ringSize && Number.isInteger(head))) {
      throw new RangeError(`InflightQueue.${what}(): head ${head} is outside the ring`);
    }
  }
}
