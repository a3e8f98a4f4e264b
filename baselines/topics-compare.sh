#!/usr/bin/env bash
# Compares the cost of topic pub/sub on shardcast `serve --topics` (default shard count, and
# --shards 1), Bun (baselines/bun-relay.js --topics) and native uWebSockets
# (baselines/uws/topics.cpp), driven by one external client, baselines/topics-load.c. Not part
# of CI; loopback only. It is CPU-heavy: on a shared machine run it alone, e.g.
#
#   flock /tmp/bench.lock baselines/topics-compare.sh
#   DEFLATE=1 flock /tmp/bench.lock baselines/topics-compare.sh    # plain vs permessage-deflate
#
# Each row of the table (CLIENTS:TOPICS:SUBS_PER_CLIENT:WINDOW) runs every server REPEATS times,
# the servers taking turns in an order rotated at each repeat, and reports medians:
# - deliveries/s: messages the subscribers received per second (median, and min-max);
# - server CPU µs per publication: the server's utime+stime (/proc/PID/stat, every thread) over
#   the measured window, per publication completed in it;
# - segments/delivery: the machine-wide TcpOutSegs delta over the window (/proc/net/snmp, the
#   counter `nstat TcpOutSegs` reads) per delivery: every TCP segment sent on the machine, both
#   directions (the client's ACKs and publications too, and anything else running);
# - server segs/delivery: the data segments the subscribers' sockets received (TCP_INFO
#   tcpi_data_segs_in, summed by the client), per delivery: what the server's writes cost;
# - B/connection: server VmRSS at the end of the window minus VmRSS before any client
#   connected, divided by the clients;
# - client CPU %: the load client's own CPU time over the window (100 % = one core; it is
#   single-threaded, and shares the machine's cores with the server);
# - wire B/delivery: the bytes of the frames that carried the window's deliveries, headers
#   included, per delivery; compressed: the deliveries that came compressed (RSV1), and their
#   share of all.
#
# permessage-deflate: with DEFLATE=1 every publication is a JSON document (topics-load -J, an
# order book of about PAYLOAD bytes, which zlib shrinks about 3x at 1 KiB) and each server runs
# twice per repeat, taking turns with the others: `plain`, its clients not offering deflate, and
# `deflate`, every client offering it as Chrome does and inflating what comes compressed
# (topics-load -z). The server is started the same way for both (shardcast with deflate on, its
# default; Bun with bun-relay.js --topics --deflate: perMessageDeflate and publish(...,
# compress = true)), so only the clients' offer differs. Native uWebSockets is left out: it is
# built here without zlib (baselines/uws/build.sh), so it cannot compress. PAYLOAD defaults to
# 1024, ROWS to 1000:1:1:16 (1,000 clients on one topic: a broadcast, window 16), SERVERS to
# `shardcast bun`. JSON=1 alone gives JSON documents without deflate.
#
# Settings (environment): REPEATS (3), DURATION (measured seconds, 10), WARMUP (1), PAYLOAD
# (BODY bytes, 16; at most 60000, under shardcast's default --max-message-size of 65536 and
# Bun's maxPayloadLength of 64 KiB, so the publisher's `pub T BODY` always fits), ROWS (default
# below), SERVERS (shardcast shardcast-1 bun uws), DEFLATE and JSON (above),
# SHARDCAST_BIN (default ${CARGO_TARGET_DIR:-target}/release/shardcast, built with
# `cargo build --release` if missing), BUN (baselines/node_modules/.bin/bun, installed with
# `npm ci --prefix baselines` if missing), UWS_BIN (baselines/uws/build/uws-topics, built with
# baselines/uws/build.sh if missing), KEEP (a directory to keep the logs and raw lines in).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

REPEATS=${REPEATS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
DEFLATE=${DEFLATE:-0}
JSON=${JSON:-$DEFLATE}
if [[ $DEFLATE == 1 ]]; then
    PAYLOAD=${PAYLOAD:-1024}
    ROWS=${ROWS:-"1000:1:1:16"}
    SERVERS=${SERVERS:-"shardcast bun"}
else
    PAYLOAD=${PAYLOAD:-16}
    ROWS=${ROWS:-"1000:100:1:256 1000:1000:10:256 10000:10000:2:1024 10000:10000:10:256"}
    SERVERS=${SERVERS:-"shardcast shardcast-1 bun uws"}
fi
SHARDCAST_BIN=${SHARDCAST_BIN:-${CARGO_TARGET_DIR:-target}/release/shardcast}
BUN=${BUN:-baselines/node_modules/.bin/bun}
UWS_BIN=${UWS_BIN:-baselines/uws/build/uws-topics}

if [[ -n ${KEEP:-} ]]; then
    mkdir -p "$KEEP"
    work=$KEEP
else
    work=$(mktemp -d /tmp/topics-compare.XXXXXX)
fi
server_pid=
client_pid=
cleanup() {
    # The client runs under `timeout`, in timeout's own process group.
    [[ -n $client_pid ]] && kill -KILL -- "-$client_pid" "$client_pid" 2>/dev/null || true
    [[ -n $server_pid ]] && kill -KILL "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ -z ${KEEP:-} ]] && rm -rf "$work"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

body_flags=()
[[ $JSON == 1 ]] && body_flags+=(-J)
# With DEFLATE=1, each server in two variants: NAME (plain) and NAME+z (deflate); uws cannot
# compress (no zlib in its build), so it is left out.
if [[ $DEFLATE == 1 ]]; then
    variants=
    for s in $SERVERS; do
        if [[ $s == uws ]]; then
            echo "DEFLATE=1: leaving out uws (native uWebSockets is built without zlib here)" >&2
            continue
        fi
        variants+=" $s $s+z"
    done
    SERVERS=${variants# }
fi

# What each server needs, built or installed if missing.
for s in $SERVERS; do
    case ${s%+z} in
    shardcast | shardcast-1)
        if [[ ! -x $SHARDCAST_BIN ]]; then
            echo "building shardcast: cargo build --release" >&2
            cargo build --release --locked >&2
        fi
        ;;
    bun) [[ -x $BUN ]] || npm ci --prefix baselines --no-audit --no-fund >&2 ;;
    uws) [[ -x $UWS_BIN ]] || baselines/uws/build.sh >&2 ;;
    *) echo "unknown server $s (shardcast, shardcast-1, bun, uws)" >&2; exit 2 ;;
    esac
done
gcc -O2 -o "$work/topics-load" baselines/topics-load.c -lz
client=$work/topics-load
shards_default=$(nproc)

label() {
    local mode=
    if [[ $DEFLATE == 1 ]]; then
        mode=", plain"
        [[ $1 == *+z ]] && mode=", deflate"
    fi
    case ${1%+z} in
    shardcast) echo "shardcast serve --topics ($shards_default shards)$mode" ;;
    shardcast-1) echo "shardcast serve --topics --shards 1$mode" ;;
    bun) echo "Bun $("$BUN" --version) (bun-relay.js --topics$([[ $DEFLATE == 1 ]] && echo ' --deflate'))$mode" ;;
    uws) echo "uWebSockets native (uws-topics)" ;;
    esac
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# Starts server $1 (NAME or, with DEFLATE=1, NAME+z: the same server); sets server_pid and
# server_port. shardcast accepts deflate by default; Bun needs --deflate.
start_server() {
    local log=$work/server-$1.log
    local bun_deflate=()
    [[ $DEFLATE == 1 ]] && bun_deflate=(--deflate)
    case ${1%+z} in
    shardcast) "$SHARDCAST_BIN" serve --topics --addr 127.0.0.1:0 >"$log" 2>&1 & ;;
    shardcast-1) "$SHARDCAST_BIN" serve --topics --shards 1 --addr 127.0.0.1:0 >"$log" 2>&1 & ;;
    bun) PORT=0 "$BUN" baselines/bun-relay.js --topics "${bun_deflate[@]}" >"$log" 2>&1 & ;;
    uws) "$UWS_BIN" 0 >"$log" 2>&1 & ;;
    esac
    server_pid=$!
    server_port=
    for _ in $(seq 100); do
        # shardcast: `serving on ws://127.0.0.1:PORT/`; Bun: `ws://127.0.0.1:PORT/`;
        # uws-topics: `listening on PORT`.
        server_port=$(sed -nE 's#.*ws://127\.0\.0\.1:([0-9]+)/.*#\1#p; s#^listening on ([0-9]+)$#\1#p' "$log" | head -1)
        [[ -n $server_port ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $1 did not start:" >&2
    cat "$log" >&2
    exit 1
}

stop_server() {
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# field NAME LINE: the value of NAME=... in LINE.
field() { sed -nE "s/.*(^| )$1=([^ ]*).*/\2/p" <<<"$2"; }

# median of the arguments (the mean of the two middle ones for an even count); "-" if none.
median() {
    [[ $# -eq 0 ]] && { echo -; return; }
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
minmax() {
    [[ $# -eq 0 ]] && { echo -; return; }
    printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f", lo, hi }'
}

raw=$work/runs.txt
: >"$raw"
echo "# topics pub/sub: $(nproc) CPUs, payload $PAYLOAD bytes$([[ $JSON == 1 ]] && echo ' (JSON, topics-load -J)')$([[ $DEFLATE == 1 ]] && echo ', plain and permessage-deflate (topics-load -z)'), $WARMUP s warmup + $DURATION s measured, $REPEATS repeats, medians; $(date -u +%FT%TZ)"
echo "# shardcast: $SHARDCAST_BIN ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'))"

read -r -a servers <<<"$SERVERS"
n=${#servers[@]}
for row in $ROWS; do
    IFS=: read -r C K S W <<<"$row"
    declare -A dps=() cpu=() segs=() ssegs=() mem=() ccpu=() wire=() comp=() share=() fails=()
    for r in $(seq 0 $((REPEATS - 1))); do
        for k in $(seq 0 $((n - 1))); do
            s=${servers[$(((k + r) % n))]}
            start_server "$s"
            sleep 0.5
            base_kb=$(rss_kb "$server_pid")
            out=$work/client.out
            zflag=()
            [[ $s == *+z ]] && zflag=(-z)
            timeout -k 5 $((${DURATION%.*} + ${WARMUP%.*} + 200)) "$client" -h 127.0.0.1 -p "$server_port" \
                -c "$C" -k "$K" -s "$S" -w "$W" -b "$PAYLOAD" -d "$DURATION" -u "$WARMUP" -P "$server_pid" -q \
                "${body_flags[@]}" "${zflag[@]}" >"$out" 2>"$work/client.err" &
            client_pid=$!
            rc=0
            wait "$client_pid" || rc=$?
            client_pid=
            line=$(grep '^deliveries=' "$out" || true)
            stop_server
            echo "row=$row server=$s repeat=$r rc=$rc base_rss_kb=$base_kb $line" | tee -a "$raw" >&2
            if [[ $rc -ne 0 || -z $line ]]; then
                fails[$s]=$((${fails[$s]:-0} + 1))
                sed 's/^/    /' "$work/client.err" | head -5 >&2
                continue
            fi
            rss_end=$(field server_rss_kb "$line")
            dps[$s]+=" $(field deliveries_per_s "$line")"
            cpu[$s]+=" $(field server_cpu_us_per_pub "$line")"
            segs[$s]+=" $(field segs_per_delivery "$line")"
            ssegs[$s]+=" $(field server_segs_per_delivery "$line")"
            mem[$s]+=" $(((rss_end - base_kb) * 1024 / C))"
            ccpu[$s]+=" $(field client_cpu_pct "$line")"
            wire[$s]+=" $(field wire_bytes_per_delivery "$line")"
            comp[$s]+=" $(field compressed "$line")"
            share[$s]+=" $(awk -v z="$(field compressed "$line")" -v d="$(field deliveries "$line")" 'BEGIN { print (d > 0 ? 100 * z / d : 0) }')"
            sleep 1
        done
    done
    subs=$((C * S / K))
    echo
    echo "### $C clients, $K topics, $S subscriptions per client (~$subs subscribers per topic), window $W"
    echo
    echo "| server | deliveries/s median (min-max) | server CPU µs/publication | segments/delivery (machine-wide) | server data segs/delivery | B/connection | client CPU % | wire B/delivery | compressed deliveries (share) | failed runs |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for s in "${servers[@]}"; do
        # shellcheck disable=SC2086
        printf '| %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s (%s) | %s |\n' "$(label "$s")" \
            "$(median ${dps[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.0f"), $1 }')" "$(minmax ${dps[$s]:-})" \
            "$(median ${cpu[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.2f"), $1 }')" \
            "$(median ${segs[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.3f"), $1 }')" \
            "$(median ${ssegs[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.3f"), $1 }')" \
            "$(median ${mem[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.0f"), $1 }')" \
            "$(median ${ccpu[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.0f"), $1 }')" \
            "$(median ${wire[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.1f"), $1 }')" \
            "$(median ${comp[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.0f"), $1 }')" \
            "$(median ${share[$s]:-} | awk '{ printf ($1 == "-" ? "-" : "%.1f %%"), $1 }')" \
            "${fails[$s]:-0}/$REPEATS"
    done
    unset dps cpu segs ssegs mem ccpu wire comp share fails
done
echo
echo "Raw runs (the client's line; base_rss_kb: the server's VmRSS before clients connected):"
echo
echo '```text'
cat "$raw"
echo '```'
