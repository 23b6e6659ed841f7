/**
 * The one error type of the protocol layer.
 *
 * @module
 */

/**
 * A vhost-user message (or part of one) that does not follow the protocol:
 * a short or over-long payload, a field with an illegal value, a header that
 * cannot be parsed. The message text names the request and the fault so the
 * caller can log it and answer with an error reply.
 */
export class ProtocolError extends Error {
  /** Creates a protocol error with a one-line description of the fault. */
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}
