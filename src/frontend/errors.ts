/**
 * Errors the TypeScript front-end throws when the back-end refuses a request,
 * stays silent, or goes away. Malformed replies are reported with the
 * protocol layer's `ProtocolError`.
 *
 * @module
 */

/** The back-end answered a request with a failure (a non-zero REPLY_ACK or an empty reply). */
export class BackendRefused extends Error {
  /** Name of the refused request, such as `"SET_VRING_NUM"`. */
  readonly request: string;
  /** The non-zero u64 the back-end acknowledged with; `undefined` for an empty reply. */
  readonly ack: bigint | undefined;

  /**
   * Creates the error.
   *
   * @param request name of the refused request
   * @param ack the non-zero acknowledgement, or undefined when the reply was empty
   */
  constructor(request: string, ack?: bigint) {
    super(
      ack === undefined
        ? `back-end refused ${request} (empty reply)`
        : `back-end refused ${request} (ack 0x${ack.toString(16)})`,
    );
    this.name = "BackendRefused";
    this.request = request;
    this.ack = ack;
  }
}

/** Nothing arrived within the time allowed (a reply, a connection, a completion). */
export class BackendTimeout extends Error {
  /** Creates the error; `what` says what was awaited, e.g. "reply to GET_FEATURES". */
  constructor(what: string, timeoutMs: number) {
    super(`timed out after ${timeoutMs} ms waiting for ${what}`);
    this.name = "BackendTimeout";
  }
}

/** The back-end closed the connection (or it broke) while a reply was awaited. */
export class BackendDisconnected extends Error {
  /** Creates the error; `detail` says what was going on. */
  constructor(detail: string) {
    super(`back-end closed the connection ${detail}`);
    this.name = "BackendDisconnected";
  }
}
