#!/usr/bin/env bash
# Installs virtiofsd 1.13 (the Rust virtiofsd, only packaged in Debian
# trixie and later) for the fs benchmark, without touching the host's
# Debian 12: a minimal trixie tree made by debootstrap in a cache directory
# (default /var/cache/vhostd-bench/trixie, or $VHOSTD_TRIXIE_ROOT), with the
# virtiofsd package installed in it. Not needed by the tests or CI.
#
# What runs it: a wrapper beside the tree ($root/../virtiofsd) that starts
# the tree's binary with the tree's own dynamic loader and libraries
# (trixie's glibc, libseccomp, libcap-ng) on the host's /proc and paths, so
# nothing is bind-mounted and nothing needs cleaning up after a run. The fs
# benchmark uses the wrapper when it exists ($VIRTIOFSD overrides).
#
# Idempotent: an existing tree is reused (debootstrap runs only when the
# tree is missing or unfinished, the package is installed only when missing).
# Needs root (debootstrap, chroot) and network access to the Debian mirror.
# Prints the wrapper and its version last; fails unless it is 1.13.x.
set -euo pipefail

root="${VHOSTD_TRIXIE_ROOT:-/var/cache/vhostd-bench/trixie}"
mirror="${VHOSTD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
binary="$root/usr/libexec/virtiofsd"
wrapper="$(dirname "$root")/virtiofsd"

log() { printf 'setup_virtiofsd: %s\n' "$*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
  log "needs root (debootstrap and chroot)"
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends debootstrap >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends debootstrap >&2; }
fi

if [[ ! -f "$root/.vhostd-debootstrap-done" ]]; then
  log "debootstrap --variant=minbase trixie $root $mirror (a few minutes)"
  mkdir -p "$root"
  debootstrap --variant=minbase trixie "$root" "$mirror" >&2
  touch "$root/.vhostd-debootstrap-done"
fi

in_root() {
  # apt and dpkg's maintainer scripts expect /proc; unmounted on every way out.
  mount -t proc proc "$root/proc"
  local status=0
  chroot "$root" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@" ||
    status=$?
  umount "$root/proc"
  return "$status"
}

if [[ ! -x "$binary" ]]; then
  log "installing virtiofsd in $root"
  in_root apt-get update >&2
  in_root apt-get install -y --no-install-recommends virtiofsd >&2
fi

cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Made by vhostd's scripts/setup_virtiofsd.sh: virtiofsd from the trixie tree $root.
exec "$root/lib64/ld-linux-x86-64.so.2" --library-path \\
  "$root/usr/lib/x86_64-linux-gnu" "$binary" "\$@"
EOF
chmod 755 "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"

version="$(chroot "$root" /usr/libexec/virtiofsd --version)"
case "$version" in
*" 1.13."*) ;;
*)
  log "expected virtiofsd 1.13.x, $binary says: $version"
  exit 1
  ;;
esac
if [[ "$("$wrapper" --version 2>&1)" != "$version" ]]; then
  log "$wrapper does not run: $("$wrapper" --version 2>&1 || true)"
  exit 1
fi
printf '%s (%s)\n' "$wrapper" "$version"
