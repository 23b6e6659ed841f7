/**
 * The two ways a state transfer fails: the bytes are not a valid stream, or
 * the fd carrying them failed.
 *
 * @module
 */

/**
 * The stream is not a valid vhostd state stream, or does not fit this
 * device. The message says why in one line, such as
 * "checksum mismatch: stream is corrupt".
 */
export class StateFormatError extends Error {
  /** Builds the error; `options.cause` may carry an underlying error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StateFormatError";
  }
}

/**
 * Reading or writing the fd that carries the stream (or the file the state is
 * applied to) failed, for example because the peer closed the pipe.
 */
export class StateStreamError extends Error {
  /** Builds the error; `options.cause` usually carries the `SyscallError`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StateStreamError";
  }
}
