#!/usr/bin/env bash
# Builds the end-to-end test guest under .cache/guest/:
#   vmlinuz    the Debian 6.1 cloud kernel (linux-image-cloud-amd64's dependency)
#   initrd.gz  gzip'd newc initramfs: static busybox, scripts/guest/init as
#              /init, and the modules of scripts/guest/modules that the kernel
#              does not have built in, uncompressed, as /lib/modules/NAME.ko,
#              and Debian's setfattr/getfattr (attr) and setfacl/getfacl (acl)
#              with the shared libraries and dynamic loader they need
# Skips the work when both exist and were built from the current inputs
# (init, module list, this script). Downloaded .debs stay in .cache/guest/debs/
# so that a rebuild needs no network; `--force` downloads them again.
# Needs root only to apt-get install cpio or to run apt-get update.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
guest_dir="$repo/scripts/guest"
cache="$repo/.cache/guest"
debs="$cache/debs"

log() { printf 'build_guest: %s\n' "$*"; }
die() { printf 'build_guest: error: %s\n' "$*" >&2; exit 1; }

force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) die "usage: build_guest.sh [--force]" ;;
esac

inputs_hash=$(cat "$guest_dir/init" "$guest_dir/modules" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
if [[ $force == 0 && -f "$cache/vmlinuz" && -f "$cache/initrd.gz" &&
  "$(cat "$cache/stamp" 2>/dev/null)" == "$inputs_hash" ]]; then
  log "up to date: $cache (kernel $(cat "$cache/kernel-release" 2>/dev/null || echo '?'))"
  exit 0
fi

# --- tools -----------------------------------------------------------------
apt_updated=0
apt_update_once() {
  [[ $apt_updated == 1 ]] && return 0
  log "apt-get update"
  apt-get update -q
  apt_updated=1
}

if ! command -v cpio >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] || die "cpio is missing; install it (apt-get install cpio) or run as root"
  log "installing cpio"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q cpio ||
    { apt_update_once && DEBIAN_FRONTEND=noninteractive apt-get install -y -q cpio; }
fi
for tool in apt-get apt-cache dpkg-deb gzip sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done

# --- downloads ---------------------------------------------------------------
# The download runs as root when we are root: apt's _apt sandbox user cannot
# write into the repository's cache directory.
apt_download() {
  (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$@") ||
    { apt_update_once && (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$@"); }
}

# Prints the versioned kernel package that linux-image-cloud-amd64 depends on.
kernel_package() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-6\.1\.[^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}

newest() { find "$debs" -maxdepth 1 -name "$1" | sort -V | tail -n 1; }

if [[ $force == 1 ]]; then rm -rf "$debs"; fi
mkdir -p "$debs"

kernel_deb=$(newest 'linux-image-6.1.*-cloud-amd64_*.deb')
if [[ -z "$kernel_deb" ]]; then
  pkg=$(kernel_package)
  if [[ -z "$pkg" ]]; then
    apt_update_once
    pkg=$(kernel_package)
  fi
  [[ -n "$pkg" ]] || die "cannot resolve linux-image-cloud-amd64 to a linux-image-6.1.*-cloud-amd64 package"
  log "downloading $pkg"
  apt_download "$pkg"
  kernel_deb=$(newest "${pkg}_*.deb")
fi
busybox_deb=$(newest 'busybox-static_*.deb')
if [[ -z "$busybox_deb" ]]; then
  log "downloading busybox-static"
  apt_download busybox-static
  busybox_deb=$(newest 'busybox-static_*.deb')
fi
[[ -f "$kernel_deb" && -f "$busybox_deb" ]] || die "downloads missing in $debs"

# Sets the array named $1 to the .deb paths of the packages that follow,
# downloading those not in $debs yet.
fetch_packages() {
  local -n into=$1
  shift
  into=()
  local pkg deb
  for pkg in "$@"; do
    deb=$(newest "${pkg}_*.deb")
    if [[ -z "$deb" ]]; then
      log "downloading $pkg"
      apt_download "$pkg"
      deb=$(newest "${pkg}_*.deb")
    fi
    [[ -f "$deb" ]] || die "download of $pkg missing in $debs"
    into+=("$deb")
  done
}

# busybox has no extended attribute or ACL applets: the xattr end-to-end test
# runs Debian's tools, dynamically linked, so glibc and the loader come too.
fetch_packages xattr_debs attr acl libattr1 libacl1 libc6

# busybox has no vsock applet: the vsock end-to-end test runs Debian's socat
# (VSOCK-LISTEN/VSOCK-CONNECT) with every shared library its packages bring.
fetch_packages vsock_debs socat libssl3 libwrap0 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 \
  libk5crypto3 libcom-err2 libkrb5support0 libkeyutils1

# --- assemble ------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "unpacking $(basename "$kernel_deb") and $(basename "$busybox_deb")"
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"

shopt -s nullglob
vmlinuz_candidates=("$work"/kernel/boot/vmlinuz-*)
module_dirs=("$work"/kernel/lib/modules/*/)
shopt -u nullglob
[[ ${#vmlinuz_candidates[@]} == 1 ]] || die "expected one vmlinuz in $(basename "$kernel_deb")"
[[ ${#module_dirs[@]} == 1 ]] || die "expected one lib/modules/<release> in $(basename "$kernel_deb")"
module_dir=${module_dirs[0]%/}
kernel_release=$(basename "$module_dir")

rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,run,root,etc,lib/modules}
install -m 0755 "$work/busybox/bin/busybox" "$rootfs/bin/busybox"
install -m 0755 "$guest_dir/init" "$rootfs/init"
: >"$rootfs/etc/guest-modules"

# Extended attribute tools: the four programs, the two libraries they link
# besides glibc, glibc itself and the loader (nothing else of libc6).
xattr_root="$work/xattr"
for deb in "${xattr_debs[@]}"; do dpkg-deb -x "$deb" "$xattr_root"; done
for tool in setfattr getfattr setfacl getfacl; do
  found=""
  for dir in usr/bin bin; do [[ -x "$xattr_root/$dir/$tool" ]] && found="$xattr_root/$dir/$tool"; done
  [[ -n "$found" ]] || die "$tool missing from ${xattr_packages[*]}"
  install -m 0755 "$found" "$rootfs/usr/bin/$tool"
done
(cd "$xattr_root" && find lib usr/lib lib64 -maxdepth 2 \( -name 'libattr.so*' -o -name 'libacl.so*' \
  -o -name libc.so.6 -o -name ld-linux-x86-64.so.2 \) \( -type f -o -type l \) 2>/dev/null || true) |
  while read -r lib; do
    mkdir -p "$rootfs/$(dirname "$lib")"
    cp -P "$xattr_root/$lib" "$rootfs/$lib"
  done
[[ -L "$rootfs/lib64/ld-linux-x86-64.so.2" && -f "$rootfs/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ]] || die "the dynamic loader is missing from libc6"

# socat and the libraries of its packages, and glibc's libresolv, which it links too.
vsock_root="$work/vsock"
(cd "$xattr_root" && find lib usr/lib -maxdepth 2 -name 'libresolv.so*' \( -type f -o -type l \)) |
  while read -r lib; do cp -P "$xattr_root/$lib" "$rootfs/$lib"; done
for deb in "${vsock_debs[@]}"; do dpkg-deb -x "$deb" "$vsock_root"; done
[[ -x "$vsock_root/usr/bin/socat" ]] || die "socat missing from its package"
install -m 0755 "$vsock_root/usr/bin/socat" "$rootfs/usr/bin/socat"
(cd "$vsock_root" && find lib usr/lib -maxdepth 2 -name 'lib*.so*' \( -type f -o -type l \) 2>/dev/null || true) |
  while read -r lib; do
    mkdir -p "$rootfs/$(dirname "$lib")"
    cp -P "$vsock_root/$lib" "$rootfs/$lib"
  done

is_builtin() { grep -qE "/$1\.ko(\.[a-z]+)?$" "$module_dir/modules.builtin" 2>/dev/null; }

# Loaded or built-in modules so far, to check each module's dependencies
# against the load order before the guest ever boots.
available=" "
while read -r module; do
  [[ -n "$module" ]] || continue
  if is_builtin "$module"; then
    log "module $module: built into the kernel"
    available+="$module "
    continue
  fi
  mapfile -t found < <(find "$module_dir/kernel" -name "$module.ko" -o -name "$module.ko.xz" \
    -o -name "$module.ko.zst" -o -name "$module.ko.gz")
  [[ ${#found[@]} == 1 ]] || die "module $module: expected one file in $kernel_release, found ${#found[@]}"
  target="$rootfs/lib/modules/$module.ko"
  # busybox insmod loads plain ELF only, so compressed modules are inflated here.
  case "${found[0]}" in
    *.ko) cp "${found[0]}" "$target" ;;
    *.ko.xz) xz -dc "${found[0]}" >"$target" ;;
    *.ko.zst) zstd -qdc "${found[0]}" >"$target" ;;
    *.ko.gz) gzip -dc "${found[0]}" >"$target" ;;
  esac
  depends=$(tr '\0' '\n' <"$target" | sed -n 's/^depends=//p' | head -n 1)
  for dep in ${depends//,/ }; do
    [[ "$available" == *" $dep "* ]] || is_builtin "$dep" ||
      die "module $module needs $dep, which scripts/guest/modules does not load before it"
  done
  log "module $module: $(basename "${found[0]}")"
  available+="$module "
  printf '%s\n' "$module" >>"$rootfs/etc/guest-modules"
done <"$guest_dir/modules"

mkdir -p "$cache"
(cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
  gzip -9n >"$cache/initrd.gz.tmp"
cp "${vmlinuz_candidates[0]}" "$cache/vmlinuz.tmp"
mv "$cache/initrd.gz.tmp" "$cache/initrd.gz"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
printf '%s\n' "$kernel_release" >"$cache/kernel-release"
printf '%s\n' "$inputs_hash" >"$cache/stamp"
log "built $cache/vmlinuz ($kernel_release) and $cache/initrd.gz ($(du -k "$cache/initrd.gz" | cut -f1) KiB)"
