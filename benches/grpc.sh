#!/usr/bin/env bash
# gRPC against REST on one gateway, measured by one load generator (benches/grpc_vs_rest.rs):
# the same single-row iris inference (champion, unversioned) as a v2 JSON POST over keep-alive
# HTTP/1 connections and as ModelInfer with raw_input_contents over HTTP/2.
#
# 1. Builds `vigil` and the example `grpc_vs_rest` (release).
# 2. Starts one gateway with both listeners (`--addr` and `--grpc-addr`, free 127.0.0.1 ports,
#    state in a temporary directory, default settings otherwise: monitoring and inference log on)
#    and waits for GET /v2/health/ready.
# 3. Checks one short run of each protocol answers without errors.
# 4. For each concurrency in $CONCURRENCY, $ROUNDS rounds of one REST and one gRPC run, the order
#    swapped every round (rest, grpc; grpc, rest; ...): closed loop, $WARMUP s warm-up then
#    $DURATION s measured per run.
# 5. Prints the median req/s, p50 and p99 of each protocol per concurrency and the ratios
#    gRPC/REST of throughput and p50.
#
# With 2 CPUs or more (and taskset), the gateway runs on CPU $SERVER_CPU and the generator on
# CPU $CLIENT_CPU, so that the client's own cost (which differs between the protocols) does not
# take CPU from the server; each run then prints how busy both CPUs were.
#
# Environment:
#   DURATION      seconds measured per run                          [default: 10]
#   WARMUP        seconds of warm-up before each measured run       [default: 2]
#   ROUNDS        REST/gRPC pairs per concurrency                   [default: 3]
#   CONCURRENCY   space-separated in-flight request counts          [default: "1 64"]
#   CHANNELS      gRPC: HTTP/2 connections; default: one per 16 in-flight calls (ceil(c/16))
#   GRPC_CLIENT   gRPC client of the generator: h2 (lean, as REST's hyper client) or tonic [h2]
#   PIN           1: pin gateway and generator (needs taskset, 2 CPUs), 0: do not, auto [auto]
#   SERVER_CPU    CPU of the gateway when pinned                    [default: 0]
#   CLIENT_CPU    CPU of the generator when pinned                  [default: 1]
#   READY_TIMEOUT seconds to wait for the gateway to answer         [default: 60]
#   VIGIL_BIN     the gateway binary                                [default: target/release/vigil]
#
# Exit status: non-zero when the gateway does not start, a run fails or any request failed
# (printed after the figures).
#
# Usage: bash benches/grpc.sh
#        DURATION=3 ROUNDS=1 bash benches/grpc.sh
set -euo pipefail

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
DURATION="${DURATION%s}" # "10s" as load.sh takes it
WARMUP="${WARMUP%s}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCY="${CONCURRENCY:-1 64}"
CHANNELS="${CHANNELS:-}"
GRPC_CLIENT="${GRPC_CLIENT:-h2}"
PIN="${PIN:-auto}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
VIGIL_BIN="${VIGIL_BIN:-target/release/vigil}"
GENERATOR=target/release/examples/grpc_vs_rest

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() {
    echo "grpc.sh: $*" >&2
    exit 1
}
# shellcheck source=benches/common.sh
source benches/common.sh
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ "$DURATION" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "DURATION must be seconds"
[[ "$WARMUP" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "WARMUP must be seconds"
[[ -z "$CHANNELS" || "$CHANNELS" =~ ^[1-9][0-9]*$ ]] || die "CHANNELS must be a positive integer"
[[ "$GRPC_CLIENT" == h2 || "$GRPC_CLIENT" == tonic ]] || die "GRPC_CLIENT must be h2 or tonic"
command -v curl >/dev/null 2>&1 || die "curl is not installed (apt-get install -y curl)"

SERVER_PIN=()
CLIENT_PIN=()
case "$PIN" in
auto | 1)
    if command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
        SERVER_PIN=(taskset -c "$SERVER_CPU")
        CLIENT_PIN=(taskset -c "$CLIENT_CPU")
    elif [[ "$PIN" == 1 ]]; then
        die "PIN=1 needs taskset and at least 2 CPUs"
    fi
    ;;
0) ;;
*) die "PIN must be 0, 1 or auto" ;;
esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vigil-grpc.XXXXXX")"
GATEWAY_PID=""
cleanup() {
    local status=$?
    if [[ -n "$GATEWAY_PID" ]] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
        kill "$GATEWAY_PID" 2>/dev/null || true
        wait "$GATEWAY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# cpu_times CPU: "busy idle" jiffies of one CPU from /proc/stat.
cpu_times() {
    awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat
}

echo "== building (release)"
cargo build --release --bin vigil --example grpc_vs_rest

HTTP_PORT="$(free_port)"
GRPC_PORT="$(free_port)"
while [[ "$GRPC_PORT" == "$HTTP_PORT" ]]; do GRPC_PORT="$(free_port)"; done
echo "== starting $VIGIL_BIN: REST 127.0.0.1:$HTTP_PORT, gRPC 127.0.0.1:$GRPC_PORT${SERVER_PIN:+ (CPU $SERVER_CPU)}"
"${SERVER_PIN[@]}" "$VIGIL_BIN" serve --models models --state "$WORK/state" \
    --addr "127.0.0.1:$HTTP_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
deadline=$((SECONDS + READY_TIMEOUT))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
    "http://127.0.0.1:$HTTP_PORT/v2/health/ready" || true)" == 200 ]]; do
    if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        cat "$WORK/gateway.log" >&2
        die "the gateway exited during start-up (its log is above)"
    fi
    ((SECONDS < deadline)) || die "the gateway did not answer 200 within ${READY_TIMEOUT}s"
    sleep 0.2
done

# run PROTOCOL C DURATION WARMUP: one generator run; sets RPS P50 P99 ERRORS LINE.
run() {
    local protocol=$1 c=$2 duration=$3 warmup=$4 addr=127.0.0.1:$HTTP_PORT
    local -a extra=()
    [[ "$protocol" == grpc ]] && addr=127.0.0.1:$GRPC_PORT
    [[ "$protocol" == grpc ]] && extra=(--grpc-client "$GRPC_CLIENT")
    [[ "$protocol" == grpc && -n "$CHANNELS" ]] && extra+=(--channels "$CHANNELS")
    local server_before client_before
    ((${#SERVER_PIN[@]})) && server_before="$(cpu_times "$SERVER_CPU")" client_before="$(cpu_times "$CLIENT_CPU")"
    if ! LINE="$("${CLIENT_PIN[@]}" "$GENERATOR" --protocol "$protocol" --addr "$addr" \
        --concurrency "$c" --duration "$duration" --warmup "$warmup" "${extra[@]}" 2>"$WORK/generator.err")"; then
        cat "$WORK/generator.err" >&2
        die "the generator failed ($protocol, c=$c)"
    fi
    [[ "$LINE" =~ ^$protocol\ c=$c:\ ([0-9]+)\ req/s\ p50\ ([0-9]+)\ us\ p99\ ([0-9]+)\ us\ errors\ ([0-9]+) ]] ||
        die "cannot read the generator's line: $LINE"
    RPS=${BASH_REMATCH[1]} P50=${BASH_REMATCH[2]} P99=${BASH_REMATCH[3]} ERRORS=${BASH_REMATCH[4]}
    if ((ERRORS > 0)); then
        sed 's/^/   /' "$WORK/generator.err" >&2
    fi
    if ((${#SERVER_PIN[@]})); then
        local -a sb sa cb ca
        read -r -a sb <<<"$server_before"
        read -r -a cb <<<"$client_before"
        read -r -a sa <<<"$(cpu_times "$SERVER_CPU")"
        read -r -a ca <<<"$(cpu_times "$CLIENT_CPU")"
        CPU_NOTE="$(awk -v sb="$((sa[0] - sb[0]))" -v si="$((sa[1] - sb[1]))" \
            -v cb="$((ca[0] - cb[0]))" -v ci="$((ca[1] - cb[1]))" 'BEGIN {
            printf "(CPU busy: gateway %.0f%%, generator %.0f%%)",
                100 * sb / (sb + si > 0 ? sb + si : 1), 100 * cb / (cb + ci > 0 ? cb + ci : 1) }')"
    else
        CPU_NOTE=""
    fi
}

echo "== check: one short run of each protocol"
for protocol in rest grpc; do
    run "$protocol" 1 0.5 0
    ((ERRORS == 0)) || die "$protocol: $ERRORS failed requests in the check run"
    echo "   $LINE"
done

busy_note "before the runs"
TOTAL_ERRORS=0
declare -A RPS_OF P50_OF P99_OF
for c in $CONCURRENCY; do
    echo "== c=$c: $ROUNDS rounds, ${WARMUP}s warm-up + ${DURATION}s per run"
    for round in $(seq 1 "$ROUNDS"); do
        order="rest grpc"
        ((round % 2 == 0)) && order="grpc rest"
        for protocol in $order; do
            run "$protocol" "$c" "$DURATION" "$WARMUP"
            echo "   round $round: $LINE ${CPU_NOTE}"
            RPS_OF[$protocol,$c]+="$RPS " P50_OF[$protocol,$c]+="$P50 " P99_OF[$protocol,$c]+="$P99 "
            TOTAL_ERRORS=$((TOTAL_ERRORS + ERRORS))
        done
    done
done

median() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -n | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "$(nproc) CPUs; ${SERVER_PIN:+gateway on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU; }medians of $ROUNDS runs of ${DURATION}s"
echo "gRPC: ModelInfer with raw_input_contents, ${CHANNELS:-ceil(c/16)} HTTP/2 connection(s), $GRPC_CLIENT client; REST: v2 JSON, one HTTP/1 connection per worker"
printf '%5s | %9s | %9s | %9s | %9s | %9s | %9s | %9s | %9s\n' \
    conc 'REST r/s' 'gRPC r/s' 'r/s ratio' 'REST p50' 'gRPC p50' 'p50 ratio' 'REST p99' 'gRPC p99'
for c in $CONCURRENCY; do
    awk -v c="$c" \
        -v rr="$(median "${RPS_OF[rest,$c]}")" -v gr="$(median "${RPS_OF[grpc,$c]}")" \
        -v rp="$(median "${P50_OF[rest,$c]}")" -v gp="$(median "${P50_OF[grpc,$c]}")" \
        -v r9="$(median "${P99_OF[rest,$c]}")" -v g9="$(median "${P99_OF[grpc,$c]}")" 'BEGIN {
        printf "%5d | %9d | %9d | %9.2f | %9d | %9d | %9.2f | %9d | %9d\n",
            c, rr, gr, (rr > 0 ? gr / rr : 0), rp, gp, (rp > 0 ? gp / rp : 0), r9, g9
    }'
done
echo "(latencies in µs; ratios are gRPC / REST)"

problems="$(grep -cE 'WARN|ERROR' "$WORK/gateway.log" || true)"
if [[ "$problems" != "0" ]]; then
    echo "note: the gateway log has $problems WARN/ERROR lines, e.g.:"
    grep -E 'WARN|ERROR' "$WORK/gateway.log" | head -n 5 | sed 's/^/   /'
fi
((TOTAL_ERRORS == 0)) || die "$TOTAL_ERRORS requests failed (see above)"
