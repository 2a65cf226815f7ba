#!/usr/bin/env bash
# Load harness for vigil with wrk, over loopback. Five sections, run in this order:
#
# baseline  vigil against a bare hyper server (benches/bare_hyper.rs). For each concurrency
#           (1, 8, 64) it warms up, then runs wrk for $DURATION against
#             - the gateway: POST /v2/models/iris/versions/1/infer with a single-row v2 JSON body,
#             - the bare hyper server: the same request, answered with a fixed body of the same
#               size,
#           and prints requests/s and p50/p99 latency of both, their ratio and the p50 difference.
# shadow    the champion with one shadow at fraction 1.0 against the champion alone, in the same
#           run: a gateway with an admin token and a temporary state directory; for each
#           concurrency (64, 8) wrk runs on the unversioned route POST /v2/models/iris/infer
#           (served by the champion, iris v3 by default) first with no shadow, then after
#           PUT /admin/models/iris/shadows/$SHADOW_VERSION {"fraction": 1.0}; after the measured
#           run it reads GET /admin/models/iris and prints the shadow's comparison figures, then
#           DELETEs the shadow. Prints requests/s and p50/p99 of both and the ratios with/without.
# swap      time from PUT /admin/models/iris/champion to the first response from the new version:
#           benches/swap_latency.py (Python standard library) on a fresh gateway, swapping the
#           champion between two versions $SWAPS times while one keep-alive client sends
#           unversioned single-row requests in a tight loop.
# monitoring champion throughput with request-path monitoring on vs off (--monitoring false).
# feedback  the inference log and the feedback API: alternating gateways with the log off
#           (--inference-log false), on, on with a client-chosen X-Request-Id per request, and on
#           with feedback posted for 10% of the requests (every 11th wrk request labels an
#           inference answered shortly before on the same wrk thread); then the latency of
#           1,000-item feedback batches (benches/feedback_batch.py) on an idle gateway and while
#           wrk loads it at c=8.
#
# Environment:
#   SECTIONS            sections to run         [default: "baseline shadow swap monitoring feedback"]
#   MONITORING_ROUNDS   monitoring: on/off pairs to run                  [default: 2]
#   FEEDBACK_ROUNDS     feedback: rounds over the four cases             [default: 2]
#   FEEDBACK_BATCHES    feedback: 1,000-item batches timed per case      [default: 200]
#   DURATION            measured run per server/case and concurrency     [default: 10s]
#   WARMUP              warm-up run before each measured run             [default: 2s]
#   CONCURRENCY         baseline: space-separated connection counts      [default: "1 8 64"]
#   SHADOW_CONCURRENCY  shadow: space-separated connection counts        [default: "64 8"]
#   SHADOW_VERSION      shadow: the version mirrored to                  [default: 2]
#   SHADOW_FLAGS        shadow: extra `vigil serve` flags, e.g. "--shadow-workers 2" [default: none]
#   SHADOW_ROUNDS       shadow: without/with pairs per concurrency       [default: 1]
#   SWAPS               swap: number of champion swaps                   [default: 50]
#   SWAP_VERSIONS       swap: the two versions alternated                [default: 1,2]
#   SWAP_GAP_MS         swap: pause before each swap, milliseconds       [default: 20]
#   READY_TIMEOUT       seconds to wait for each server to answer        [default: 60]
#   VIGIL_BIN           the gateway binary measured                      [default: target/release/vigil]
#   COMPARE_BIN         baseline: a second gateway binary (e.g. an earlier build), measured in the
#                       same run, interleaved with the first for each concurrency [default: none]
#
# Exit status: 0 when every run completed, whether or not the targets are met (they are
# informational); non-zero when a server does not start, wrk fails, wrk reports non-2xx
# responses, an admin call does not answer 200, or the swap client sees an error or a stale
# version.
#
# Usage: bash benches/load.sh        (from anywhere; it works in the repository root)
#        SECTIONS=swap SWAPS=200 bash benches/load.sh

set -euo pipefail
# The gateways measured here serve HTTP only (an older baseline binary ignores the variable).
export VIGIL_GRPC_ADDR=off

SECTIONS="${SECTIONS:-baseline shadow swap monitoring feedback}"
MONITORING_ROUNDS="${MONITORING_ROUNDS:-2}"
FEEDBACK_ROUNDS="${FEEDBACK_ROUNDS:-2}"
FEEDBACK_BATCHES="${FEEDBACK_BATCHES:-200}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-1 8 64}"
SHADOW_CONCURRENCY="${SHADOW_CONCURRENCY:-64 8}"
SHADOW_VERSION="${SHADOW_VERSION:-2}"
SHADOW_FLAGS="${SHADOW_FLAGS:-}"
SHADOW_ROUNDS="${SHADOW_ROUNDS:-1}"
SWAPS="${SWAPS:-50}"
SWAP_VERSIONS="${SWAP_VERSIONS:-1,2}"
SWAP_GAP_MS="${SWAP_GAP_MS:-20}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
VIGIL_BIN="${VIGIL_BIN:-target/release/vigil}"
COMPARE_BIN="${COMPARE_BIN:-}"
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
# shellcheck source=benches/common.sh
source benches/common.sh

for section in $SECTIONS; do
    case "$section" in
    baseline | shadow | swap | monitoring | feedback) ;;
    *) die "unknown section '$section' in SECTIONS (expected baseline, shadow, swap, monitoring and/or feedback)" ;;
    esac
done
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
[[ "$SHADOW_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "SHADOW_ROUNDS must be a positive integer"
[[ "$SWAPS" =~ ^[1-9][0-9]*$ ]] || die "SWAPS must be a positive integer"
[[ "$FEEDBACK_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "FEEDBACK_ROUNDS must be a positive integer"
[[ "$FEEDBACK_BATCHES" =~ ^[1-9][0-9]*$ ]] || die "FEEDBACK_BATCHES must be a positive integer"

if ! command -v wrk >/dev/null 2>&1; then
    echo "load.sh: wrk is not installed. On Debian/Ubuntu: apt-get install -y wrk" >&2
    exit 1
fi
command -v curl >/dev/null 2>&1 || die "curl is not installed (apt-get install -y curl)"

# Python (standard library only) reads the admin API's JSON and runs the swap client.
PYTHON=""
if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
elif command -v python3 >/dev/null 2>&1; then
    PYTHON="$(command -v python3)"
fi
if want shadow || want swap || want feedback; then
    [[ -n "$PYTHON" ]] || die "the shadow, swap and feedback sections need python3 (or ./.venv/bin/python)"
fi

BODY='{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[[5.1,3.5,1.4,0.2]]}]}'
INFER_PATH='/v2/models/iris/versions/1/infer'
CHAMPION_PATH='/v2/models/iris/infer' # unversioned: served by the champion, mirrored to shadows

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vigil-load.XXXXXX")"
GATEWAY_PID=""
BARE_PID=""
ADMIN_PID=""

cleanup() {
    local status=$?
    for pid in $GATEWAY_PID "$BARE_PID" "$ADMIN_PID"; do
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

# stop_server PID: stops a server this script started (between sections).
stop_server() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
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

# run_wrk LABEL URL CONNECTIONS DURATION [SCRIPT [ARG]] → sets RPS, P50_US, P99_US; fails on
# errors. SCRIPT defaults to the static single-row POST; ARG is passed to the script's init().
run_wrk() {
    local label=$1 url=$2 connections=$3 duration=$4 script=${5:-$WORK/post.lua}
    local threads=$((connections < MAX_THREADS ? connections : MAX_THREADS))
    local out="$WORK/wrk-$label-c$connections.txt"
    local extra=()
    [[ -n "${6:-}" ]] && extra=(-- "$6")
    if ! wrk -t "$threads" -c "$connections" -d "$duration" --latency -s "$script" "$url" "${extra[@]}" >"$out" 2>&1; then
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

# ---------------------------------------------------------------------------------------------
# baseline: the gateway against a bare hyper server.
section_baseline() {
    # The gateways measured: VIGIL_BIN, and COMPARE_BIN when given.
    local -a NAMES=(gateway) BINS=("$VIGIL_BIN") PIDS=() URLS=()
    if [[ -n "$COMPARE_BIN" ]]; then
        [[ -x "$COMPARE_BIN" ]] || die "COMPARE_BIN $COMPARE_BIN is not an executable"
        NAMES+=(compare)
        BINS+=("$COMPARE_BIN")
    fi
    local i port
    for i in "${!NAMES[@]}"; do
        port="$(free_port)"
        echo "== starting ${NAMES[$i]} (${BINS[$i]}) on 127.0.0.1:$port"
        "${BINS[$i]}" serve --models models --addr "127.0.0.1:$port" \
            --state "$WORK/state-${NAMES[$i]}" >"$WORK/${NAMES[$i]}.log" 2>&1 &
        PIDS+=($!)
        GATEWAY_PID="${PIDS[*]}"
        wait_for "${NAMES[$i]}" "${PIDS[$i]}" "http://127.0.0.1:$port/v2/health/ready"
        URLS+=("http://127.0.0.1:$port$INFER_PATH")
    done

    BARE_PORT="$(free_port)"
    echo "== starting bare hyper on 127.0.0.1:$BARE_PORT"
    target/release/examples/bare_hyper "127.0.0.1:$BARE_PORT" >"$WORK/bare.log" 2>&1 &
    BARE_PID=$!
    wait_for bare "$BARE_PID" "http://127.0.0.1:$BARE_PORT/"
    BARE_URL="http://127.0.0.1:$BARE_PORT$INFER_PATH"

    # The exact request wrk sends must succeed on every server before anything is measured.
    for url in "${URLS[@]}" "$BARE_URL"; do
        code="$(curl -s -o "$WORK/check.json" -w '%{http_code}' --max-time 5 \
            -H 'Content-Type: application/json' --data-binary "$BODY" "$url" || true)"
        if [[ "$code" != "200" ]]; then
            echo "load.sh: POST $url answered $code:" >&2
            cat "$WORK/check.json" >&2 || true
            exit 1
        fi
    done
    echo "   gateway answer: $(curl -s -H 'Content-Type: application/json' --data-binary "$BODY" "${URLS[0]}")"

    local -A RPS_OF P50_OF P99_OF
    for c in $CONCURRENCY; do
        echo "== c=$c: warm-up $WARMUP, then $DURATION per server"
        for i in "${!NAMES[@]}"; do
            run_wrk "${NAMES[$i]}-warmup" "${URLS[$i]}" "$c" "$WARMUP"
            run_wrk "${NAMES[$i]}" "${URLS[$i]}" "$c" "$DURATION"
            RPS_OF[${NAMES[$i]},$c]=$RPS P50_OF[${NAMES[$i]},$c]=$P50_US P99_OF[${NAMES[$i]},$c]=$P99_US
        done
        run_wrk bare-warmup "$BARE_URL" "$c" "$WARMUP"
        run_wrk bare "$BARE_URL" "$c" "$DURATION"
        RPS_OF[bare,$c]=$RPS P50_OF[bare,$c]=$P50_US P99_OF[bare,$c]=$P99_US
    done

    echo
    echo "wrk $(wrk -v 2>&1 | head -n1 | awk '{ print $2 }'), $(nproc) CPUs, duration $DURATION per run, threads min(c, $MAX_THREADS)"
    echo "body: single-row iris v2 JSON, POST $INFER_PATH"
    for i in "${!NAMES[@]}"; do
        echo "${NAMES[$i]}: ${BINS[$i]}"
    done
    echo
    echo "latencies in µs; p50 diff = gateway p50 - bare p50"
    printf '%-8s | %5s | %12s | %12s | %6s | %9s | %9s | %9s | %9s | %9s\n' \
        server conc 'r/s' 'bare r/s' ratio 'p50' 'bare p50' 'p50 diff' 'p99' 'bare p99'
    printf '%s\n' '---------+-------+--------------+--------------+--------+-----------+-----------+-----------+-----------+----------'
    for c in $CONCURRENCY; do
        for name in "${NAMES[@]}"; do
            awk -v n="$name" -v c="$c" -v gr="${RPS_OF[$name,$c]}" -v br="${RPS_OF[bare,$c]}" \
                -v g50="${P50_OF[$name,$c]}" -v b50="${P50_OF[bare,$c]}" \
                -v g99="${P99_OF[$name,$c]}" -v b99="${P99_OF[bare,$c]}" 'BEGIN {
                printf "%-8s | %5d | %12.0f | %12.0f | %6.2f | %9.1f | %9.1f | %+9.1f | %9.1f | %9.1f\n",
                    n, c, gr, br, (br > 0 ? gr / br : 0), g50, b50, g50 - b50, g99, b99
            }'
        done
    done
    echo

    # Targets, when the concurrencies they name were run.
    for name in "${NAMES[@]}"; do
        if [[ -n "${RPS_OF[$name,64]:-}" ]]; then
            awk -v n="$name" -v gr="${RPS_OF[$name,64]}" -v br="${RPS_OF[bare,64]}" -v t="$TARGET_RATIO_PCT" 'BEGIN {
                pct = (br > 0 ? 100 * gr / br : 0)
                printf "%s: %s throughput at c=64 is %.1f%% of bare hyper (target >= %d%%)\n",
                    (pct >= t ? "PASS" : "FAIL"), n, pct, t
            }'
        else
            echo "SKIP: throughput target needs c=64 in CONCURRENCY"
        fi
        if [[ -n "${P50_OF[$name,1]:-}" ]]; then
            awk -v n="$name" -v g="${P50_OF[$name,1]}" -v b="${P50_OF[bare,1]}" -v t="$TARGET_P50_US" 'BEGIN {
                d = g - b
                printf "%s: %s p50 at c=1 is %+.1f µs from bare hyper (target <= %d µs)\n",
                    (d <= t ? "PASS" : "FAIL"), n, d, t
            }'
        else
            echo "SKIP: p50 target needs c=1 in CONCURRENCY"
        fi
    done
    echo "(targets are informational; wrk and the server under test share the machine's cores)"
    for pid in "${PIDS[@]}"; do
        stop_server "$pid"
    done
    stop_server "$BARE_PID"
    GATEWAY_PID="" BARE_PID=""
    echo
}

# ---------------------------------------------------------------------------------------------
# Helpers of the shadow and swap sections: a gateway with the admin API, and its calls.

# A random admin token for this run; given to the gateway through VIGIL_ADMIN_TOKEN and to curl
# through a header file, so that it appears on no command line.
ADMIN_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN" >"$WORK/auth.header"

# start_admin_gateway NAME [extra vigil flags...] → sets ADMIN_PID, ADMIN_PORT, ADMIN_BASE.
# State goes to a fresh directory $WORK/state-NAME, the log to $WORK/NAME.log.
start_admin_gateway() {
    local name=$1
    shift
    ADMIN_PORT="$(free_port)"
    echo "== starting vigil ($name) on 127.0.0.1:$ADMIN_PORT with an admin token${*:+, flags: $*}"
    VIGIL_ADMIN_TOKEN="$ADMIN_TOKEN" "$VIGIL_BIN" serve --models models \
        --addr "127.0.0.1:$ADMIN_PORT" --state "$WORK/state-$name" "$@" >"$WORK/$name.log" 2>&1 &
    ADMIN_PID=$!
    ADMIN_BASE="http://127.0.0.1:$ADMIN_PORT"
    wait_for "$name" "$ADMIN_PID" "$ADMIN_BASE/v2/health/ready"
}

# admin METHOD PATH OUT [JSON BODY]: an admin call that must answer 200; the answer goes to OUT.
admin() {
    local method=$1 path=$2 out=$3 body=${4:-} code
    local args=(-s -o "$out" -w '%{http_code}' --max-time 30 -X "$method" -H @"$WORK/auth.header")
    if [[ -n "$body" ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    code="$(curl "${args[@]}" "$ADMIN_BASE$path" || true)"
    if [[ "$code" != "200" ]]; then
        echo "load.sh: $method $path answered $code:" >&2
        cat "$out" >&2 || true
        echo >&2
        exit 1
    fi
}

# json FILE EXPR: evaluates the Python expression EXPR with `d` = the JSON in FILE; prints it
# (None as an empty string).
json() {
    "$PYTHON" -c 'import json, sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print("" if v is None else v)' "$1" "$2"
}

# The comparison object of shadow VERSION in a model report, as an expression for json().
shadow_expr() {
    echo "next((s['comparison'] for s in d['shadows'] if s['version'] == '$1'), None)"
}

# settle_shadow MODEL VERSION: waits (at most 15 s) until the shadow has finished every queued
# copy (compared + failed + timed out = mirrored; single-row requests), so counters are final.
settle_shadow() {
    local model=$1 version=$2 deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        admin GET "/admin/models/$model" "$WORK/settle.json"
        if [[ "$(json "$WORK/settle.json" "(lambda c: c is not None and c['compared_rows'] + c['failed'] + c['timed_out'] >= c['mirrored'])($(shadow_expr "$version"))")" == "True" ]]; then
            return 0
        fi
        sleep 0.2
    done
    echo "   warning: shadow $version still had queued copies after 15 s" >&2
}

# shadow_delta BEFORE AFTER VERSION: the shadow's figures over the interval between two reports:
# mirrored dropped failed timed_out compared agreement, then (from AFTER, over its last 2048
# comparisons) shadow p50 p99 and champion p50 p99 in µs. "-" where there is no figure.
shadow_delta() {
    "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import json, sys
def comparison(path, version):
    report = json.load(open(path))
    for shadow in report["shadows"]:
        if shadow["version"] == version:
            return shadow["comparison"]
    return None
zero = {"mirrored": 0, "dropped": 0, "failed": 0, "timed_out": 0, "compared_rows": 0,
        "agreement_rate": None}
before = comparison(sys.argv[1], sys.argv[3]) or zero
after = comparison(sys.argv[2], sys.argv[3])
if after is None:
    sys.exit("shadow %s is not in the report" % sys.argv[3])
fields = [after[k] - before[k] for k in ("mirrored", "dropped", "failed", "timed_out", "compared_rows")]
agreeing = lambda c: (c["agreement_rate"] or 0.0) * c["compared_rows"]
compared = fields[-1]
fields.append("%.4f" % ((agreeing(after) - agreeing(before)) / compared) if compared > 0 else "-")
for key in ("shadow_latency_p50", "shadow_latency_p99", "champion_latency_p50", "champion_latency_p99"):
    fields.append("-" if after[key] is None else "%.1f" % (after[key] * 1e6))
print(" ".join(str(f) for f in fields))
EOF
}

# log_problems NAME: prints the WARN/ERROR lines of a gateway's log (informational).
log_problems() {
    local name=$1 count
    count="$(grep -cE 'WARN|ERROR' "$WORK/$name.log" || true)"
    if [[ "$count" != "0" ]]; then
        echo "   note: the $name log has $count WARN/ERROR lines, e.g.:"
        grep -E 'WARN|ERROR' "$WORK/$name.log" | head -n 5 | sed 's/^/     /'
    fi
}

# ---------------------------------------------------------------------------------------------
# shadow: champion throughput and p99 with one shadow at fraction 1.0 against none, same run.
section_shadow() {
    local model=iris
    # shellcheck disable=SC2086 # SHADOW_FLAGS is a list of flags
    start_admin_gateway gateway-shadow $SHADOW_FLAGS
    local url="$ADMIN_BASE$CHAMPION_PATH"

    admin GET "/admin/models/$model" "$WORK/model.json"
    local champion shadow_status
    champion="$(json "$WORK/model.json" "d['champion']")"
    shadow_status="$(json "$WORK/model.json" "next((v['status'] for v in d['versions'] if v['version'] == '$SHADOW_VERSION'), None)")"
    [[ -n "$champion" ]] || die "$model has no champion"
    [[ "$champion" != "$SHADOW_VERSION" ]] || die "$model's champion is $champion, the shadow version itself"
    [[ "$shadow_status" == "ready" ]] || die "$model version $SHADOW_VERSION is '${shadow_status:-missing}', not ready"
    [[ "$(json "$WORK/model.json" "len(d['shadows'])")" == "0" ]] || die "$model already has shadows"
    local run
    run="$(json "$WORK/model.json" "next((v['run'] for v in d['versions'] if v['version'] == '$SHADOW_VERSION'), None)")"
    echo "   $model champion: $champion ($(json "$WORK/model.json" "next((v['run'] for v in d['versions'] if v['version'] == d['champion']), None)")); shadow: $SHADOW_VERSION ($run)"

    local code
    code="$(curl -s -o "$WORK/check.json" -w '%{http_code}' --max-time 5 \
        -H 'Content-Type: application/json' --data-binary "$BODY" "$url" || true)"
    if [[ "$code" != "200" ]]; then
        echo "load.sh: POST $url answered $code:" >&2
        cat "$WORK/check.json" >&2 || true
        exit 1
    fi
    [[ "$(json "$WORK/check.json" "d['model_version']")" == "$champion" ]] ||
        die "POST $CHAMPION_PATH was not answered by the champion: $(cat "$WORK/check.json")"
    echo "   champion answer: $(cat "$WORK/check.json")"

    local -A OFF_RPS OFF_P50 OFF_P99 ON_RPS ON_P50 ON_P99 ON_REQ FIG
    local c r k keys=()
    for c in $SHADOW_CONCURRENCY; do
        for r in $(seq 1 "$SHADOW_ROUNDS"); do
            k="$c/$r"
            keys+=("$k")
            echo "== shadow c=$c, round $r/$SHADOW_ROUNDS: no shadow (warm-up $WARMUP, run $DURATION), then shadow $SHADOW_VERSION at 1.0 (same)"
            run_wrk champion-warmup "$url" "$c" "$WARMUP"
            run_wrk champion "$url" "$c" "$DURATION"
            OFF_RPS[$k]=$RPS OFF_P50[$k]=$P50_US OFF_P99[$k]=$P99_US

            admin PUT "/admin/models/$model/shadows/$SHADOW_VERSION" "$WORK/put.json" '{"fraction": 1.0}'
            run_wrk champion-shadow-warmup "$url" "$c" "$WARMUP"
            settle_shadow "$model" "$SHADOW_VERSION"
            admin GET "/admin/models/$model" "$WORK/before.json"
            run_wrk champion-shadow "$url" "$c" "$DURATION"
            ON_RPS[$k]=$RPS ON_P50[$k]=$P50_US ON_P99[$k]=$P99_US
            ON_REQ[$k]="$(awk '/requests in/ { print $1 }' "$WORK/wrk-champion-shadow-c$c.txt")"
            settle_shadow "$model" "$SHADOW_VERSION"
            admin GET "/admin/models/$model" "$WORK/after.json"
            FIG[$k]="$(shadow_delta "$WORK/before.json" "$WORK/after.json" "$SHADOW_VERSION")"
            echo "   GET /admin/models/$model after the run, shadow $SHADOW_VERSION (since added, warm-up included):"
            echo "   $(json "$WORK/after.json" "__import__('json').dumps($(shadow_expr "$SHADOW_VERSION"))")"
            admin DELETE "/admin/models/$model/shadows/$SHADOW_VERSION" "$WORK/delete.json"
            [[ "$(json "$WORK/delete.json" "len(d['shadows'])")" == "0" ]] ||
                die "shadow $SHADOW_VERSION is still deployed"
        done
    done

    echo
    echo "shadow section: wrk $(wrk -v 2>&1 | head -n1 | awk '{ print $2 }'), $(nproc) CPUs, duration $DURATION per run (warm-up $WARMUP), threads min(c, $MAX_THREADS)"
    echo "POST $CHAMPION_PATH (champion $champion), single-row body; shadow = version $SHADOW_VERSION at fraction 1.0${SHADOW_FLAGS:+, gateway flags: $SHADOW_FLAGS}"
    echo "latencies in µs; ratio = with shadow / without (the two runs of a row are back to back)"
    printf '%7s | %11s | %11s | %6s | %9s | %9s | %6s | %9s | %9s | %6s\n' \
        c/round 'none r/s' 'shadow r/s' ratio 'none p50' 'shad p50' ratio 'none p99' 'shad p99' ratio
    printf '%s\n' '--------+-------------+-------------+--------+-----------+-----------+--------+-----------+-----------+-------'
    for k in "${keys[@]}"; do
        awk -v k="$k" -v r0="${OFF_RPS[$k]}" -v r1="${ON_RPS[$k]}" -v a0="${OFF_P50[$k]}" \
            -v a1="${ON_P50[$k]}" -v b0="${OFF_P99[$k]}" -v b1="${ON_P99[$k]}" 'BEGIN {
            printf "%7s | %11.0f | %11.0f | %6.2f | %9.1f | %9.1f | %6.2f | %9.1f | %9.1f | %6.2f\n",
                k, r0, r1, (r0 > 0 ? r1 / r0 : 0), a0, a1, (a0 > 0 ? a1 / a0 : 0),
                b0, b1, (b0 > 0 ? b1 / b0 : 0)
        }'
    done
    echo
    echo "shadow $SHADOW_VERSION over each measured run (counters: difference of GET /admin/models/$model"
    echo "before and after the run; latencies: the gateway's window of the last 2048 comparisons, µs)"
    printf '%7s | %9s | %9s | %8s | %6s | %9s | %9s | %9s | %8s | %8s | %8s | %8s\n' \
        c/round 'wrk reqs' mirrored dropped failed timed_out compared agreement 'sh p50' 'ch p50' 'sh p99' 'ch p99'
    printf '%s\n' '--------+-----------+-----------+----------+--------+-----------+-----------+-----------+----------+----------+----------+---------'
    local mirrored dropped failed timed_out compared agreement sp50 sp99 cp50 cp99
    for k in "${keys[@]}"; do
        read -r mirrored dropped failed timed_out compared agreement sp50 sp99 cp50 cp99 <<<"${FIG[$k]}"
        printf '%7s | %9s | %9s | %8s | %6s | %9s | %9s | %9s | %8s | %8s | %8s | %8s\n' \
            "$k" "${ON_REQ[$k]}" "$mirrored" "$dropped" "$failed" "$timed_out" "$compared" \
            "$agreement" "$sp50" "$cp50" "$sp99" "$cp99"
        if ((mirrored + dropped < ON_REQ[$k])); then
            echo "   warning: $k: mirrored + dropped ($((mirrored + dropped))) < requests wrk completed (${ON_REQ[$k]})" >&2
        fi
        if ((failed + timed_out > 0)); then
            echo "   warning: $k: the shadow failed $failed and timed out $timed_out times" >&2
        fi
    done
    echo "(mirrored + dropped may exceed wrk's count by up to c: requests answered after wrk stopped reading)"
    log_problems gateway-shadow
    stop_server "$ADMIN_PID"
    ADMIN_PID=""
    echo
}

# ---------------------------------------------------------------------------------------------
# swap: time from PUT champion to the first response from the new version.
section_swap() {
    start_admin_gateway gateway-swap
    echo "== swap: $SWAPS champion swaps between versions $SWAP_VERSIONS, ${SWAP_GAP_MS} ms apart"
    if ! ADMIN_TOKEN="$ADMIN_TOKEN" "$PYTHON" benches/swap_latency.py --port "$ADMIN_PORT" \
        --model iris --versions "$SWAP_VERSIONS" --swaps "$SWAPS" --gap-ms "$SWAP_GAP_MS"; then
        echo "load.sh: the swap client failed; the gateway's log (last 20 lines):" >&2
        tail -n 20 "$WORK/gateway-swap.log" >&2 || true
        exit 1
    fi
    log_problems gateway-swap
    stop_server "$ADMIN_PID"
    ADMIN_PID=""
    echo
}

# verdict WHAT ON OFF: whether throughput with WHAT (summed req/s ON) is at least 0.90 of
# without it (OFF) at c=64 (informational).
verdict() {
    awk -v what="$1" -v on="$2" -v off="$3" 'BEGIN {
        r = (off > 0 ? on / off : 0)
        printf "%s: throughput with %s is %.2f of off at c=64 (target >= 0.90)\n",
            (r >= 0.90 ? "PASS" : "FAIL"), what, r
    }'
}

# ---------------------------------------------------------------------------------------------
# monitoring: champion throughput with request-path monitoring on (drift windows, outlier scores,
# predictions by class) vs off (`--monitoring false`; request counters and latency histograms
# stay on), alternating gateways so that drift in the machine's load hits both alike.
section_monitoring() {
    local c round mode
    local -A RPS_SUM P99_SUM
    for round in $(seq 1 "$MONITORING_ROUNDS"); do
        for mode in on off; do
            local flags=()
            [[ "$mode" == off ]] && flags=(--monitoring false)
            start_admin_gateway "gateway-monitoring-$mode-$round" "${flags[@]}"
            local url="$ADMIN_BASE$CHAMPION_PATH"
            for c in 64 8; do
                run_wrk "monitoring-$mode-warmup" "$url" "$c" "$WARMUP"
                run_wrk "monitoring-$mode" "$url" "$c" "$DURATION"
                echo "   round $round, monitoring $mode, c=$c: $RPS req/s, p50 ${P50_US} µs, p99 ${P99_US} µs"
                RPS_SUM[$mode-$c]=$(awk -v a="${RPS_SUM[$mode-$c]:-0}" -v b="$RPS" 'BEGIN { print a + b }')
                P99_SUM[$mode-$c]=$(awk -v a="${P99_SUM[$mode-$c]:-0}" -v b="$P99_US" 'BEGIN { print a + b }')
            done
            stop_server "$ADMIN_PID"
            ADMIN_PID=""
        done
    done
    echo
    echo "POST $CHAMPION_PATH, single-row body, means over $MONITORING_ROUNDS rounds of $DURATION"
    printf '%5s | %12s | %12s | %6s | %10s | %10s
' conc 'on r/s' 'off r/s' ratio 'on p99' 'off p99'
    for c in 64 8; do
        awk -v c="$c" -v on="${RPS_SUM[on-$c]}" -v off="${RPS_SUM[off-$c]}" \
            -v p_on="${P99_SUM[on-$c]}" -v p_off="${P99_SUM[off-$c]}" -v n="$MONITORING_ROUNDS" 'BEGIN {
            printf "%5d | %12.0f | %12.0f | %6.2f | %10.1f | %10.1f\n",
                c, on / n, off / n, (off > 0 ? on / off : 0), p_on / n, p_off / n
        }'
    done
    verdict "monitoring on" "${RPS_SUM[on-64]}" "${RPS_SUM[off-64]}"
    echo
}

# ---------------------------------------------------------------------------------------------
# feedback: the inference log's cost and the feedback API under load.

# feedback_script EVERY: writes a wrk script that sends the single-row inference to the champion
# route with X-Request-Id "<run>-<thread>-<n>" and notes every 10th id answered (from the
# response's X-Request-Id); when EVERY > 0, every (EVERY+1)-th request is a feedback POST
# labelling the oldest noted id not labelled yet. Labels thus follow their answers closely (most
# rows are still in the log's queue) and never precede them: with a fixed lag instead, a request
# held up on one connection can still be unanswered when its label is sent on another. The `ids`
# case runs the same script with EVERY = 0, so both pay wrk's Lua per request and per response.
# Prints its path.
feedback_script() {
    local every=$1 out="$WORK/feedback-$1.lua"
    cat >"$out" <<EOF
local every = $every
local body = '$BODY'
local infer_headers = { ["Content-Type"] = "application/json" }
local feedback_headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer $ADMIN_TOKEN" }
local threads = 0
local run, sent, inferred, answered = "run", 0, 0, 0
local noted, first, last = {}, 1, 0
function setup(thread)
    threads = threads + 1
    thread:set("thread_number", threads)
end
function init(args)
    run = (args[1] or "run") .. "-" .. thread_number
end
function request()
    sent = sent + 1
    if every > 0 and sent % (every + 1) == 0 and first <= last then
        local id = noted[first]
        noted[first] = nil
        first = first + 1
        return wrk.format("POST", "/v1/models/iris/feedback", feedback_headers,
            '{"id":"' .. id .. '","label":0}')
    end
    inferred = inferred + 1
    infer_headers["X-Request-Id"] = run .. "-" .. inferred
    return wrk.format("POST", "$CHAMPION_PATH", infer_headers, body)
end
function response(status, headers, body)
    local id = headers["x-request-id"]
    if status == 200 and id then
        answered = answered + 1
        if answered % 10 == 0 then
            last = last + 1
            noted[last] = id
        end
    end
end
EOF
    echo "$out"
}

section_feedback() {
    local c round mode
    local -A RPS_SUM P99_SUM BASE PID SCRIPT
    local modes="off on ids feedback"
    SCRIPT[off]="$WORK/post.lua" SCRIPT[on]="$WORK/post.lua"
    SCRIPT[ids]="$(feedback_script 0)" SCRIPT[feedback]="$(feedback_script 10)"
    # All four gateways run side by side (an idle one costs nothing) and the cases alternate run
    # by run, so that drift in the machine's load hits them alike.
    for mode in $modes; do
        local flags=()
        [[ "$mode" == off ]] && flags=(--inference-log false)
        start_admin_gateway "gateway-feedback-$mode" "${flags[@]}"
        BASE[$mode]="$ADMIN_BASE" PID[$mode]="$ADMIN_PID"
        GATEWAY_PID="$GATEWAY_PID $ADMIN_PID"
        ADMIN_PID=""
    done
    for round in $(seq 1 "$FEEDBACK_ROUNDS"); do
        for c in 64 8; do
            for mode in $modes; do
                local url="${BASE[$mode]}$CHAMPION_PATH"
                run_wrk "feedback-$mode-warmup" "$url" "$c" "$WARMUP" "${SCRIPT[$mode]}" "w$round$mode$c"
                run_wrk "feedback-$mode" "$url" "$c" "$DURATION" "${SCRIPT[$mode]}" "m$round$mode$c"
                # With feedback, 1 request in 11 is a label: count inferences only.
                if [[ "$mode" == feedback ]]; then
                    RPS="$(awk -v r="$RPS" 'BEGIN { printf "%.0f", r * 10 / 11 }')"
                fi
                echo "   round $round, $mode, c=$c: $RPS inferences/s, p50 ${P50_US} µs, p99 ${P99_US} µs"
                RPS_SUM[$mode-$c]=$(awk -v a="${RPS_SUM[$mode-$c]:-0}" -v b="$RPS" 'BEGIN { print a + b }')
                P99_SUM[$mode-$c]=$(awk -v a="${P99_SUM[$mode-$c]:-0}" -v b="$P99_US" 'BEGIN { print a + b }')
            done
        done
    done
    ADMIN_BASE="${BASE[feedback]}"
    admin GET /admin/models/iris/quality "$WORK/quality.json"
    echo "   labels scored for the champion: $(json "$WORK/quality.json" \
        "[v['labelled'] for v in d['versions'] if v['role'] == 'champion'][0]")"
    for mode in $modes; do
        log_problems "gateway-feedback-$mode"
        stop_server "${PID[$mode]}"
    done
    echo
    echo "POST $CHAMPION_PATH, single-row body, means over $FEEDBACK_ROUNDS rounds of $DURATION;"
    echo "ids = a client X-Request-Id per request (wrk's Lua request(), as in feedback);"
    echo "fb = ids + a label for 10% of the inferences (inferences/s shown)"
    printf '%5s | %9s | %9s | %9s | %9s | %7s | %7s | %7s | %8s\n' conc 'off r/s' 'on r/s' \
        'ids r/s' 'fb r/s' 'on/off' 'fb/off' 'fb/ids' 'fb p99'
    for c in 64 8; do
        awk -v c="$c" -v off="${RPS_SUM[off-$c]}" -v on="${RPS_SUM[on-$c]}" -v ids="${RPS_SUM[ids-$c]}" \
            -v fb="${RPS_SUM[feedback-$c]}" -v p99="${P99_SUM[feedback-$c]}" -v n="$FEEDBACK_ROUNDS" 'BEGIN {
            printf "%5d | %9.0f | %9.0f | %9.0f | %9.0f | %7.2f | %7.2f | %7.2f | %8.1f\n",
                c, off / n, on / n, ids / n, fb / n, on / off, fb / off, fb / ids, p99 / n
        }'
    done
    verdict "the inference log on" "${RPS_SUM[on-64]}" "${RPS_SUM[off-64]}"
    echo

    echo "== feedback batches: $FEEDBACK_BATCHES of 1,000 items, idle gateway, then under wrk c=8"
    start_admin_gateway gateway-feedback-batches
    "$PYTHON" benches/feedback_batch.py --port "$ADMIN_PORT" --token "$ADMIN_TOKEN" \
        --batches "$FEEDBACK_BATCHES" --prefix idle | sed 's/^/   idle: /'
    wrk -t 2 -c 8 -d 600s -s "$WORK/post.lua" "$ADMIN_BASE$CHAMPION_PATH" \
        >"$WORK/wrk-feedback-batches-load.txt" 2>&1 &
    local load_pid=$!
    sleep 1
    "$PYTHON" benches/feedback_batch.py --port "$ADMIN_PORT" --token "$ADMIN_TOKEN" \
        --batches "$FEEDBACK_BATCHES" --prefix loaded | sed 's/^/   under load: /'
    kill "$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
    log_problems gateway-feedback-batches
    stop_server "$ADMIN_PID"
    ADMIN_PID=""
    echo
}

if want baseline; then
    busy_note "before the section"
    section_baseline
fi
if want shadow; then
    busy_note "before the section"
    section_shadow
fi
if want swap; then
    busy_note "before the section"
    section_swap
fi
if want monitoring; then
    busy_note "before the section"
    section_monitoring
fi
if want feedback; then
    busy_note "before the section"
    section_feedback
fi
echo "== done: $SECTIONS"
