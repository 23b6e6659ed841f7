#!/usr/bin/env bash
# Installs libvirt 11 (libvirtd with its QEMU driver, and virsh) from Debian
# bookworm-backports, where it pairs with the QEMU 10 of scripts/setup_qemu.sh,
# for tests/qemu/fs_libvirt_test.ts. Only the daemon and the client: not
# libvirt-daemon-system (no system units, networks or users set up), no
# recommended drivers. systemd-container comes from bookworm itself (the
# backports one would pull in systemd 254). Services are not started: the test
# runs its own libvirtd with a private configuration.
#
# Idempotent: does nothing when libvirtd and virsh 11 are already there.
# Needs root (apt-get) only when it has to install.
set -euo pipefail

want_major=11
packages=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)

log() { printf 'setup_libvirt: %s\n' "$*"; }

# Prints the major version of the given libvirt program, or nothing if it is missing.
major_of() {
  command -v "$1" >/dev/null 2>&1 || return 0
  "$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 | cut -d. -f1
}

libvirt_ready() {
  [[ "$(major_of libvirtd)" == "$want_major" ]] &&
    [[ "$(major_of virsh)" == "$want_major" ]] &&
    [[ -f /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ]] &&
    command -v systemd-socket-activate >/dev/null 2>&1 &&
    command -v unshare >/dev/null 2>&1
}

if libvirt_ready; then
  log "already installed: $(libvirtd --version)"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  log "libvirt $want_major is missing and installing it needs root (apt-get)" >&2
  exit 1
fi

# QEMU 10, and the bookworm-backports apt source libvirt comes from too.
bash "$(dirname "${BASH_SOURCE[0]}")/setup_qemu.sh"

# Keep the packages' maintainer scripts from starting libvirtd or virtlogd
# (Debian's policy-rc.d convention: 101 = action forbidden), unless the
# machine already has a policy of its own.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=true
fi
cleanup() { if $own_policy; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -q
targets=()
for package in "${packages[@]}"; do targets+=("$package/bookworm-backports"); done
log "installing ${packages[*]} from bookworm-backports"
apt-get install -y -q --no-install-recommends "${targets[@]}" systemd systemd-container util-linux
hash -r

if ! libvirt_ready; then
  log "install finished but libvirt $want_major is still not usable:" >&2
  libvirtd --version >&2 || true
  virsh --version >&2 || true
  exit 1
fi
log "installed: $(libvirtd --version)"
