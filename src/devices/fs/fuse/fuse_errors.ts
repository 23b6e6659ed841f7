/**
 * Errors raised when a FUSE request from the guest cannot be decoded.
 *
 * Each carries the positive Linux errno the caller should answer with
 * (the reply's out header holds its negation).
 *
 * @module
 */

/** Linux errno values the codec layer reports (asm-generic/errno-base.h, errno.h). */
export const FuseErrno = {
  EIO: 5,
  EINVAL: 22,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
} as const;

/**
 * A request that does not follow the FUSE ABI: a short or over-long input,
 * lengths that disagree, a string without its terminating NUL. The caller
 * fails that request with `-errno` (EINVAL unless stated otherwise).
 */
export class FuseProtocolError extends Error {
  /** Positive errno to answer with. */
  readonly errno: number;

  /** Creates a protocol error with a one-line description and the errno to answer. */
  constructor(message: string, errno: number = FuseErrno.EINVAL) {
    super(message);
    this.name = "FuseProtocolError";
    this.errno = errno;
  }
}

/**
 * A well-framed name that the ABI layer refuses: empty, longer than the
 * limit (errno ENAMETOOLONG, or ERANGE for extended attribute names), or
 * holding a `/` or NUL byte (errno EINVAL). `.` and `..` are not checked
 * here: that is the filesystem's business.
 */
export class FuseNameError extends FuseProtocolError {
  /** Creates a name error with a description and the errno to answer. */
  constructor(message: string, errno: number) {
    super(message, errno);
    this.name = "FuseNameError";
  }
}

/** An opcode this layer has no decoder for; the caller answers ENOSYS, as libfuse does. */
export class FuseUnsupportedOpcodeError extends FuseProtocolError {
  /** The opcode from the request header. */
  readonly opcode: number;

  /** Creates the error for `opcode` (its name is given in the message). */
  constructor(opcode: number, name: string) {
    super(`FUSE opcode ${opcode} (${name}) is not supported`, FuseErrno.ENOSYS);
    this.name = "FuseUnsupportedOpcodeError";
    this.opcode = opcode;
  }
}
