/**
 * vhostd entry point: the command line only. Everything else lives in src/.
 *
 * @module
 */

import { runCli } from "./src/cli/cli.ts";

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
