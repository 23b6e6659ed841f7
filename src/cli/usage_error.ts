/**
 * A command-line mistake or an unusable input (bad argument, missing image):
 * reported as one line on stderr with exit code 2, never as a stack trace.
 *
 * @module
 */

/** A user error with a one-line message. */
export class UsageError extends Error {}

/** Exit code for usage errors and bad input. */
export const USAGE_EXIT_CODE = 2;
