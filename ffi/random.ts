/**
 * Entropy from the kernel (`getrandom`), written straight into any buffer,
 * guest memory included.
 *
 * @module
 */

import { EINTR } from "./errno.ts";
import { lastErrno, libc, throwLastError } from "./libc.ts";

/** `GRND_NONBLOCK`: fail with EAGAIN instead of waiting for the pool (only before it is ready). */
export const GRND_NONBLOCK = 0x1;

/**
 * Fills `buf` from the kernel's CSPRNG; returns the bytes written, which
 * may be fewer than asked for requests above 32 MiB (the kernel's limit
 * per call). Throws SyscallError (EAGAIN with `GRND_NONBLOCK` before the
 * pool is initialised).
 */
export function getRandom(buf: Uint8Array, flags: number = 0): number {
  if (buf.length === 0) return 0;
  const symbols = libc();
  for (;;) {
    const n = symbols.getrandom(buf, BigInt(buf.length), flags);
    if (n >= 0n) return Number(n);
    if (lastErrno() !== EINTR) throwLastError("getrandom", `${buf.length} bytes`);
  }
}
