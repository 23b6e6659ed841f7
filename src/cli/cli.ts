/**
 * Top-level command dispatch: `vhostd blk ...`, `vhostd fs ...`, `--help`, `--version`.
 *
 * @module
 */

import { log } from "../log.ts";
import { runBlk } from "./blk_command.ts";
import { runFs } from "./fs_command.ts";
import { runState } from "./state_command.ts";
import { USAGE_EXIT_CODE, UsageError } from "./usage_error.ts";
import { VERSION } from "../version.ts";

/** Help text of `vhostd`. */
export const MAIN_HELP = `vhostd ${VERSION} — vhost-user device back-end

Usage:
  vhostd blk [OPTIONS]     serve a virtio-blk disk (see vhostd blk --help)
  vhostd fs [OPTIONS]      share a directory as a virtio-fs device (see vhostd fs --help)
  vhostd state ACTION      save, load or inspect device state (see vhostd state --help)
  vhostd --version         print the version
  vhostd --help            show this help
`;

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  blk: runBlk,
  fs: runFs,
  state: runState,
};

/** Runs the command line; resolves with the process exit code. */
export async function runCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || command === "--help" || command === "-h" || command === "help") {
      console.log(MAIN_HELP);
      return command === undefined ? USAGE_EXIT_CODE : 0;
    }
    if (command === "--version" || command === "-V") {
      console.log(`vhostd ${VERSION}`);
      return 0;
    }
    const run = COMMANDS[command];
    if (!run) throw new UsageError(`unknown command "${command}" (try vhostd --help)`);
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`vhostd: ${e.message}`);
      return USAGE_EXIT_CODE;
    }
    // An operational failure: one line for the user, the stack only when debugging.
    console.error(`vhostd: ${e instanceof Error ? e.message : e}`);
    log.debug(e instanceof Error ? e.stack ?? "" : "");
    return 1;
  }
}
