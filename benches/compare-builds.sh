#!/usr/bin/env bash
# Two Oxcast builds under the same RTMP + HLS load, alternating rounds, CPU seconds each: tells two
# builds apart where a run against nginx-rtmp (compare-nginx.sh) is dominated by nginx's noise.
#
# Usage:
#   benches/compare-builds.sh OLD_OXCAST NEW_OXCAST
#   ROUNDS=4 ROUND_SECONDS=30 PUBLISHERS=16 benches/compare-builds.sh /tmp/a/release/oxcast target/release/oxcast
#   DESTINATIONS=2 benches/compare-builds.sh OLD NEW   # every stream also relayed twice to a sink
#
# Build each binary first (a worktree at the old commit, its own CARGO_TARGET_DIR). The load is
# `oxcast-load` (built here in release mode, CARGO_TARGET_DIR honoured) replaying the FLV that
# compare-nginx.sh makes and caches (run that once first). Each round starts a fresh server (temporary
# data dir, free loopback ports), creates PUBLISHERS streams without their archive output, runs
# the load with no readers, and prints the server's utime + stime over the load. DESTINATIONS=N
# (0..8, default 0) gives every stream N simulcast outputs to a sink nginx-rtmp (lib.sh
# start_sink; its CPU is not counted) and prints how many relays the sink held mid-round.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
[ $# -eq 2 ] || die "usage: $0 OLD_OXCAST NEW_OXCAST"
BUILDS=("$1" "$2")
ROUNDS=${ROUNDS:-4}
ROUND_SECONDS=${ROUND_SECONDS:-30}
PUBLISHERS=${PUBLISHERS:-16}
DESTINATIONS=${DESTINATIONS:-0}
case "$DESTINATIONS" in [0-8]) ;; *) die "DESTINATIONS must be 0..8, not '$DESTINATIONS'" ;; esac
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FLV=$ROOT/target/oxcast-bench/src-720p30-3M-10s.flv
[ -f "$FLV" ] || die "$FLV is missing: run benches/compare-nginx.sh once to make it"
(cd "$ROOT" && cargo build --release -q -p oxcast-load)
LOAD=$TARGET_DIR/release/oxcast-load
SINK_PID=""
SINK_DIR=$(mktemp -d)
trap '[ -n "$SINK_PID" ] && kill -QUIT "$SINK_PID" 2>/dev/null; rm -rf "$SINK_DIR"' EXIT
if [ "$DESTINATIONS" -gt 0 ]; then start_sink "$SINK_DIR" "$DESTINATIONS"; fi

round() { # BINARY
    local bin=$1 work http rtmp pid auth api c0 c1 sink=-
    work=$(mktemp -d)
    http=$(free_port)
    rtmp=$(free_port)
    OXCAST__HTTP__LISTEN=127.0.0.1:$http OXCAST__RTMP__LISTEN=127.0.0.1:$rtmp \
    OXCAST__PUBLIC__HTTP_URL=http://127.0.0.1:$http OXCAST__PUBLIC__RTMP_URL=rtmp://127.0.0.1:$rtmp \
    OXCAST__STORAGE__DIR=$work/data OXCAST__LOG__FILTER=warn OXCAST__SIMULCAST__ALLOW_PRIVATE_DESTINATIONS=true \
        "$bin" >/dev/null 2>"$work/log" </dev/null &
    pid=$!
    wait_http "http://127.0.0.1:$http/healthz"
    auth=$(cat "$work/data/api-credentials")
    api=http://127.0.0.1:$http/v2/video/local
    ARCHIVE=off create_streams "$api" "$auth" "$PUBLISHERS"
    c0=$(cpu_ticks "$pid")
    local counter=""
    if [ "$DESTINATIONS" -gt 0 ]; then
        (sleep "$((ROUND_SECONDS / 2))"; sink_connections >"$work/sink") &
        counter=$!
    fi
    "$LOAD" --rtmp "rtmp://127.0.0.1:$rtmp/streams" --keys "$OX_KEYS" --ids "$OX_IDS" --flv "$FLV" \
        --duration "$ROUND_SECONDS" --readers 0 \
        --hls-url-template "http://127.0.0.1:$http/local/video/live/live_stream_{id}_hls.m3u8" >"$work/load" 2>&1
    c1=$(cpu_ticks "$pid")
    if [ -n "$counter" ]; then wait "$counter"; fi
    if [ -f "$work/sink" ]; then sink=$(cat "$work/sink"); fi
    printf '%s\t%s\t%s\t%s\n' "$bin" "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')" \
        "$(grep -o 'errors: [0-9]*' "$work/load" | tail -1)" "$sink"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}

printf 'build\tcpu_s\terrors\tsink\n'
for _ in $(seq 1 "$ROUNDS"); do
    for bin in "${BUILDS[@]}"; do
        round "$bin"
    done
done
