# What the bench scripts share (sourced, not run): loopback ports, waiting for a server, a
# process's CPU and memory, and Oxcast streams made through its admin API.

# Debian's libnginx-mod-rtmp.
NGINX_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so

die() { echo "${0##*/}: $*" >&2; exit 2; }

# A loopback port nothing listens on (checked with ss), from a range well away from the usual ones.
USED_PORTS=""
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 20000))
        case " $USED_PORTS " in *" $port "*) continue ;; esac
        if ! ss -Hltn "sport = :$port" | grep -q .; then
            USED_PORTS="$USED_PORTS $port"
            echo "$port"
            return
        fi
    done
}

wait_http() { # URL
    for _ in $(seq 1 200); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.05
    done
    die "$1 did not answer"
}

cpu_ticks() { # PIDs...: utime + stime, summed
    local total=0 pid stat rest
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat")
        rest=${stat##*) } # fields from 3 on; comm may contain spaces
        set -- $rest
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
status_kib() { # FIELD PIDs...: a /proc/PID/status field (VmRSS, VmHWM) in KiB, summed
    local field=$1 total=0 pid kib
    shift
    for pid in "$@"; do
        kib=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status")
        total=$((total + kib))
    done
    echo "$total"
}
rss_kib() { status_kib VmRSS "$@"; }
hwm_kib() { status_kib VmHWM "$@"; }
HZ=$(getconf CLK_TCK)

# Creates COUNT streams through the admin API at API with credentials AUTH, and sets OX_KEYS and
# OX_IDS (comma-separated, in order). ARCHIVE=off (the default) deletes each stream's default
# archive output; DESTINATIONS=N (default 0) gives each N simulcast outputs
# rtmp://127.0.0.1:$SINK_RTMP/relayD, keyed by the stream's id.
create_streams() { # API AUTH COUNT
    local api=$1 auth=$2 count=$3 stream id archive_outputs output d
    OX_KEYS=""
    OX_IDS=""
    for _ in $(seq 1 "$count"); do
        # A short idle timeout so a stream is idle again before its next round.
        stream=$(curl -fsS -u "$auth" -H 'Content-Type: application/json' \
            -d '{"input":{"type":"rtmp"},"idle_timeout_sec":2}' "$api/live_streams")
        id=$(jq -r .data.id <<<"$stream")
        OX_KEYS="$OX_KEYS${OX_KEYS:+,}$(jq -r .data.input.stream_key <<<"$stream")"
        OX_IDS="$OX_IDS${OX_IDS:+,}$id"
        # Every new stream records (its `default archive` output); ARCHIVE=off removes that
        # output, which is allowed while the stream is idle.
        archive_outputs=$(jq -r '.data.outputs[] | select(.type == "archive") | .id' <<<"$stream")
        [ -n "$archive_outputs" ] || die "stream $id has no archive output"
        if [ "${ARCHIVE:-off}" = off ]; then
            for output in $archive_outputs; do
                curl -fsS -o /dev/null -u "$auth" -X DELETE "$api/live_streams/$id/outputs/$output"
            done
        fi
        for d in $(seq 1 "${DESTINATIONS:-0}"); do
            curl -fsS -o /dev/null -u "$auth" -H 'Content-Type: application/json' \
                -d "{\"type\":\"simulcast\",\"uri\":\"rtmp://127.0.0.1:$SINK_RTMP/relay$d\",\"stream_key\":\"$id\"}" \
                "$api/live_streams/$id/outputs"
        done
    done
}

# Starts the sink, an nginx-rtmp that takes relays on applications relay1 .. relayCOUNT (`live on`,
# nothing recorded), in DIR; sets SINK_RTMP (its port) and SINK_PID. Stop it with kill -QUIT.
start_sink() { # DIR COUNT
    local dir=$1 count=$2 apps="" d
    SINK_RTMP=$(free_port)
    mkdir -p "$dir"
    chmod 0777 "$dir"
    for d in $(seq 1 "$count"); do
        apps="$apps  application relay$d { live on; record off; }
"
    done
    cat >"$dir/nginx.conf" <<EOF
load_module $NGINX_MODULE;
daemon off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/error.log warn;
events { worker_connections 1024; }
rtmp { server { listen 127.0.0.1:$SINK_RTMP; chunk_size 4096;
$apps} }
EOF
    nginx -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/stderr" </dev/null &
    SINK_PID=$!
    for _ in $(seq 1 100); do
        ss -Hltn "sport = :$SINK_RTMP" | grep -q . && break
        sleep 0.05
    done
    ss -Hltn "sport = :$SINK_RTMP" | grep -q . || die "sink nginx did not start: $(cat "$dir/error.log" "$dir/stderr" 2>/dev/null)"
}
# Relays the sink holds now.
sink_connections() { ss -Htn state established "sport = :$SINK_RTMP" | wc -l; }
