#!/usr/bin/env bash
# Oxcast against nginx-rtmp under the same RTMP + HLS load, in one run on one machine.
#
# Usage:
#   benches/compare-nginx.sh          # 16 publishers; with 16 readers, then with none; 2 rounds each
#   PUBLISHERS=4 READERS=0 ROUND_SECONDS=20 ROUNDS=1 benches/compare-nginx.sh
#   READERS=0 ARCHIVE=on benches/compare-nginx.sh   # both servers also record every stream
#   READERS=0 DESTINATIONS=2 benches/compare-nginx.sh   # both servers also relay every stream twice
#
# What it does:
#   1. Builds `oxcast` and `oxcast-load` in release mode (CARGO_TARGET_DIR is honoured; default
#      ./target).
#   2. Makes, once, a 10 s 1280x720 30 fps H.264 (keyframe every 2 s, ~2.9 Mbit/s) + AAC 128k FLV
#      with ffmpeg, cached as target/oxcast-bench/src-720p30-3M-10s.flv.
#   3. Starts Oxcast (temporary data dir, free loopback ports, OXCAST__* variables; relays may reach
#      loopback, where the sink is) and creates
#      PUBLISHERS streams through its admin API; starts nginx-rtmp (`hls on`, hls_fragment 2s,
#      hls_playlist_length 12s = Oxcast's 6 x 2 s window) with an nginx `http` server on the HLS
#      directory so readers follow it too. Recording follows ARCHIVE: `off` (the default) deletes
#      the `archive` output every new Oxcast stream gets and gives nginx `record off`, so both
#      only package HLS; `on` keeps the archive output (fragmented MP4, synced every ~1 s,
#      finalized into an MP4 when the stream goes idle) and gives nginx `record all; record_unique
#      on;` (one FLV per publish). With ARCHIVE=on an Oxcast round ends once its recordings are
#      finalized (no `.mp4.part` left; a few seconds after the load, idle_timeout_sec is 2), so
#      finalizing is counted in Oxcast's CPU; nginx's FLV is complete when the publisher leaves.
#      DESTINATIONS=N (> 0) also starts a third nginx-rtmp, the sink (applications relay1 ..
#      relayN, `live on; record off;`, no HLS; its CPU is counted for neither server), gives every
#      Oxcast stream N simulcast outputs rtmp://127.0.0.1:SINK/relayD with the stream's id as key,
#      and gives nginx-rtmp under test `push rtmp://127.0.0.1:SINK/relayD;` for D in 1..N (each
#      published stream pushed under its own name). Mid-round the script counts the sink's
#      established connections (expected PUBLISHERS x N) and prints it.
#   4. Runs the same load (`oxcast-load`: PUBLISHERS real-time publishers replaying the file,
#      READERS HLS readers polling each playlist every POLL_MS ms and fetching every new segment)
#      against each server in alternating rounds, Oxcast first: A B A B for ROUNDS=2. READERS may
#      list several counts ("16 0", the default): one such phase per count, so the cost of ingest
#      and packaging alone is measured too, without the HTTP polling.
#   5. Measures each server's CPU seconds over each round (utime + stime from /proc/PID/stat; for
#      nginx the master and its worker summed) and its RSS (VmRSS; nginx summed), and prints a table,
#      the CPU ratio, the harness's own report (errors, segment latency p50/p99) and a JSON summary.
#
# Settings (environment): PUBLISHERS (16), READERS ("16 0"), POLL_MS (2), ROUND_SECONDS (45),
# ROUNDS (2), PAUSE_SECONDS between rounds (5), ARCHIVE (off; on = both servers record, see 3.),
# DESTINATIONS (0; 0..8 = simulcast outputs / nginx `push` targets per stream, see 3.),
# KEEP=1 keeps the work directory.
# Needs: cargo, ffmpeg, nginx with libnginx-mod-rtmp (Debian: `apt-get install ffmpeg nginx
# libnginx-mod-rtmp`), curl, jq. Loopback only. Exits non-zero if a round reports errors.
# Takes about phases * ROUNDS * 2 * (ROUND_SECONDS + PAUSE_SECONDS + ~1) s after the build: ~7 min by
# default.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PUBLISHERS=${PUBLISHERS:-16}
READERS=${READERS:-16 0}
POLL_MS=${POLL_MS:-2}
ROUND_SECONDS=${ROUND_SECONDS:-45}
ROUNDS=${ROUNDS:-2}
PAUSE_SECONDS=${PAUSE_SECONDS:-5}
ARCHIVE=${ARCHIVE:-off}
DESTINATIONS=${DESTINATIONS:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
for tool in cargo ffmpeg nginx curl jq; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install ffmpeg nginx libnginx-mod-rtmp curl jq)"
done
case "$ARCHIVE" in on | off) ;; *) die "ARCHIVE must be on or off, not '$ARCHIVE'" ;; esac
case "$DESTINATIONS" in [0-8]) ;; *) die "DESTINATIONS must be 0..8, not '$DESTINATIONS'" ;; esac
[ -f "$NGINX_MODULE" ] || die "$NGINX_MODULE missing (Debian: apt-get install libnginx-mod-rtmp)"

echo "== building release binaries (target dir $TARGET_DIR)"
(cd "$ROOT" && cargo build --release --quiet -p oxcast -p oxcast-load)
OXCAST=$TARGET_DIR/release/oxcast
LOAD=$TARGET_DIR/release/oxcast-load

FLV=$ROOT/target/oxcast-bench/src-720p30-3M-10s.flv
if [ ! -s "$FLV" ]; then
    echo "== encoding $FLV (once)"
    mkdir -p "$(dirname "$FLV")"
    ffmpeg -v error -nostdin -y \
        -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=1000:sample_rate=48000 -t 10 \
        -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 \
        -b:v 2900k -maxrate 3000k -bufsize 3000k \
        -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$FLV.part"
    mv "$FLV.part" "$FLV"
fi

WORK=$(mktemp -d /tmp/oxcast-compare.XXXXXX)
chmod 0755 "$WORK"
OX_PID=""
NGX_PID=""
SINK_PID=""
cleanup() {
    [ -n "$OX_PID" ] && kill -TERM "$OX_PID" 2>/dev/null && wait "$OX_PID" 2>/dev/null
    [ -n "$NGX_PID" ] && kill -QUIT "$NGX_PID" 2>/dev/null && wait "$NGX_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill -QUIT "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT


# ---- the sink: a third nginx-rtmp that receives the relays (DESTINATIONS > 0); its CPU is not
# counted for either server.
SINK_RTMP=""
if [ "$DESTINATIONS" -gt 0 ]; then start_sink "$WORK/sink" "$DESTINATIONS"; fi

# ---- Oxcast
OX_HTTP=$(free_port)
OX_RTMP=$(free_port)
mkdir -p "$WORK/oxcast"
OXCAST__HTTP__LISTEN=127.0.0.1:$OX_HTTP OXCAST__RTMP__LISTEN=127.0.0.1:$OX_RTMP \
OXCAST__PUBLIC__HTTP_URL=http://127.0.0.1:$OX_HTTP OXCAST__PUBLIC__RTMP_URL=rtmp://127.0.0.1:$OX_RTMP \
OXCAST__STORAGE__DIR=$WORK/oxcast/data OXCAST__LOG__FILTER=warn \
OXCAST__SIMULCAST__ALLOW_PRIVATE_DESTINATIONS=true \
    "$OXCAST" >"$WORK/oxcast/stdout" 2>"$WORK/oxcast/log" </dev/null &
OX_PID=$!
wait_http "http://127.0.0.1:$OX_HTTP/healthz"
AUTH=$(cat "$WORK/oxcast/data/api-credentials")
API=http://127.0.0.1:$OX_HTTP/v2/video/local
create_streams "$API" "$AUTH" "$PUBLISHERS"
OX_ARCHIVE_PARTS=$WORK/oxcast/data/archive/recording
OX_ARGS=(--rtmp "rtmp://127.0.0.1:$OX_RTMP/streams" --keys "$OX_KEYS" --ids "$OX_IDS"
    --hls-url-template "http://127.0.0.1:$OX_HTTP/local/video/live/live_stream_{id}_hls.m3u8")

# ---- nginx-rtmp
NGX_RTMP=$(free_port)
NGX_HTTP=$(free_port)
NGX=$WORK/nginx
mkdir -p "$NGX/hls" "$NGX/rec"
chmod 0777 "$NGX" "$NGX/hls" "$NGX/rec" # the worker runs as nobody
if [ "$ARCHIVE" = on ]; then
    NGX_RECORD="record all; record_path $NGX/rec; record_unique on;"
else
    NGX_RECORD="record off;"
fi
NGX_PUSH=""
for d in $(seq 1 "$DESTINATIONS"); do
    NGX_PUSH="$NGX_PUSH push rtmp://127.0.0.1:$SINK_RTMP/relay$d;"
done
cat >"$NGX/nginx.conf" <<EOF
load_module $NGINX_MODULE;
daemon off; worker_processes 1; pid $NGX/nginx.pid; error_log $NGX/error.log warn;
events { worker_connections 1024; }
rtmp { server { listen 127.0.0.1:$NGX_RTMP; chunk_size 4096;
  application streams { live on; $NGX_RECORD$NGX_PUSH
    hls on; hls_path $NGX/hls; hls_fragment 2s; hls_playlist_length 12s; } } }
http {
  access_log off;
  # Readers keep one connection each, as they do with Oxcast.
  keepalive_requests 1000000; keepalive_timeout 75s;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server { listen 127.0.0.1:$NGX_HTTP;
    # Readers poll before the first segment exists: no error-log line per 404.
    location /hls/ { root $NGX; log_not_found off; add_header Cache-Control no-cache; } } }
EOF
nginx -p "$NGX" -c "$NGX/nginx.conf" 2>>"$NGX/stderr" </dev/null &
NGX_PID=$!
# The master's children: its worker (and a cache manager, idle here). CPU counts them all; RSS
# counts the master and the worker (what holds the streams).
NGX_WORKERS=""
for _ in $(seq 1 100); do
    NGX_CHILDREN=$(pgrep -P "$NGX_PID" | tr '\n' ' ' || true)
    for pid in $NGX_CHILDREN; do
        grep -q 'worker process' "/proc/$pid/cmdline" 2>/dev/null && NGX_WORKERS="$NGX_WORKERS $pid"
    done
    [ -n "$NGX_WORKERS" ] && break
    sleep 0.05
done
NGX_WORKERS=${NGX_WORKERS# }
[ -n "$NGX_WORKERS" ] || die "nginx did not start: $(cat "$NGX/error.log" "$NGX/stderr" 2>/dev/null)"
for _ in $(seq 1 100); do
    ss -Hltn "sport = :$NGX_RTMP" | grep -q . && ss -Hltn "sport = :$NGX_HTTP" | grep -q . && break
    sleep 0.05
done
NGX_ARGS=(--rtmp "rtmp://127.0.0.1:$NGX_RTMP/streams" --key-prefix k --publishers "$PUBLISHERS"
    --hls-url-template "http://127.0.0.1:$NGX_HTTP/hls/{key}.m3u8")

echo "== Oxcast pid $OX_PID (rtmp $OX_RTMP, http $OX_HTTP); nginx master $NGX_PID, children $NGX_CHILDREN(worker $NGX_WORKERS) (rtmp $NGX_RTMP, http $NGX_HTTP)"
echo "== load: $PUBLISHERS publishers of $FLV, $READERS readers polling every $POLL_MS ms, $ROUNDS x 2 rounds of ${ROUND_SECONDS} s, archive $ARCHIVE, $DESTINATIONS destinations${SINK_RTMP:+ (sink nginx pid $SINK_PID, rtmp $SINK_RTMP)}"
OX_RSS0=$(rss_kib "$OX_PID")
NGX_RSS0=$(rss_kib "$NGX_PID" $NGX_WORKERS)

RESULTS=$WORK/results.tsv
: >"$RESULTS"
failed=0
round() { # NAME ROUND READERS
    local name=$1 n=$2 readers=$3
    local pids rss_pids args json t0 t1 c0 c1 cpu rss status=0
    if [ "$name" = oxcast ]; then
        args=("${OX_ARGS[@]}"); pids=("$OX_PID"); rss_pids=("$OX_PID")
    else
        args=("${NGX_ARGS[@]}"); pids=("$NGX_PID" $NGX_CHILDREN); rss_pids=("$NGX_PID" $NGX_WORKERS)
    fi
    json=$WORK/$name-$readers-$n.json
    c0=$(cpu_ticks "${pids[@]}")
    t0=$(date +%s.%N)
    local sink_count=-
    if [ "$DESTINATIONS" -gt 0 ]; then
        # Half-way through the round, count the relays the sink holds (PUBLISHERS x DESTINATIONS).
        (sleep "$(awk -v s="$ROUND_SECONDS" 'BEGIN { print s / 2 }')"; sink_connections >"$WORK/sink-$name-$readers-$n") &
    fi
    "$LOAD" "${args[@]}" --flv "$FLV" --duration "$ROUND_SECONDS" --readers "$readers" \
        --poll-ms "$POLL_MS" --label "$name round $n" --json "$json" | sed "s/^/  [$name $n] /" || status=$?
    if [ "$DESTINATIONS" -gt 0 ]; then
        wait $! 2>/dev/null || true
        sink_count=$(cat "$WORK/sink-$name-$readers-$n" 2>/dev/null || echo 0)
        echo "  [$name $n] sink connections mid-round: $sink_count (expected $((PUBLISHERS * DESTINATIONS)))"
        [ "$sink_count" -ge $((PUBLISHERS * DESTINATIONS)) ] || { failed=1; echo "  [$name $n] the sink received fewer relays than expected"; }
    fi
    if [ "$name" = oxcast ] && [ "$ARCHIVE" = on ]; then
        # The round ends when the recordings are finalized (the streams go idle after 2 s).
        local tl cl waited=0
        tl=$(date +%s.%N)
        cl=$(cpu_ticks "${pids[@]}")
        while compgen -G "$OX_ARCHIVE_PARTS/*.mp4.part" >/dev/null; do
            if [ "$waited" -ge 600 ]; then
                failed=1; echo "  [$name $n] recordings not finalized 60 s after the load"; break
            fi
            sleep 0.1; waited=$((waited + 1))
        done
        echo "  [$name $n] recordings finalized $(awk -v a="$tl" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s after the load ended; Oxcast CPU in that time $(awk -v a="$cl" -v b="$(cpu_ticks "${pids[@]}")" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }') s"
    fi
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "${pids[@]}")
    rss=$(rss_kib "${rss_pids[@]}")
    cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
    [ "$status" = 0 ] || { failed=1; echo "  [$name $n] oxcast-load exited $status"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$readers" "$name" "$n" "$cpu" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" "$rss" \
        "$(jq -r '.latency_ms.p50 // "-"' "$json" 2>/dev/null || echo -)" \
        "$(jq -r '.latency_ms.p99 // "-"' "$json" 2>/dev/null || echo -)" \
        "$(jq -r '.errors // "-"' "$json" 2>/dev/null || echo -)" "$sink_count" >>"$RESULTS"
}

for readers in $READERS; do
    echo "== phase: $readers readers"
    for n in $(seq 1 "$ROUNDS"); do
        round oxcast "$n" "$readers"
        sleep "$PAUSE_SECONDS"
        round nginx "$n" "$readers"
        sleep "$PAUSE_SECONDS"
    done
done

BITRATE=$(jq -r '.source.bitrate_bps / 1e6 | . * 100 | round / 100' "$(ls "$WORK"/oxcast-*-1.json | head -1)")
echo
echo "== results: $PUBLISHERS publishers x $BITRATE Mbit/s, readers polling every $POLL_MS ms, ${ROUND_SECONDS} s rounds, $(nproc) CPUs, archive $ARCHIVE, $DESTINATIONS destinations"
printf '%7s %-7s %5s %5s %8s %8s %9s %9s %9s %6s %6s\n' readers server round dests cpu_s wall_s rss_MiB p50_ms p99_ms errors sink
while IFS=$'\t' read -r readers name n cpu wall rss p50 p99 errors sink; do
    printf '%7s %-7s %5s %5s %8s %8s %9.1f %9s %9s %6s %6s\n' "$readers" "$name" "$n" "$DESTINATIONS" "$cpu" "$wall" \
        "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$p50" "$p99" "$errors" "$sink"
done <"$RESULTS"
echo
for readers in $READERS; do
    OX_CPU=$(awk -F'\t' -v r="$readers" '$1 == r && $2 == "oxcast" { s += $4 } END { printf "%.2f", s }' "$RESULTS")
    NGX_CPU=$(awk -F'\t' -v r="$readers" '$1 == r && $2 == "nginx" { s += $4 } END { printf "%.2f", s }' "$RESULTS")
    echo "$readers readers, archive $ARCHIVE, $DESTINATIONS destinations: CPU seconds over all rounds: oxcast $OX_CPU, nginx-rtmp $NGX_CPU; ratio oxcast/nginx = $(awk -v a="$OX_CPU" -v b="$NGX_CPU" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')"
done
echo "RSS before the first round: oxcast $((OX_RSS0 / 1024)) MiB, nginx $((NGX_RSS0 / 1024)) MiB; peak (VmHWM): oxcast $(( $(hwm_kib "$OX_PID") / 1024 )) MiB, nginx $(( $(hwm_kib "$NGX_PID" $NGX_WORKERS) / 1024 )) MiB"
if [ "$ARCHIVE" = on ]; then
    files() { # DIR NAME-PATTERN: "count, MiB" of the files under DIR
        find "$1" -type f -name "$2" -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d files, %.1f MiB", n, s / 1048576 }'
    }
    echo "Recordings: oxcast finalized $(files "$WORK/oxcast/data/archive" '*.mp4'), unfinished $(files "$OX_ARCHIVE_PARTS" '*.mp4.part'); nginx $(files "$NGX/rec" '*')"
fi
if grep -qiE 'error|panic' "$WORK/oxcast/log"; then
    echo "Oxcast logged errors:"; grep -iE 'error|panic' "$WORK/oxcast/log" | head -5
fi
exit "$failed"
