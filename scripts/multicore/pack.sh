#!/usr/bin/env bash
# Pack what the multi-core table needs on a machine without Node, npm or
# DPDK (docs/PERFORMANCE.md, "Data-path workers"): this machine's node
# binary, the built switch and bench with their runtime modules, and a
# dpdk-testpmd closure (the binary, its libraries, the loader, and the
# memif / vhost / virtio / mempool_ring drivers) for the memif reference.
# run.sh unpacks and runs them there.
#
#   scripts/multicore/pack.sh [OUTDIR]    (default bench/.multicore, ignored by git)
#
# Needs: a built checkout (npm ci), xz, and dpdk-testpmd installed here.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/bench/.multicore}
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# 0. dist/ built from this checkout, and which commit it is (run.sh prints it with the table).
(cd "$root" && npx tsc -p .)
(cd "$root" && echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench || echo ' with uncommitted changes')") > "$out/commit.txt"

# 1. Node itself (about 24 MB as xz -9).
node_bin=$(command -v node)
xz -9 -T0 -c "$node_bin" > "$out/node.xz"

# 2. The app: dist/, the addon, package.json, and the runtime modules
#    (npm's production tree without the compiler and the addon's headers).
app=$stage/app
mkdir -p "$app/bindings/build/Release"
cp -r "$root/dist" "$root/package.json" "$app/"
cp "$root"/bindings/build/Release/*.node "$app/bindings/build/Release/"
(cd "$root" && npm ls --omit=dev --parseable --all 2>/dev/null) | sed "s|^$root/||" | grep '^node_modules/' |
  grep -v -e '^node_modules/typescript$' -e '^node_modules/node-addon-api$' |
  while read -r m; do mkdir -p "$app/$(dirname "$m")"; cp -r "$root/$m" "$app/$m"; done
tar -C "$stage" -cJf "$out/app.tar.xz" app

# 3. dpdk-testpmd's closure, and Debian's loader to run it with.
tp=$(command -v dpdk-testpmd)
dp=$stage/dpdk
mkdir -p "$dp/lib" "$dp/pmds"
cp -L "$tp" "$dp/dpdk-testpmd"
ldd "$tp" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r l; do cp -L "$l" "$dp/lib/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$dp/ld-linux-x86-64.so.2"
pmd_dir=$(dirname "$(ls /usr/lib/x86_64-linux-gnu/dpdk/pmds-*/librte_net_memif.so | head -1)")
for p in mempool_ring net_memif net_vhost net_virtio; do
  cp -L "$pmd_dir/librte_$p.so" "$dp/pmds/"
  ldd "$pmd_dir/librte_$p.so" | awk '$3 ~ /^\// {print $3}' | while read -r l; do [ -e "$dp/lib/$(basename "$l")" ] || cp -L "$l" "$dp/lib/"; done
done
# testpmd's output goes to a pipe; the bench runs it under stdbuf, whose preload must match this libc.
cp -L "$(dpkg -L coreutils | grep '/libstdbuf.so$' | head -1)" "$dp/lib/libstdbuf.so"
tar -C "$stage" -cJf "$out/dpdk.tar.xz" dpdk

du -sh "$out"/*
