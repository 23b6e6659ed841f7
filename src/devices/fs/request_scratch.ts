/**
 * A byte buffer reused from one FUSE request to the next (the request's
 * bytes, the reply being assembled): each fresh ArrayBuffer was a malloc
 * and a free on every request. It lives in one queue Worker and serves one
 * request at a time; a view of it is valid only until the next request.
 *
 * @module
 */

/** Lengths below this get one kept view each from {@linkcode RequestScratch.unzeroed}. */
const KEPT_VIEW_LIMIT = 1024;

/** One reusable buffer with an off-heap ArrayBuffer allocated once. */
export class RequestScratch {
  readonly #buffer: Uint8Array<ArrayBuffer>;
  /** A DataView of the whole buffer, for encoders that take one. */
  readonly view: DataView;
  /** Views of the first n bytes, by n below KEPT_VIEW_LIMIT, made when first asked for. */
  readonly #views: (Uint8Array<ArrayBuffer> | undefined)[] = [];

  /** A buffer of `capacity` bytes. */
  constructor(capacity: number) {
    this.#buffer = new Uint8Array(new ArrayBuffer(capacity));
    this.view = new DataView(this.#buffer.buffer);
  }

  /** A DataView of `bytes`: the kept one when `bytes` came from this buffer, else a new one. */
  viewOf(bytes: Uint8Array): DataView {
    return bytes.buffer === this.#buffer.buffer && bytes.byteOffset === 0
      ? this.view
      : new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Its size in bytes. */
  get capacity(): number {
    return this.#buffer.byteLength;
  }

  /**
   * Its first `length` bytes, zeroed: nothing an earlier request left shows
   * through where the caller writes less. Longer than the capacity: a new array.
   */
  zeroed(length: number): Uint8Array<ArrayBuffer> {
    if (length > this.#buffer.byteLength) return new Uint8Array(length);
    const view = this.#buffer.subarray(0, length);
    view.fill(0);
    return view;
  }

  /**
   * Its first `length` bytes (the whole buffer by default) as an earlier
   * request left them, for a caller that writes every byte it hands on
   * (the struct encoders zero their own padding). Longer than the
   * capacity: a new array.
   */
  unzeroed(length: number = this.#buffer.byteLength): Uint8Array<ArrayBuffer> {
    if (length > this.#buffer.byteLength) return new Uint8Array(length);
    if (length === this.#buffer.byteLength) return this.#buffer;
    if (length >= KEPT_VIEW_LIMIT) return this.#buffer.subarray(0, length);
    // Fixed-size replies come in a few lengths, every request: each view is made once.
    return this.#views[length] ??= this.#buffer.subarray(0, length);
  }
}
