#!/usr/bin/env bash
# Measures how long akstore takes to become ready after a SIGKILL, on a file of many clusters.
#
# It builds the release binary, starts it on a temporary file and 127.0.0.1, creates CLUSTERS
# clusters (default 100000) of 3 pools with parallel curl PUTs, keeps writing while it sends
# SIGKILL, then restarts the server three times (each killed again once ready) and once after
# a clean stop, and prints the time from start to `/readyz` answering 200 and the
# `database opened` log's elapsed_ms. Last it runs `akstore check` on the file.
# Usage: scripts/recovery.sh [CLUSTERS]. Needs curl 7.66 or newer (for --parallel).
# About 30 seconds for 100000 clusters on a 2-core machine, plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."

clusters="${1:-100000}"
port=18555
subscription=00000000-0000-0000-0000-0000000000aa
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p akstore
binary="$target_dir/release/akstore"

dir="$(mktemp -d)"
trap 'kill -KILL "$(cat "$dir/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
data="$dir/recovery.redb"
body='{"location":"westeurope","properties":{"kubernetesVersion":"1.33","agentPoolProfiles":[
{"name":"np1","count":3,"vmSize":"Standard_D2s_v3"},
{"name":"np2","count":3,"vmSize":"Standard_D2s_v3"},
{"name":"np3","count":3,"vmSize":"Standard_D2s_v3"}]}}'

start() {
    RUST_LOG=info "$binary" serve --data "$data" --listen "127.0.0.1:$port" 2>"$dir/log.$1" &
    echo $! >"$dir/pid"
}

# Prints the milliseconds until /readyz answers 200.
ready_ms() {
    local started
    started=$(date +%s%N)
    until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do sleep 0.005; done
    echo $((($(date +%s%N) - started) / 1000000))
}

put_clusters() {
    local group=$1 count=$2 parallel=$3
    curl -s --no-progress-meter -Z --parallel-max "$parallel" -o /dev/null -X PUT \
        -H 'Content-Type: application/json' -d "$body" \
        "http://127.0.0.1:$port/subscriptions/$subscription/resourceGroups/$group/providers/Microsoft.ContainerService/managedClusters/c[1-$count]?api-version=2026-08-01"
}

stop_server() {
    kill "-$1" "$(cat "$dir/pid")"
    wait "$(cat "$dir/pid")" 2>/dev/null || true
}

start fill
ready_ms >/dev/null
started=$(date +%s)
put_clusters fill "$clusters" 32
echo "created $clusters clusters in $(($(date +%s) - started)) s"

# Keep writing while the kill lands, so the file is left mid-commit.
(put_clusters during-kill 100000 8 || true) &
writer=$!
sleep 1
stop_server KILL
wait "$writer" 2>/dev/null || true
echo "file: $(stat -c %s "$data") bytes"

for attempt in 1 2 3; do
    start "crash$attempt"
    ms=$(ready_ms)
    opened=$(grep -o 'database opened.*' "$dir/log.crash$attempt" | grep -o 'elapsed_ms=[0-9]*')
    echo "restart after SIGKILL $attempt: ready in $ms ms ($opened)"
    stop_server KILL
done

start clean
ready_ms >/dev/null
stop_server TERM
start clean2
ms=$(ready_ms)
opened=$(grep -o 'database opened.*' "$dir/log.clean2" | grep -o 'elapsed_ms=[0-9]*')
echo "restart after a clean stop: ready in $ms ms ($opened)"
stop_server TERM

"$binary" check --data "$data"
