#!/usr/bin/env bash
# Compare two built checkouts, alternating runs so that a noisy machine hurts
# both alike. Each run: a pair switch from SWITCH's checkout, a receiver then
# a generator (64 B, 5 s, no verification) from VM's checkout; prints the
# frames the switch moved per second and its busy time per packet (both
# from `zcswitch stats` read 2 s and 4 s into the run: frames both ports
# moved, busy seconds), so both ways counts both directions. Build each
# checkout first (npm ci).
#
#   scripts/compare-builds.sh OLD_DIR NEW_DIR [runs] [zc|copy|bidir]
#     runs "old" (switch and VMs of OLD_DIR) and "new" (of NEW_DIR) alternately
#   SWITCH=DIR VM=DIR scripts/compare-builds.sh --one [zc|copy|bidir]
#     one run with the switch of one checkout and the VMs of another
#   PIN=1: the switch on CPU 0, both VMs on CPU 1 (taskset), as bench --pin
set -euo pipefail

on() { # cpu command...: the command on that CPU when PIN is set
  local cpu=$1; shift
  if [ -n "${PIN:-}" ]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

one() { # switch_root vm_root mode
  local sw=$1 vmr=$2 mode=${3:-zc} d extra=() rx=sink
  d=$(mktemp -d /tmp/zcs-cmp-XXXXXX)
  trap 'rm -rf "$d"' RETURN
  printf '{"socketDir":"%s","controlSocket":"%s/ctl","sharedBuffers":{"bufCount":4096,"bufSize":128},"ports":[{"name":"a"},{"name":"b"}],"pairs":[["a","b"]]}\n' "$d" "$d" > "$d/c.json"
  [ "$mode" = copy ] && extra=(--copy)
  [ "$mode" = bidir ] && rx=echo
  local cli="$sw/dist/src/cli/main.js" vm="$vmr/dist/src/cli/main.js"
  on 0 node "$cli" start -c "$d/c.json" --log-level warn > "$d/switch.log" 2>&1 &
  local swpid=$!
  sleep 0.7
  on 1 node "$vm" vm --socket-dir "$d" --port b --mode "$rx" --duration 7 --json --quiet --no-verify "${extra[@]}" > "$d/rx.json" &
  local rxpid=$!
  sleep 0.5
  on 1 node "$vm" vm --socket-dir "$d" --port a --mode gen --size 64 --duration 5 --json --quiet --no-verify "${extra[@]}" > "$d/gen.json" &
  local gen=$!
  sleep 2
  node "$cli" stats --control "$d/ctl" --json > "$d/s1.json"
  date +%s.%N > "$d/t1"
  sleep 2
  node "$cli" stats --control "$d/ctl" --json > "$d/s2.json"
  date +%s.%N > "$d/t2"
  wait "$gen"
  wait "$rxpid" || true
  kill "$swpid"; wait "$swpid" 2>/dev/null || true
  node -e '
    const fs = require("fs"); const d = process.argv[1];
    const read = (f) => fs.readFileSync(`${d}/${f}`, "utf8");
    const s1 = JSON.parse(read("s1.json")), s2 = JSON.parse(read("s2.json"));
    const moved = (s) => s.ports.reduce((n, p) => n + p.counters.zeroCopy + p.counters.copied, 0);
    const frames = Math.max(1, moved(s2) - moved(s1));
    const busy = (s2.dataPath.busySec - s1.dataPath.busySec) * 1e9 / frames;
    console.log(`${(frames / (+read("t2") - +read("t1")) / 1e6).toFixed(2)} Mpps, switch busy ${busy.toFixed(1)} ns/pkt`);
  ' "$d"
}

if [ "${1:-}" = --one ]; then
  one "${SWITCH:?set SWITCH=checkout}" "${VM:?set VM=checkout}" "${2:-zc}"
  exit
fi
old=${1:?old checkout}; new=${2:?new checkout}; runs=${3:-4}; mode=${4:-zc}
for i in $(seq "$runs"); do
  echo "old $(one "$old" "$old" "$mode")"
  echo "new $(one "$new" "$new" "$mode")"
done
