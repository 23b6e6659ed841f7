/**
 * Top-level command dispatch: `vhostd <device kind> ...`, `vhostd state ...`, `--help`,
 * `--version`.
 *
 * @module
 */

import { log } from "../log.ts";
import { DEVICE_MODULES, deviceModule } from "../devices/device_list.ts";
import { runState } from "./state_command.ts";
import { runDescriptor } from "./descriptor_command.ts";
import { multiCallName } from "./multi_call.ts";
import { USAGE_EXIT_CODE, UsageError } from "./usage_error.ts";
import { VERSION } from "../version.ts";

function deviceLines(): string {
  return DEVICE_MODULES.map((m) => {
    const command = `vhostd ${m.kind} [OPTIONS]`.padEnd(25);
    return `  ${command}${m.summary} (see vhostd ${m.kind} --help)`;
  }).join("\n");
}

/** Help text of `vhostd`: one line per device of `device_list.ts`. */
export const MAIN_HELP = `vhostd ${VERSION} — vhost-user device back-end

Usage:
${deviceLines()}
  vhostd state ACTION      save, load or inspect device state (see vhostd state --help)
  vhostd descriptor KIND   print QEMU's vhost-user back-end descriptor of a device
  ${`${multiCallName("KIND")} ARGS`.padEnd(25)}vhostd KIND ARGS, run through a link named ${
  multiCallName("KIND")
}
  vhostd --version         print the version
  vhostd --help            show this help
`;

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
    const run = command === "state"
      ? runState
      : command === "descriptor"
      ? runDescriptor
      : deviceModule(command)?.run;
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
