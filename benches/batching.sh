#!/usr/bin/env bash
# Dynamic batching on and off, side by side: the heavy MLP of benches/heavy_model.py
# (30 -> 512 -> 512 -> 2) served twice by one gateway, `heavy_plain` and `heavy_batched`, each
# under wrk at several concurrencies with single-row v2 JSON requests, alternating per
# concurrency. Prints requests/s and p50/p99 per case and the batched/plain ratio.
#
# Variables: DURATION (10s), CONCURRENCY ("1 8 64"), MAX_ROWS (64), DELAY_US (200),
#            HIDDEN (the MLP's hidden layers, "512,512"),
#            PYTHON (./.venv/bin/python), VIGIL_BIN (target/release/vigil, built if missing).
set -euo pipefail
# The gateways measured here serve HTTP only (an older baseline binary ignores the variable).
export VIGIL_GRPC_ADDR=off
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONCURRENCY="${CONCURRENCY:-1 8 64}"
MAX_ROWS="${MAX_ROWS:-64}"
DELAY_US="${DELAY_US:-200}"
HIDDEN="${HIDDEN:-512,512}"
PYTHON="${PYTHON:-./.venv/bin/python}"
VIGIL_BIN="${VIGIL_BIN:-target/release/vigil}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
[[ -x "$VIGIL_BIN" ]] || cargo build --release --quiet
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$PYTHON" benches/heavy_model.py "$WORK/models" "$MAX_ROWS" "$DELAY_US" "$HIDDEN"
PORT=$((20000 + RANDOM % 20000))
# Closed-loop clients at c=64 keep 64 requests in the gateway: a deep queue measures throughput
# instead of the default queue's 429s (benches/soak.sh measures shedding).
"$VIGIL_BIN" serve --models "$WORK/models" --state "$WORK/state" --addr "127.0.0.1:$PORT" \
    --inference-log false --max-queue 4096 >"$WORK/vigil.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/v2/health/ready" >/dev/null && break; sleep 0.2; done
row="$(python3 -c 'print(",".join(["0.5"]*30))')"
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[$row]}]}'
LUA
# One request first: the model answers, and its cost per call is in the log.
curl -sf -H 'Content-Type: application/json' -d "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/post.lua")" \
    "127.0.0.1:$PORT/v2/models/heavy_plain/infer" >/dev/null
grep -o 'model=heavy_plain.*per_row_us=[0-9.]*' "$WORK/vigil.log" | sed 's/\x1b\[[0-9;]*m//g' || true
measure() { # model concurrency -> "rps p50_us p99_us"
    wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"$DURATION" --latency -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v2/models/$1/infer" \
        | awk '/Requests\/sec/ {rps=$2}
               /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
               function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; return (v+0)*1e6 }
               END {printf "%d %.0f %.0f\n", rps, us(p50), us(p99)}'
}
printf '%5s | %12s %8s %8s | %12s %8s %8s | %6s\n' conc "plain r/s" p50µs p99µs "batched r/s" p50µs p99µs ratio
for c in $CONCURRENCY; do
    read -r prps pp50 pp99 <<<"$(measure heavy_plain "$c")"
    read -r brps bp50 bp99 <<<"$(measure heavy_batched "$c")"
    printf '%5s | %12s %8s %8s | %12s %8s %8s | %6.2f\n' "$c" "$prps" "$pp50" "$pp99" "$brps" "$bp50" "$bp99" \
        "$(awk -v b="$brps" -v p="$prps" 'BEGIN {print b/p}')"
done
echo "batches: $(curl -s "127.0.0.1:$PORT/metrics" | awk '/^vigil_batches_total/ {s+=$2} END {print s}'), requests batched: $(curl -s "127.0.0.1:$PORT/metrics" | awk '/^vigil_batched_requests_total/ {s+=$2} END {print s}')"
