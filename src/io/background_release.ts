/**
 * Dropping a large memfd without waiting for it. Closing the last fd of a
 * 1 GiB RAM disk frees 262,144 pages, which takes 100–250 ms here; done on
 * the main thread right after a LOAD, that time is added to the front-end's
 * wait for CHECK_DEVICE_STATE (the VM's downtime). Instead io_uring's
 * worker thread punches the pages out and then closes the fd (a hard link:
 * the close runs even when the punch fails), and this thread goes on. The
 * ring exists only while releases are in flight: a timer of the calling
 * thread's event loop reaps them and then closes it (so call this from a
 * thread whose event loop runs, such as the daemon's main thread).
 *
 * @module
 */

import { closeQuietly, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, IoUring } from "../../ffi/mod.ts";
import { probeIoUring } from "./open_engine.ts";

/** Releases in flight at most (two completions each); more wait for the oldest. */
const RELEASES_IN_FLIGHT = 4;

/** How often the ring is looked at while releases are in flight. */
const SWEEP_MS = 10;

/** The ring, while releases are in flight. */
let ring: IoUring | undefined;
let completionsDue = 0;
let sweepTimer: ReturnType<typeof setTimeout> | undefined;
const counted = () => {
  // Results do not matter: the memory goes once the file's last reference does.
  completionsDue--;
};

/**
 * Closes `fd`, a memfd of `length` bytes, in io_uring's worker after
 * freeing its pages there; without io_uring closes it here. The caller
 * must not use `fd` after this call (its number is freed later).
 */
export function releaseFileInBackground(fd: number, length: number): void {
  if (fd < 0) return;
  const uring = backgroundRing();
  if (uring === undefined || !submitRelease(uring, fd, length)) closeQuietly(fd);
}

/** True once the close of `fd` is the kernel's job; false when the caller must close it. */
function submitRelease(uring: IoUring, fd: number, length: number): boolean {
  try {
    uring.reap(counted);
    while (completionsDue >= 2 * RELEASES_IN_FLIGHT) {
      uring.submit(1);
      uring.reap(counted);
    }
  } catch {
    return false;
  }
  if (uring.sqEntries - uring.sqPending < 2) return false;
  uring.prepFallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, Math.max(length, 1), 1);
  uring.hardLinkLast();
  uring.prepClose(fd, 2);
  completionsDue += 2;
  try {
    uring.submit(0);
  } catch {
    // The two entries stay queued and go with the next submit: closing fd
    // here too could close a number reused meanwhile.
  }
  scheduleSweep();
  return true;
}

function scheduleSweep(): void {
  if (sweepTimer !== undefined) return;
  sweepTimer = setTimeout(sweep, SWEEP_MS);
  Deno.unrefTimer(sweepTimer);
}

/** Reaps; once nothing is due, closes the ring (no fd is left open for later). */
function sweep(): void {
  sweepTimer = undefined;
  const uring = ring;
  if (!uring) return;
  try {
    uring.submit(0); // entries a failed submit left queued
    uring.reap(counted);
  } catch {
    // looked at again below
  }
  if (completionsDue > 0 || uring.sqPending > 0) {
    scheduleSweep();
    return;
  }
  uring.close();
  ring = undefined;
}

function backgroundRing(): IoUring | undefined {
  if (ring === undefined && probeIoUring() === undefined) {
    try {
      ring = new IoUring(2 * RELEASES_IN_FLIGHT);
    } catch {
      // No ring now (out of fds or memory?): this release closes here.
    }
  }
  return ring;
}
