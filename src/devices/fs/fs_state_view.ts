/**
 * A readable view of a saved virtio-fs state for `vhostd state inspect`:
 * inodes as paths under the shared directory, open handles with their
 * flags. Works on untrusted JSON (a state file): anything malformed is shown
 * as such, never thrown.
 *
 * @module
 */

import {
  O_ACCMODE,
  O_APPEND,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from "../../../ffi/mod.ts";

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Hex name bytes as text (UTF-8 when valid, else escaped bytes). */
function nameText(hex: unknown): string {
  if (typeof hex !== "string" || !/^([0-9a-f]{2})*$/.test(hex)) return "<bad name>";
  const bytes = new Uint8Array(hex.length / 2).map((_, i) =>
    parseInt(hex.slice(i * 2, i * 2 + 2), 16)
  );
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return [...bytes].map((
      b,
    ) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`))
      .join("");
  }
}

function typeName(type: unknown): string {
  switch (typeof type === "number" ? type & S_IFMT : -1) {
    case S_IFDIR:
      return "dir";
    case S_IFREG:
      return "file";
    case S_IFLNK:
      return "link";
    default:
      return "other";
  }
}

function flagsText(flags: unknown): string {
  if (typeof flags !== "number") return "?";
  const mode = flags & O_ACCMODE;
  const parts = [
    mode === O_RDONLY
      ? "O_RDONLY"
      : mode === O_WRONLY
      ? "O_WRONLY"
      : mode === O_RDWR
      ? "O_RDWR"
      : "O_ACCMODE?",
  ];
  if (flags & O_APPEND) parts.push("O_APPEND");
  if (flags & O_DIRECT) parts.push("O_DIRECT");
  return parts.join("|");
}

/** Lines describing an fs device state (the METADATA `state` object), indented by two spaces. */
export function describeFsState(state: unknown): string[] {
  const fs = isObject(state) ? state.fs : undefined;
  if (!isObject(fs) || !Array.isArray(fs.inodes) || !Array.isArray(fs.handles)) {
    return ["  fs state: not in the expected form"];
  }
  const paths = new Map<string, string>([["1", ""]]);
  const lines: string[] = [];
  for (const inode of fs.inodes) {
    if (!isObject(inode)) continue;
    const parentPath = typeof inode.parent === "string" ? paths.get(inode.parent) : undefined;
    const path = inode.name === null || parentPath === undefined
      ? "<unlinked>"
      : `${parentPath}/${nameText(inode.name)}`;
    paths.set(String(inode.nodeid), path);
    const broken = typeof inode.broken === "string" ? `  BROKEN: ${inode.broken}` : "";
    lines.push(
      `    inode ${String(inode.nodeid).padEnd(6)} ${
        typeName(inode.type).padEnd(5)
      } ${path}  (lookups ${inode.lookups})${broken}`,
    );
  }
  for (const handle of fs.handles) {
    if (!isObject(handle)) continue;
    const path = paths.get(String(handle.nodeid)) ?? `<inode ${handle.nodeid}>`;
    const what = handle.isDir ? "dir handle " : "file handle";
    const broken = typeof handle.broken === "string" ? `  BROKEN: ${handle.broken}` : "";
    lines.push(
      `    ${what} ${String(handle.fh).padEnd(4)} ${path || "/"}  ${
        handle.isDir ? "" : flagsText(handle.flags)
      }${broken}`,
    );
  }
  const init = isObject(fs.init) ? `FUSE 7.${fs.init.minor}` : "before INIT";
  return [
    `  fs state: ${init}, ${fs.inodes.length} inode(s) besides the root, ${fs.handles.length} open handle(s)`,
    ...lines,
  ];
}
