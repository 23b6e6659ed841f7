/**
 * `vhostd descriptor KIND`: prints QEMU's back-end descriptor of a device
 * kind, the file management software reads from /usr/share/qemu/vhost-user/.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DEVICE_MODULES, deviceModule } from "../devices/device_list.ts";
import { log } from "../log.ts";
import { backendDescriptor, defaultBinary } from "./backend_descriptor.ts";
import { multiCallName } from "./multi_call.ts";
import { UsageError } from "./usage_error.ts";

/** The kinds that have a descriptor. */
function describedKinds(): string[] {
  return DEVICE_MODULES.filter((m) => m.descriptor !== undefined).map((m) => m.kind);
}

/** Help text of `vhostd descriptor`. */
export function descriptorHelp(): string {
  const kinds = describedKinds().join(", ");
  return `Usage: vhostd descriptor KIND [--binary PATH]

Print the vhost-user back-end descriptor of device KIND (${kinds}): the JSON that
QEMU's docs/interop/vhost-user.json describes, for /usr/share/qemu/vhost-user/ or
/etc/qemu/vhost-user/ (for example 50-vhostd-KIND.json).

  --binary PATH          the back-end binary it names (absolute); default: the
                         ${multiCallName("KIND")} link beside a compiled vhostd, which runs as
                         \`vhostd KIND\` (ln -s vhostd ${multiCallName("KIND")})
  -h, --help             show this help
`;
}

/** Runs `vhostd descriptor ARGS`; resolves with the exit code. */
export function runDescriptor(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { binary: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.split("\n")[0] : String(e));
  }
  if (parsed.values.help) {
    console.log(descriptorHelp());
    return Promise.resolve(0);
  }
  const kinds = describedKinds();
  const [kind, ...extra] = parsed.positionals;
  if (kind === undefined) {
    throw new UsageError(`descriptor needs a device kind (${kinds.join(", ")})`);
  }
  if (extra.length > 0) throw new UsageError(`descriptor takes one kind, got "${extra.join(" ")}"`);
  const module = deviceModule(kind);
  if (module === undefined) {
    throw new UsageError(`unknown device kind "${kind}" (descriptors: ${kinds.join(", ")})`);
  }
  let binary = parsed.values.binary;
  if (binary !== undefined && !binary.startsWith("/")) {
    throw new UsageError(`--binary must be an absolute path, got "${binary}"`);
  }
  if (binary === undefined) {
    const program = { standalone: Deno.build.standalone, execPath: Deno.execPath() };
    const chosen = defaultBinary(kind, program);
    if (chosen.note) log.warn(chosen.note);
    else if (realPath(chosen.path) !== realPath(program.execPath)) {
      log.warn(
        `${chosen.path} is not a link to ${program.execPath} yet: ln -s vhostd ${chosen.path}`,
      );
    }
    binary = chosen.path;
  }
  const descriptor = backendDescriptor(module, binary);
  if (descriptor === undefined) {
    throw new UsageError(
      `vhostd ${kind} has no vhost-user back-end descriptor (descriptors: ${kinds.join(", ")})`,
    );
  }
  console.log(JSON.stringify(descriptor, null, 2));
  return Promise.resolve(0);
}

function realPath(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch {
    return undefined;
  }
}
