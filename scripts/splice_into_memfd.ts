/**
 * The state benchmark's reference reader: opens the FIFO given as its
 * argument, splices everything from it into a fresh memfd (no parsing, no
 * checksum), and prints the milliseconds from the first byte to the end of
 * the stream. It is the least work a LOAD through a pipe can do: one kernel
 * copy of each byte into a newly allocated page.
 *
 * @module
 */

import {
  closeQuietly,
  ftruncate,
  memfdCreate,
  O_CLOEXEC,
  O_RDONLY,
  openFile,
  pollFd,
  POLLIN,
  setPipeSize,
  splice,
} from "../ffi/mod.ts";

const [fifo, sizeArg] = Deno.args;
const fd = openFile(fifo, O_RDONLY | O_CLOEXEC);
const staging = memfdCreate("reference-staging");
try {
  setPipeSize(fd, 1 << 20); // as `vhostd state load -i -` asks for its stdin
  ftruncate(staging, Number(sizeArg));
  pollFd(fd, POLLIN, -1); // the clock starts with the first byte, as the tools' own does
  const started = performance.now();
  let offset = 0;
  for (let n; (n = splice(fd, undefined, staging, offset, 1 << 20)) > 0;) offset += n;
  console.log(JSON.stringify({ bytes: offset, ms: performance.now() - started }));
} finally {
  closeQuietly(fd);
  closeQuietly(staging);
}
