/**
 * `deno task compile`: builds `dist/vhostd`, one self-contained binary with
 * its Workers embedded. Honours `DENORT_BIN` (a local denort base binary),
 * which is how to build on a machine that cannot reach Deno's download host.
 *
 * @module
 */

import { BINARY_PATH, compileArgs, localDenort } from "./compile_args.ts";

const root = new URL("..", import.meta.url).pathname;
const denort = localDenort();
console.error(
  denort
    ? `compile: using ${denort}`
    : "compile: no local denort (DENORT_BIN unset and none cached); deno will try to download it",
);
await Deno.mkdir(`${root}/dist`, { recursive: true });
const status = await new Deno.Command(Deno.execPath(), {
  args: compileArgs(),
  cwd: root,
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (!status.success) {
  console.error(
    "compile: failed. Without network access point DENORT_BIN at a denort binary of Deno " +
      `${Deno.version.deno} (x86_64-unknown-linux-gnu) and run again.`,
  );
  Deno.exit(status.code || 1);
}
console.error(`compile: wrote ${BINARY_PATH}`);
