#!/usr/bin/env bash
# Installs QEMU 10 (qemu-system-x86_64, qemu-img, qemu-storage-daemon) from
# Debian bookworm-backports. Idempotent: does nothing when QEMU 10 is already
# there. Needs root (apt-get) only when it has to install.
set -euo pipefail

want_major=10
backports_line="deb http://deb.debian.org/debian bookworm-backports main"
backports_list=/etc/apt/sources.list.d/bookworm-backports.list

log() { printf 'setup_qemu: %s\n' "$*"; }

# Prints the major version of qemu-system-x86_64, or nothing if it is missing.
qemu_major() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 || return 0
  qemu-system-x86_64 --version 2>/dev/null |
    sed -n 's/^QEMU emulator version \([0-9][0-9]*\)\..*/\1/p' | head -n 1
}

qemu_ready() {
  [[ "$(qemu_major)" == "$want_major" ]] &&
    command -v qemu-storage-daemon >/dev/null 2>&1 &&
    command -v qemu-img >/dev/null 2>&1
}

if qemu_ready; then
  log "already installed: $(qemu-system-x86_64 --version | head -n 1)"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  log "QEMU $want_major is missing and installing it needs root (apt-get)" >&2
  exit 1
fi

# Only add the suite when no apt source names it yet, so reruns change nothing.
if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding $backports_line"
  printf '%s\n' "$backports_line" >"$backports_list"
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -q
log "installing qemu-system-x86 and qemu-utils from bookworm-backports"
apt-get install -y -q -t bookworm-backports qemu-system-x86 qemu-utils
hash -r

if ! qemu_ready; then
  log "install finished but QEMU $want_major is still not usable:" >&2
  qemu-system-x86_64 --version >&2 || true
  exit 1
fi
log "installed: $(qemu-system-x86_64 --version | head -n 1)"
