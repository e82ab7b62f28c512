#!/usr/bin/env bash
# Build the "node" variant of the test guest, for running the guest driver
# inside a VM (docs/qemu.md, "The guest driver inside a guest"):
#
#   .cache/guest/initrd-node.gz   busybox-static, Node (/usr/bin/node with the
#                                 libraries ldd lists and the loader), the
#                                 built project (dist/, the native addon, the
#                                 runtime node_modules), init-node.sh as /init
#
# The kernel is build.sh's (run first; it prints KERNEL=). No virtio module
# goes in: the virtio-net device must stay unbound for the user-space driver.
# Needs `npx tsc -p .` and `npm run install` done. Rebuilt only when an input
# changed. Prints `KERNEL=<path>` and `INITRD=<path>` like build.sh.
#
# Environment: ZC_GUEST_CACHE, BUSYBOX (as build.sh), NODE (default: node on PATH).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${ZC_GUEST_CACHE:-$repo/.cache/guest}"
busybox="${BUSYBOX:-/bin/busybox}"
[ -x "$busybox" ] || busybox="$(command -v busybox)"
node="$(readlink -f "${NODE:-$(command -v node)}")"
addon="$repo/bindings/build/Release/zcswitch_native.node"
# What `zcswitch vm` loads at run time (package.json dependencies it imports).
runtime_deps=(commander pino zod)

say() { echo "guest-image(node): $*"; }
die() { echo "guest-image(node): error: $*" >&2; exit 1; }

base="$("$here/build.sh")" || die "build.sh failed"
kernel="$(echo "$base" | sed -n 's/^KERNEL=//p')"
[ -f "$repo/dist/src/cli/main.js" ] || die "no dist/ (run npx tsc -p . first)"
[ -f "$addon" ] || die "no native addon at $addon (run npm run install first)"
[ -x "$node" ] || die "node not found"

# The runtime packages and everything they depend on (their package.json "dependencies").
# npm installs them flat under node_modules/ (a nested copy would be found next to its parent).
deps="$("$node" -e '
  const fs = require("fs"), path = require("path");
  const nm = process.argv[1], seen = new Set(), todo = process.argv.slice(2);
  while (todo.length) {
    const n = todo.pop(); if (seen.has(n)) continue; seen.add(n);
    const p = JSON.parse(fs.readFileSync(path.join(nm, n, "package.json"), "utf8"));
    for (const d of Object.keys(p.dependencies || {})) todo.push(d);
  }
  console.log([...seen].sort().join("\n"));' "$repo/node_modules" "${runtime_deps[@]}")"

inputs="$( (for f in "$here/init-node.sh" "$busybox" "$node" "$addon"; do sha256sum <"$f"; done
  (cd "$repo" && find dist -name '*.js' -not -path 'dist/test/*' | LC_ALL=C sort | xargs cat | sha256sum)
  echo "$kernel $deps") | sha256sum | cut -d' ' -f1)"
out="$cache/initrd-node.gz"
if [ -f "$out" ] && [ "$(cat "$cache/initrd-node.inputs" 2>/dev/null)" = "$inputs" ]; then
  say "initramfs: up to date ($out)"
else
  say "initramfs: building (node $("$node" --version), ${deps//$'\n'/ })"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,dev,proc,sys,tmp,usr/bin,opt/zcswitch/bindings/build/Release}
  cp "$busybox" "$stage/bin/busybox"
  for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$stage/bin/$a"; done
  ln -s bin "$stage/sbin"
  cp "$node" "$stage/usr/bin/node"
  # Node's libraries and the loader, at the paths ldd names (the loader's path is baked into node).
  for lib in $(ldd "$node" | grep -o '/[^ ]*'); do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done
  (cd "$repo" && tar cf - --exclude=dist/test --exclude=dist/bench --exclude=dist/fuzz --exclude='*.map' --exclude='*.d.ts' dist) |
    tar xf - -C "$stage/opt/zcswitch"
  cp "$repo/package.json" "$stage/opt/zcswitch/"
  cp "$addon" "$stage/opt/zcswitch/bindings/build/Release/"
  for d in $deps; do
    src="$repo/node_modules/$d"
    mkdir -p "$stage/opt/zcswitch/node_modules/$d"
    cp -a "$src/." "$stage/opt/zcswitch/node_modules/$d/"
  done
  cp "$here/init-node.sh" "$stage/init"
  chmod 755 "$stage/init"
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -6n >"$out.tmp"
  mv "$out.tmp" "$out"
  echo "$inputs" >"$cache/initrd-node.inputs"
  rm -rf "$stage"
  trap - EXIT
  say "initramfs: wrote $out ($(du -k "$out" | cut -f1) KiB)"
fi
echo "KERNEL=$kernel"
echo "INITRD=$out"
