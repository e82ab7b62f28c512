#!/usr/bin/env bash
# Build the tiny Linux guest that the QEMU tests attach to the switch:
#
#   .cache/guest/vmlinuz      Debian's 6.1 kernel (from linux-image-<ver>-amd64,
#                             fetched with `apt-get download`, unpacked with
#                             `dpkg -x`, never installed)
#   .cache/guest/initrd.gz    busybox-static + the virtio-net modules of that
#                             kernel + init.sh as /init (cpio newc, gzip)
#
# Idempotent: the kernel is fetched once per version, the initramfs is rebuilt
# only when one of its inputs changed. Prints what it did, then two lines
# `KERNEL=<path>` and `INITRD=<path>` that callers may parse.
#
# Environment:
#   ZC_GUEST_KERNEL_PKG  kernel package to use (default: the newest
#                        linux-image-6.1.0-<abi>-amd64 that apt knows)
#   ZC_GUEST_CACHE       cache folder (default: <repo>/.cache/guest)
#   BUSYBOX              busybox-static binary (default: /bin/busybox)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${ZC_GUEST_CACHE:-$repo/.cache/guest}"
busybox="${BUSYBOX:-/bin/busybox}"
# Dependency order: each module only needs the ones before it.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net)

say() { echo "guest-image: $*"; }
die() { echo "guest-image: error: $*" >&2; exit 1; }

[ -x "$busybox" ] || busybox="$(command -v busybox || true)"
[ -n "$busybox" ] && [ -x "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
bb_banner="$("$busybox" 2>&1 || true)"
[[ "$bb_banner" == BusyBox* ]] || die "$busybox does not look like busybox"
if command -v ldd >/dev/null 2>&1 && ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked; the guest needs busybox-static"
fi

mkdir -p "$cache"

# ---- 1. the kernel package --------------------------------------------------
pkg="${ZC_GUEST_KERNEL_PKG:-}"
if [ -z "$pkg" ]; then
  if [ -f "$cache/kernel-package" ]; then
    pkg="$(cat "$cache/kernel-package")"
  else
    command -v apt-cache >/dev/null 2>&1 || die "apt-cache not found: set ZC_GUEST_KERNEL_PKG or run on Debian"
    pkg="$(apt-cache pkgnames linux-image-6.1.0- | grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -V | tail -1 || true)"
    [ -n "$pkg" ] || die "apt knows no linux-image-6.1.0-<abi>-amd64 package (run apt-get update)"
  fi
fi
kver="${pkg#linux-image-}"
kdir="$cache/$kver"

if [ -f "$kdir/vmlinuz" ] && [ -f "$kdir/modules.ok" ]; then
  say "kernel $kver: cached in $kdir"
else
  say "kernel $kver: fetching $pkg with apt-get download"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  sandbox=()
  # apt drops to the _apt user for downloads, which cannot write to a root-owned temp dir.
  [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
  (cd "$tmp" && apt-get download -qq "${sandbox[@]}" "$pkg") || die "apt-get download $pkg failed"
  deb="$(ls "$tmp"/*.deb)"
  say "kernel $kver: unpacking $(basename "$deb") with dpkg -x"
  dpkg -x "$deb" "$tmp/root"
  rm -rf "$kdir"
  mkdir -p "$kdir/modules"
  cp "$tmp/root/boot/vmlinuz-$kver" "$kdir/vmlinuz"
  cp "$tmp/root/boot/config-$kver" "$kdir/config"
  moddir="$tmp/root/lib/modules/$kver/kernel"
  for m in "${modules[@]}"; do
    src="$(find "$moddir" \( -name "$m.ko" -o -name "$m.ko.xz" \) -print -quit)"
    [ -n "$src" ] || die "module $m not found in $pkg"
    case "$src" in
      *.xz) "$busybox" xz -dc "$src" >"$kdir/modules/$m.ko" ;;
      *) cp "$src" "$kdir/modules/$m.ko" ;;
    esac
  done
  touch "$kdir/modules.ok"
  rm -rf "$tmp"
  trap - EXIT
  say "kernel $kver: kept vmlinuz and ${#modules[@]} modules in $kdir (the rest of the package was discarded)"
fi
echo "$pkg" >"$cache/kernel-package"

# ---- 2. the initramfs -------------------------------------------------------
# What the initramfs is made of (contents only, so the cache survives moving the checkout).
inputs="$( (for f in "$here/init.sh" "$busybox" "$kdir/modules/"*.ko; do sha256sum <"$f"; done; echo "$kver ${modules[*]}") | sha256sum | cut -d' ' -f1)"
if [ -f "$cache/initrd.gz" ] && [ "$(cat "$cache/initrd.inputs" 2>/dev/null)" = "$inputs" ] && [ "$(readlink "$cache/vmlinuz")" = "$kver/vmlinuz" ]; then
  say "initramfs: up to date ($cache/initrd.gz)"
else
  say "initramfs: building from $busybox, ${#modules[@]} modules and init.sh"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib/modules}
  cp "$busybox" "$stage/bin/busybox"
  for a in $("$busybox" --list); do
    [ "$a" = busybox ] || ln -s busybox "$stage/bin/$a"
  done
  ln -s bin "$stage/sbin"
  cp "$kdir/modules/"*.ko "$stage/lib/modules/"
  printf '%s\n' "${modules[@]}" >"$stage/lib/modules/load-order"
  cp "$here/init.sh" "$stage/init"
  chmod 755 "$stage/init"
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -9n >"$cache/initrd.gz.tmp"
  mv "$cache/initrd.gz.tmp" "$cache/initrd.gz"
  echo "$inputs" >"$cache/initrd.inputs"
  ln -sfn "$kver/vmlinuz" "$cache/vmlinuz"
  rm -rf "$stage"
  trap - EXIT
  say "initramfs: wrote $cache/initrd.gz ($(du -k "$cache/initrd.gz" | cut -f1) KiB)"
fi

echo "KERNEL=$cache/vmlinuz"
echo "INITRD=$cache/initrd.gz"
