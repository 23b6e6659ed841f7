/**
 * Running one filesystem operation as the guest caller that asked for it:
 * with the caller's ids (`credentials.ts`), with the groups of the inodes
 * it involves when the host refuses it otherwise (`group_claims.ts`), and
 * without CAP_FSETID when the guest says its caller has none
 * (HANDLE_KILLPRIV_V2: the host kernel then clears setuid bits as it does
 * for an unprivileged writer).
 *
 * @module
 */

import { type Caller, ThreadCredentials } from "./credentials.ts";
import { asCallerClaimingGroups, type InvolvedGids } from "./group_claims.ts";

/** Runs operations as their guest callers; use it only on the thread that constructed it. */
export class CallerScope {
  readonly #credentials = new ThreadCredentials();

  /** True when operations run as their caller (vhostd is root and can switch). */
  get switching(): boolean {
    return this.#credentials.switching;
  }

  /**
   * True when running as `caller` changes nothing (see
   * ThreadCredentials.runsAsSelf): the operation may run straight, with no
   * closures made for it.
   */
  runsAsSelf(caller: Caller | undefined): boolean {
    return this.#credentials.runsAsSelf(caller);
  }

  /**
   * Runs `operation` as `caller` (vhostd itself when undefined), once more
   * with the `involved` inodes' groups when the host refuses it; with
   * `eager` those groups are given from the start (see group_claims.ts).
   */
  asCallerClaiming<T>(
    caller: Caller | undefined,
    involved: InvolvedGids,
    operation: () => T,
    eager = false,
  ): T {
    return asCallerClaimingGroups(this.#credentials, caller, involved, operation, eager);
  }

  /** Runs `operation` without CAP_FSETID when `kill` (the guest asked for KILL_SUIDGID). */
  maybeKillingPrivileges<T>(kill: boolean, operation: () => T): T {
    return kill ? this.#credentials.withoutFsetid(operation) : operation();
  }
}
