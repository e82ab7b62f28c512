#!/usr/bin/env bash
# The multi-core table (docs/PERFORMANCE.md, "Data-path workers") on a
# machine with a core per process and neither Node nor DPDK installed:
# unpack what pack.sh made, then aggregate Mpps at 64 B for 1, 2, 4 and 8
# pairs across 1, 2, 4 and 8 workers (W <= P: a worker beyond the pairs
# has nothing to do), pinned (main thread CPU 0, workers 1..W, VMs after),
# and the memif pair of the same run as the one-pair reference.
#
#   scripts/multicore/run.sh [PACKDIR] [RESULTDIR]
#
# PACKDIR defaults to bench/.multicore, RESULTDIR to $OUT (else
# /tmp/multicore-results). It writes RESULTDIR/multicore.md (the table)
# and RESULTDIR/multicore-results.tar.xz (every bench JSON) and prints the
# table last. CELLS="P:W ..." and RUNS override the grid and runs per cell;
# ONEPAIR (default "gift swap") the exchanges of the one-pair rows (each
# process's cost per packet, and what held the sender back).
# The carried testpmd is for a machine without DPDK: where Debian's DPDK is
# installed, its EAL also loads the system's plugin directory beside the
# carried plugins and panics ("tailq is already registered"), so there the
# memif reference fails while the zcswitch cells still run.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pack=${1:-$root/bench/.multicore}
[ -d "$pack" ] || { echo "run.sh: no pack folder $pack: run scripts/multicore/pack.sh where the checkout is built" >&2; exit 1; }
pack=$(cd "$pack" && pwd)
res=${2:-${OUT:-/tmp/multicore-results}}
cells=${CELLS:-"1:1 2:1 2:2 4:1 4:2 4:4 8:1 8:2 8:4 8:8"}
runs=${RUNS:-3}
# DPDK refuses plugins under a world-writable directory (/tmp): the closure goes under /opt.
opt=${MULTICORE_OPT:-/opt/zcs}
# An image without xz-utils: python3's lzma stands in for the two ways xz is
# used here (tar -J, and xz -dc FILE).
if ! command -v xz > /dev/null && python3 -c 'import lzma' 2> /dev/null; then
  mkdir -p /tmp/xz-shim
  cat > /tmp/xz-shim/xz <<'SHIM'
#!/usr/bin/env python3
import lzma, shutil, sys
flags = ''.join(a[1:] for a in sys.argv[1:] if a.startswith('-') and not a.startswith('--'))
files = [a for a in sys.argv[1:] if not a.startswith('-')]
src = open(files[0], 'rb') if files else sys.stdin.buffer
if 'd' in flags:
    shutil.copyfileobj(lzma.open(src), sys.stdout.buffer)
else:
    with lzma.open(sys.stdout.buffer, 'wb') as out:
        shutil.copyfileobj(src, out)
SHIM
  chmod +x /tmp/xz-shim/xz
  export PATH=/tmp/xz-shim:$PATH
fi
for tool in xz tar taskset stdbuf timeout; do
  command -v "$tool" > /dev/null || { echo "run.sh: $tool is not installed here; the bench needs it" >&2; exit 1; }
done
for f in node.xz app.tar.xz dpdk.tar.xz; do
  [ -s "$pack/$f" ] || { echo "run.sh: $pack/$f is missing: run scripts/multicore/pack.sh where the checkout is built" >&2; exit 1; }
done
mkdir -p "$res" /tmp/node "$opt"
xz -dc "$pack/node.xz" > /tmp/node/node && chmod +x /tmp/node/node
tar -C "$opt" -xJf "$pack/app.tar.xz"
tar -C "$opt" -xJf "$pack/dpdk.tar.xz"
d=$opt/dpdk
cat > "$opt/testpmd" <<WRAP
#!/bin/sh
# dpdk-testpmd through the carried loader and libraries; stdbuf's preload from the same libc.
unset LD_PRELOAD
exec $d/ld-linux-x86-64.so.2 --library-path $d/lib --preload $d/lib/libstdbuf.so $d/dpdk-testpmd \
  -d $d/pmds/librte_mempool_ring.so -d $d/pmds/librte_net_memif.so -d $d/pmds/librte_net_vhost.so -d $d/pmds/librte_net_virtio.so "\$@"
WRAP
chmod +x "$opt/testpmd"
node=/tmp/node/node
commit=$(cat "$pack/commit.txt" 2>/dev/null || echo '(commit unknown)')
echo "zcswitch $commit, node $($node --version), $(nproc) CPUs, $(uname -r)"
# The carried testpmd must start before the grid is worth running (a missing library shows here, not in the last cell).
tp_out=$(timeout 30 "$opt/testpmd" -v --no-huge --no-pci --no-shconf -m 64 -l 0 -- --help 2>&1)
if grep -q 'RTE Version' <<< "$tp_out"; then echo "testpmd: $(grep -m1 'RTE Version' <<< "$tp_out")"; else echo "testpmd did not start:"; tail -5 <<< "$tp_out"; fi
cd "$opt/app"
raw=$(mktemp -d)
for c in $cells; do
  p=${c%:*}
  w=${c#*:}
  echo "== $p pairs, $w workers"
  timeout 150 "$node" dist/bench/main.js --only zc-oneway --sizes 64 --runs "$runs" --pin --no-peers \
    --pairs "$p" --workers "$w" --progress none --out "$raw/p$p-w$w" > "$raw/p$p-w$w.log" 2>&1 ||
    { echo "   failed (status $?):"; tail -5 "$raw/p$p-w$w.log"; }
done
echo "== memif pair"
timeout 120 "$node" dist/bench/main.js --only memif --sizes 64 --runs "$runs" --pin --testpmd "$opt/testpmd" \
  --progress none --out "$raw/memif" > "$raw/memif.log" 2>&1 || { echo "   failed (status $?):"; tail -5 "$raw/memif.log"; }
# One pair with a core per process, by exchange: the cost per packet of each process and what held the sender back.
for x in ${ONEPAIR:-gift swap}; do
  echo "== one pair, $x"
  timeout 120 "$node" dist/bench/main.js --only zc-oneway --sizes 64 --runs "$runs" --pin --no-peers --pair-exchange "$x" \
    --progress none --out "$raw/one-$x" > "$raw/one-$x.log" 2>&1 || { echo "   failed (status $?):"; tail -5 "$raw/one-$x.log"; }
done
tar -C "$raw" -cJf "$res/multicore-results.tar.xz" .
{ echo "zcswitch $commit"; echo; "$node" "$root/scripts/multicore/table.js" "$raw"; } > "$res/multicore.md"
rm -rf "$raw"
cat "$res/multicore.md"
