#!/usr/bin/env bash
# Compare the one-way packet rate of two built checkouts, alternating runs so
# that a noisy machine hurts both alike. Each run: a pair switch from SWITCH's
# checkout, a sink then a generator (64 B, 5 s, no verification) from VM's
# checkout; prints the generator's Mpps. Build each checkout first (npm ci).
#
#   scripts/compare-builds.sh OLD_DIR NEW_DIR [runs] [zc|copy]
#     runs "old" (switch and VMs of OLD_DIR) and "new" (of NEW_DIR) alternately
#   SWITCH=DIR VM=DIR scripts/compare-builds.sh --one [zc|copy]
#     one run with the switch of one checkout and the VMs of another
set -euo pipefail

one() { # switch_root vm_root mode
  local sw=$1 vmr=$2 mode=${3:-zc} d extra=()
  d=$(mktemp -d /tmp/zcs-cmp-XXXXXX)
  trap 'rm -rf "$d"' RETURN
  printf '{"socketDir":"%s","sharedBuffers":{"bufCount":4096,"bufSize":128},"ports":[{"name":"a"},{"name":"b"}],"pairs":[["a","b"]]}\n' "$d" > "$d/c.json"
  [ "$mode" = copy ] && extra=(--copy)
  node "$sw/dist/src/cli/main.js" start -c "$d/c.json" --log-level warn > "$d/switch.log" 2>&1 &
  local swpid=$!
  sleep 0.7
  node "$vmr/dist/src/cli/main.js" vm --socket-dir "$d" --port b --mode sink --duration 7 --json --quiet --no-verify "${extra[@]}" > "$d/sink.json" &
  local sink=$!
  sleep 0.5
  node "$vmr/dist/src/cli/main.js" vm --socket-dir "$d" --port a --mode gen --size 64 --duration 5 --json --quiet --no-verify "${extra[@]}" > "$d/gen.json"
  wait "$sink" || true
  kill "$swpid"; wait "$swpid" 2>/dev/null || true
  node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").pop(); console.log((JSON.parse(l).txPps/1e6).toFixed(2))' "$d/gen.json"
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
