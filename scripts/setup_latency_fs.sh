#!/usr/bin/env bash
# Builds scripts/latency_fs/latency_fs.c (a FUSE filesystem that delays every
# read and write like an SSD) into .cache/latency_fs/latency_fs, installing
# its Debian build and run dependencies (gcc, pkg-config, libfuse3-dev,
# fuse3) first when they are missing. Idempotent: rebuilds only when the
# source is newer than the binary. Prints the binary's path last.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/scripts/latency_fs/latency_fs.c"
out_dir="$root/.cache/latency_fs"
bin="$out_dir/latency_fs"

log() { printf 'setup_latency_fs: %s\n' "$*" >&2; }

ready() {
  command -v gcc >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 &&
    pkg-config --exists fuse3 && command -v fusermount3 >/dev/null 2>&1
}

if ! ready; then
  if [[ "$(id -u)" != 0 ]]; then
    log "gcc, pkg-config, libfuse3-dev or fuse3 is missing and installing needs root (apt-get)"
    exit 1
  fi
  log "installing gcc pkg-config libfuse3-dev fuse3"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libfuse3-dev fuse3 >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends \
      gcc libc6-dev pkg-config libfuse3-dev fuse3 >&2; }
fi

if [[ ! -x "$bin" || "$src" -nt "$bin" ]]; then
  mkdir -p "$out_dir"
  log "compiling $bin"
  # shellcheck disable=SC2046 # pkg-config prints several words on purpose
  gcc -O2 -g -Wall -Wextra -Werror -o "$bin.tmp" "$src" $(pkg-config --cflags --libs fuse3)
  mv "$bin.tmp" "$bin"
fi
printf '%s\n' "$bin"
