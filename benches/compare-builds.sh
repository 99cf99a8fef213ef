#!/usr/bin/env bash
# Two Oxcast builds under the same RTMP + HLS load, alternating rounds, CPU seconds each: tells two
# builds apart where a run against nginx-rtmp (compare-nginx.sh) is dominated by nginx's noise.
#
# Usage:
#   benches/compare-builds.sh OLD_OXCAST NEW_OXCAST
#   ROUNDS=4 ROUND_SECONDS=30 PUBLISHERS=16 benches/compare-builds.sh /tmp/a/release/oxcast target/release/oxcast
#
# Build each binary first (a worktree at the old commit, its own CARGO_TARGET_DIR). The load is
# `oxcast-load` (built here in release mode, CARGO_TARGET_DIR honoured) replaying the FLV that
# compare-nginx.sh makes and caches (run that once first). Each round starts a fresh server (temporary
# data dir, free loopback ports), creates PUBLISHERS streams without their archive output, runs
# the load with no readers, and prints the server's utime + stime over the load.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 2 ] || { echo "usage: $0 OLD_OXCAST NEW_OXCAST" >&2; exit 2; }
BUILDS=("$1" "$2")
ROUNDS=${ROUNDS:-4}
ROUND_SECONDS=${ROUND_SECONDS:-30}
PUBLISHERS=${PUBLISHERS:-16}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FLV=$ROOT/target/oxcast-bench/src-720p30-3M-10s.flv
[ -f "$FLV" ] || { echo "$FLV is missing: run benches/compare-nginx.sh once to make it" >&2; exit 2; }
(cd "$ROOT" && cargo build --release -q -p oxcast-load)
LOAD=$TARGET_DIR/release/oxcast-load
HZ=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

round() { # BINARY
    local bin=$1 work http rtmp pid auth api keys="" ids="" stream id c0 c1
    work=$(mktemp -d)
    http=$(free_port)
    rtmp=$(free_port)
    OXCAST__HTTP__LISTEN=127.0.0.1:$http OXCAST__RTMP__LISTEN=127.0.0.1:$rtmp \
    OXCAST__PUBLIC__HTTP_URL=http://127.0.0.1:$http OXCAST__PUBLIC__RTMP_URL=rtmp://127.0.0.1:$rtmp \
    OXCAST__STORAGE__DIR=$work/data OXCAST__LOG__FILTER=warn "$bin" >/dev/null 2>"$work/log" </dev/null &
    pid=$!
    for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$http/healthz" 2>/dev/null && break; sleep 0.1; done
    auth=$(cat "$work/data/api-credentials")
    api=http://127.0.0.1:$http/v2/video/local
    for _ in $(seq 1 "$PUBLISHERS"); do
        stream=$(curl -fsS -u "$auth" -H 'Content-Type: application/json' \
            -d '{"input":{"type":"rtmp"},"idle_timeout_sec":2}' "$api/live_streams")
        id=$(jq -r .data.id <<<"$stream")
        keys="$keys${keys:+,}$(jq -r .data.input.stream_key <<<"$stream")"
        ids="$ids${ids:+,}$id"
        for output in $(jq -r '.data.outputs[] | select(.type == "archive") | .id' <<<"$stream"); do
            curl -fsS -o /dev/null -u "$auth" -X DELETE "$api/live_streams/$id/outputs/$output"
        done
    done
    c0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    "$LOAD" --rtmp "rtmp://127.0.0.1:$rtmp/streams" --keys "$keys" --ids "$ids" --flv "$FLV" \
        --duration "$ROUND_SECONDS" --readers 0 \
        --hls-url-template "http://127.0.0.1:$http/local/video/live/live_stream_{id}_hls.m3u8" >"$work/load" 2>&1
    c1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    printf '%s\t%s\t%s\n' "$bin" "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')" \
        "$(grep -o 'errors: [0-9]*' "$work/load" | tail -1)"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}

printf 'build\tcpu_s\terrors\n'
for _ in $(seq 1 "$ROUNDS"); do
    for bin in "${BUILDS[@]}"; do
        round "$bin"
    done
done
