#!/usr/bin/env bash
# Load harness: vigil against a bare hyper server (benches/bare_hyper.rs) with wrk, over loopback.
#
# For each concurrency (1, 8, 64) it warms up, then runs wrk for $DURATION against
#   - the gateway: POST /v2/models/iris/versions/1/infer with a single-row v2 JSON body, and
#   - the bare hyper server: the same request, answered with a fixed body of the same size,
# and prints requests/s and p50/p99 latency of both, their ratio and the p50 difference.
#
# Environment:
#   DURATION       measured run per server and concurrency (wrk syntax)   [default: 10s]
#   WARMUP         warm-up run before each measured run                   [default: 2s]
#   CONCURRENCY    space-separated connection counts                      [default: "1 8 64"]
#   READY_TIMEOUT  seconds to wait for each server to answer              [default: 60]
#
# Exit status: 0 when every run completed, whether or not the targets are met (they are
# informational); non-zero when a server does not start, wrk fails, or wrk reports non-2xx
# responses.
#
# Usage: bash benches/load.sh        (from anywhere; it works in the repository root)

set -euo pipefail

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-1 8 64}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
MAX_THREADS=2 # the reference machine has 2 cores, shared by wrk and the server under test

# Targets (informational).
TARGET_RATIO_PCT=60 # gateway req/s at c=64 at least this % of bare hyper
TARGET_P50_US=30    # gateway p50 at c=1 at most this many µs above bare hyper

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() {
    echo "load.sh: $*" >&2
    exit 1
}

if ! command -v wrk >/dev/null 2>&1; then
    echo "load.sh: wrk is not installed. On Debian/Ubuntu: apt-get install -y wrk" >&2
    exit 1
fi
command -v curl >/dev/null 2>&1 || die "curl is not installed (apt-get install -y curl)"

BODY='{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[[5.1,3.5,1.4,0.2]]}]}'
INFER_PATH='/v2/models/iris/versions/1/infer'

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vigil-load.XXXXXX")"
GATEWAY_PID=""
BARE_PID=""

cleanup() {
    local status=$?
    for pid in "$GATEWAY_PID" "$BARE_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1 (the kernel picks it; a small race before the server binds it).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# wait_for NAME PID URL [curl args...]: waits until URL answers 200, bounded by READY_TIMEOUT.
wait_for() {
    local name=$1 pid=$2 url=$3
    shift 3
    local deadline=$((SECONDS + READY_TIMEOUT)) code
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "load.sh: $name exited during start-up; its log:" >&2
            cat "$WORK/$name.log" >&2 || true
            exit 1
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true)"
        if [[ "$code" == "200" ]]; then
            return 0
        fi
        sleep 0.2
    done
    echo "load.sh: $name did not answer 200 at $url within ${READY_TIMEOUT}s; its log:" >&2
    cat "$WORK/$name.log" >&2 || true
    exit 1
}

echo "== building (release)"
cargo build --release --bin vigil --example bare_hyper

GATEWAY_PORT="$(free_port)"
echo "== starting vigil on 127.0.0.1:$GATEWAY_PORT"
target/release/vigil serve --models models --addr "127.0.0.1:$GATEWAY_PORT" \
    --state "$WORK/state" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_for gateway "$GATEWAY_PID" "http://127.0.0.1:$GATEWAY_PORT/v2/health/ready"

BARE_PORT="$(free_port)"
while [[ "$BARE_PORT" == "$GATEWAY_PORT" ]]; do BARE_PORT="$(free_port)"; done
echo "== starting bare hyper on 127.0.0.1:$BARE_PORT"
target/release/examples/bare_hyper "127.0.0.1:$BARE_PORT" >"$WORK/bare.log" 2>&1 &
BARE_PID=$!
wait_for bare "$BARE_PID" "http://127.0.0.1:$BARE_PORT/"

GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT$INFER_PATH"
BARE_URL="http://127.0.0.1:$BARE_PORT$INFER_PATH"

# The exact request wrk sends must succeed on both servers before anything is measured.
for url in "$GATEWAY_URL" "$BARE_URL"; do
    code="$(curl -s -o "$WORK/check.json" -w '%{http_code}' --max-time 5 \
        -H 'Content-Type: application/json' --data-binary "$BODY" "$url" || true)"
    if [[ "$code" != "200" ]]; then
        echo "load.sh: POST $url answered $code:" >&2
        cat "$WORK/check.json" >&2 || true
        exit 1
    fi
done
echo "   gateway answer: $(curl -s -H 'Content-Type: application/json' --data-binary "$BODY" "$GATEWAY_URL")"

cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
EOF

# Latency as printed by wrk ("95.12us", "1.20ms", "2.00s", "1.50m") → microseconds.
to_us() {
    awk -v t="$1" 'BEGIN {
        if (match(t, /^[0-9.]+/) == 0) { print "nan"; exit }
        v = substr(t, 1, RLENGTH); u = substr(t, RLENGTH + 1)
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000
        else if (u == "m") f = 60000000; else if (u == "h") f = 3600000000; else { print "nan"; exit }
        printf "%.1f", v * f
    }'
}

# run_wrk LABEL URL CONNECTIONS DURATION → sets RPS, P50_US, P99_US; fails on errors.
run_wrk() {
    local label=$1 url=$2 connections=$3 duration=$4
    local threads=$((connections < MAX_THREADS ? connections : MAX_THREADS))
    local out="$WORK/wrk-$label-c$connections.txt"
    if ! wrk -t "$threads" -c "$connections" -d "$duration" --latency -s "$WORK/post.lua" "$url" >"$out" 2>&1; then
        echo "load.sh: wrk failed against $label (c=$connections):" >&2
        cat "$out" >&2
        exit 1
    fi
    local non2xx
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    if [[ -n "$non2xx" && "$non2xx" != "0" ]]; then
        echo "load.sh: wrk reported $non2xx non-2xx responses from $label (c=$connections):" >&2
        cat "$out" >&2
        exit 1
    fi
    if grep -q 'Socket errors:' "$out"; then
        echo "   warning: $label c=$connections: $(grep 'Socket errors:' "$out" | sed 's/^ *//')" >&2
    fi
    RPS="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    P50_US="$(to_us "$(awk '$1 == "50%" { print $2 }' "$out")")"
    P99_US="$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")"
    local requests
    requests="$(awk '/requests in/ { print $1 }' "$out")"
    if [[ -z "$RPS" || -z "$requests" || "$requests" == "0" || "$P50_US" == "nan" || "$P99_US" == "nan" ]]; then
        echo "load.sh: could not read wrk's results against $label (c=$connections):" >&2
        cat "$out" >&2
        exit 1
    fi
}

declare -A G_RPS G_P50 G_P99 B_RPS B_P50 B_P99
for c in $CONCURRENCY; do
    echo "== c=$c: warm-up $WARMUP, then $DURATION per server"
    run_wrk gateway-warmup "$GATEWAY_URL" "$c" "$WARMUP"
    run_wrk gateway "$GATEWAY_URL" "$c" "$DURATION"
    G_RPS[$c]=$RPS G_P50[$c]=$P50_US G_P99[$c]=$P99_US
    run_wrk bare-warmup "$BARE_URL" "$c" "$WARMUP"
    run_wrk bare "$BARE_URL" "$c" "$DURATION"
    B_RPS[$c]=$RPS B_P50[$c]=$P50_US B_P99[$c]=$P99_US
done

echo
echo "wrk $(wrk -v 2>&1 | head -n1 | awk '{ print $2 }'), $(nproc) CPUs, duration $DURATION per run, threads min(c, $MAX_THREADS)"
echo "body: single-row iris v2 JSON, POST $INFER_PATH"
echo
echo "latencies in µs; p50 diff = gateway p50 - bare p50"
printf '%5s | %12s | %12s | %6s | %9s | %9s | %9s | %9s | %9s\n' \
    conc 'gateway r/s' 'bare r/s' ratio 'gw p50' 'bare p50' 'p50 diff' 'gw p99' 'bare p99'
printf '%s\n' '------+--------------+--------------+--------+-----------+-----------+-----------+-----------+----------'
for c in $CONCURRENCY; do
    awk -v c="$c" -v gr="${G_RPS[$c]}" -v br="${B_RPS[$c]}" \
        -v g50="${G_P50[$c]}" -v b50="${B_P50[$c]}" -v g99="${G_P99[$c]}" -v b99="${B_P99[$c]}" 'BEGIN {
        printf "%5d | %12.0f | %12.0f | %6.2f | %9.1f | %9.1f | %+9.1f | %9.1f | %9.1f\n",
            c, gr, br, (br > 0 ? gr / br : 0), g50, b50, g50 - b50, g99, b99
    }'
done
echo

# Targets, when the concurrencies they name were run.
if [[ -n "${G_RPS[64]:-}" ]]; then
    awk -v gr="${G_RPS[64]}" -v br="${B_RPS[64]}" -v t="$TARGET_RATIO_PCT" 'BEGIN {
        pct = (br > 0 ? 100 * gr / br : 0)
        printf "%s: throughput at c=64: gateway is %.1f%% of bare hyper (target >= %d%%)\n",
            (pct >= t ? "PASS" : "FAIL"), pct, t
    }'
else
    echo "SKIP: throughput target needs c=64 in CONCURRENCY"
fi
if [[ -n "${G_P50[1]:-}" ]]; then
    awk -v g="${G_P50[1]}" -v b="${B_P50[1]}" -v t="$TARGET_P50_US" 'BEGIN {
        d = g - b
        printf "%s: p50 at c=1: gateway is %+.1f µs from bare hyper (target <= %d µs)\n",
            (d <= t ? "PASS" : "FAIL"), d, t
    }'
else
    echo "SKIP: p50 target needs c=1 in CONCURRENCY"
fi
echo "(targets are informational; wrk and the server under test share the machine's cores)"
