/**
 * The error a request handler throws when it cannot honour a request: the
 * dispatcher logs it and answers with a failure; the connection stays up.
 *
 * @module
 */

/** A request that cannot be honoured. */
export class RequestError extends Error {}
