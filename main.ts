/**
 * vhostd entry point: the command line only. Everything else lives in src/.
 *
 * @module
 */

import process from "node:process";
import { runCli } from "./src/cli/cli.ts";
import { multiCallArgs } from "./src/cli/multi_call.ts";

if (import.meta.main) {
  Deno.exit(await runCli(multiCallArgs(process.argv0, Deno.args)));
}
