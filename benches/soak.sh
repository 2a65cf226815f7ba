#!/usr/bin/env bash
# Soak and overload: one gateway (monitoring and inference log on, default admission settings,
# plus `--shed-delay-ms $SHED_DELAY_MS`) under the open-loop generator of benches/open_loop.rs,
# which sends on a fixed schedule whatever the server's speed, counts waiting for a busy
# connection in the latency, and opens more connections (up to GROW_TO) when none is idle, as
# independent clients would.
#
#   1. capacity: the generator offers 3× what wrk measured (CAPACITY_SECS, a fixed pool of
#      CONNECTIONS, no growth); 2xx answers per second, with the generator's own CPU cost in it;
#   2. unloaded: UNLOADED_SECS at 10% of capacity, the p99 every later figure is compared to;
#   3. soak: SOAK_SECS at 70% of capacity, RSS sampled every 10 s; after WARMUP_SECS every sample
#      must be within ±5% of the first, and every minute's p99 within 2× of their median;
#   4. overload: OVERLOAD_SECS at 2× capacity, then RECOVERY_SECS at 50%, in 250 ms intervals:
#      no answers other than 2xx/429/503 and no transport errors, admitted (2xx) p99 ≤ 5× the
#      unloaded p99, and back to normal (no refusals, interval p99 ≤ 2× unloaded p99, for every
#      later interval) within 2 s of the overload's end.
#
# Not part of CI: about 14 minutes with the defaults. Prints the figures and PASS/FAIL lines; exits
# non-zero only when something fails to run.
#
# Variables: SOAK_SECS (600), WARMUP_SECS (60), OVERLOAD_SECS (60), RECOVERY_SECS (10),
#   CAPACITY_SECS (10), UNLOADED_SECS (20), CONNECTIONS (64), GROW_TO (4096), SHED_DELAY_MS (2;
#   0 = no shedding), MODEL (heavy_plain: the 30→512→512→2 MLP of benches/heavy_model.py,
#   generated into a temporary repository; any other name is served from MODELS), MODELS
#   (models), BODY (the request; default one row of 0.5 for the MLP), PYTHON
#   (./.venv/bin/python), VIGIL_FLAGS (extra serve flags).
set -euo pipefail
# The gateways measured here serve HTTP only (an older baseline binary ignores the variable).
export VIGIL_GRPC_ADDR=off
cd "$(dirname "$0")/.."
SOAK_SECS="${SOAK_SECS:-600}"
WARMUP_SECS="${WARMUP_SECS:-60}"
OVERLOAD_SECS="${OVERLOAD_SECS:-60}"
RECOVERY_SECS="${RECOVERY_SECS:-10}"
CAPACITY_SECS="${CAPACITY_SECS:-10}"
UNLOADED_SECS="${UNLOADED_SECS:-20}"
CONNECTIONS="${CONNECTIONS:-64}"
GROW_TO="${GROW_TO:-4096}"
SHED_DELAY_MS="${SHED_DELAY_MS:-2}"
MODEL="${MODEL:-heavy_plain}"
MODELS="${MODELS:-models}"
PYTHON="${PYTHON:-./.venv/bin/python}"
VIGIL_FLAGS="${VIGIL_FLAGS:-}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 1; }
cargo build --release --quiet --bin vigil --example open_loop
WORK="$(mktemp -d)"
PID=""
SAMPLER=""
GENERATOR=""
cleanup() {
    [[ -n "$GENERATOR" ]] && kill "$GENERATOR" 2>/dev/null || true
    [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null || true
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
if [[ "$MODEL" == heavy_plain ]]; then
    "$PYTHON" benches/heavy_model.py "$WORK/models" 64 200 >/dev/null
    MODELS="$WORK/models"
    [[ -n "${BODY:-}" ]] || BODY="$(python3 -c 'import json; print(json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 30}]}))')"
fi
[[ -n "${BODY:-}" ]] || { echo "BODY is needed for MODEL=$MODEL" >&2; exit 1; }
printf '%s' "$BODY" >"$WORK/body.json"
PORT=$((20000 + RANDOM % 20000))
# shellcheck disable=SC2086
target/release/vigil serve --models "$MODELS" --state "$WORK/state" --addr "127.0.0.1:$PORT" \
    --shed-delay-ms "$SHED_DELAY_MS" $VIGIL_FLAGS >"$WORK/vigil.log" 2>&1 &
PID=$!
for _ in $(seq 300); do curl -sf "127.0.0.1:$PORT/v2/health/ready" >/dev/null && break; sleep 0.2; done
URL="http://127.0.0.1:$PORT/v2/models/$MODEL/infer"
status="$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "@$WORK/body.json" "$URL")"
[[ "$status" == 200 ]] || { echo "the request answers $status, not 200" >&2; exit 1; }
cat >"$WORK/post.lua" <<'LUA'
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = f:read("*a")
f:close()
LUA
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
open_loop() { # phases... -> JSON lines
    local args=()
    for phase in "$@"; do args+=(--phase "$phase"); done
    target/release/examples/open_loop --addr "127.0.0.1:$PORT" --path "/v2/models/$MODEL/infer" \
        --body-file "$WORK/body.json" --connections "$CONNECTIONS" --grow-to "$GROW_TO" \
        "${args[@]}" ${INTERVAL_MS:+--interval-ms "$INTERVAL_MS"}
}

echo "== capacity: wrk -c$CONNECTIONS for ${CAPACITY_SECS}s on $MODEL, then the generator at 3× that"
BODY_FILE="$WORK/body.json" wrk -t2 -c"$CONNECTIONS" -d"${CAPACITY_SECS}s" -s "$WORK/post.lua" "$URL" >"$WORK/capacity.txt"
WRK_CAPACITY="$(awk '/requests in/ {n=$1} /Non-2xx/ {bad=$5} END {printf "%d", (n-bad)/'"$CAPACITY_SECS"'}' "$WORK/capacity.txt")"
served() { curl -s "127.0.0.1:$PORT/metrics" | awk '/^vigil_requests_total\{/ && /model="'"$MODEL"'"/ && /status="2xx"/ {s+=$2} END {printf "%d", s}'; }
# The binary itself in the background (not the shell function), so that its PID is the one killed.
target/release/examples/open_loop --addr "127.0.0.1:$PORT" --path "/v2/models/$MODEL/infer" \
    --body-file "$WORK/body.json" --connections "$CONNECTIONS" \
    --phase "$((3 * WRK_CAPACITY)):$((CAPACITY_SECS + 5))" >/dev/null 2>&1 &
GENERATOR=$!
sleep 3
before="$(served)"
sleep "$CAPACITY_SECS"
after="$(served)"
kill "$GENERATOR" 2>/dev/null || true
wait "$GENERATOR" 2>/dev/null || true
GENERATOR=""
CAPACITY=$(( (after - before) / CAPACITY_SECS ))
echo "   wrk: $WRK_CAPACITY answers/s (2xx); with the generator: $CAPACITY answers/s (2xx), used as capacity"
rate() { awk -v c="$CAPACITY" -v f="$1" 'BEGIN {printf "%d", c*f}'; }
# Let the capacity run's backlog finish before measuring anything else.
sleep 5
echo "== unloaded: $(rate 0.1)/s for ${UNLOADED_SECS}s"
open_loop "$(rate 0.1):2" "$(rate 0.1):$UNLOADED_SECS" >"$WORK/unloaded.jsonl"  # the first 2 s open the connections

echo "== soak: $(rate 0.7)/s for ${SOAK_SECS}s (RSS every 10 s)"
( while sleep 10; do echo "$(date +%s) $(rss_kib)"; done ) >"$WORK/rss.txt" &
SAMPLER=$!
INTERVAL_MS=60000 open_loop "$(rate 0.7):$SOAK_SECS" >"$WORK/soak.jsonl"
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=""

echo "== overload: $(rate 2)/s for ${OVERLOAD_SECS}s, then $(rate 0.5)/s for ${RECOVERY_SECS}s"
INTERVAL_MS=250 open_loop "$(rate 2):$OVERLOAD_SECS" "$(rate 0.5):$RECOVERY_SECS" >"$WORK/overload.jsonl"
curl -s "127.0.0.1:$PORT/metrics" | grep -E '^vigil_(admission|requests_refused|requests_total).*model="'"$MODEL"'"' >"$WORK/metrics.txt" || true

python3 - "$WORK" "$WARMUP_SECS" "$OVERLOAD_SECS" <<'PY'
import json, statistics, sys
work, warmup, overload_secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def lines(name):
    return [json.loads(l) for l in open(f"{work}/{name}") if l.strip()]
def phases(rows): return [r for r in rows if "phase" in r]
def intervals(rows): return [r for r in rows if "interval" in r]
unloaded = phases(lines("unloaded.jsonl"))[-1]
base_p99 = unloaded["p99_us"]
print(f"\nunloaded: {unloaded['sent']} sent, p50 {unloaded['p50_us']} µs, p99 {base_p99} µs")

soak = lines("soak.jsonl")
whole = phases(soak)[0]
print(f"soak: {whole['sent']} sent, {whole['ok']} ok, 429 {whole['s429']}, 503 {whole['s503']}, "
      f"other {whole['other']}, errors {whole['errors']}, p50 {whole['p50_us']} µs, p99 {whole['p99_us']} µs")
# Whole minutes only: the last interval holds the few requests released at the very end.
full = max((r["sent"] for r in intervals(soak)), default=0)
minutes = [r for r in intervals(soak) if r["t"] >= warmup and r["sent"] >= full / 2]
p99s = [r["p99_us"] for r in minutes]
for r in minutes:
    print(f"   minute {int(r['t'] // 60) + 1}: sent {r['sent']}, p50 {r['p50_us']} µs, p99 {r['p99_us']} µs")
rss = [tuple(map(int, l.split())) for l in open(f"{work}/rss.txt") if len(l.split()) == 2]
start = rss[0][0] if rss else 0
after = [kib for t, kib in rss if t - start >= warmup - 10]
if after:
    first = after[0]
    worst = max(abs(k / first - 1) for k in after)
    print(f"   RSS after warm-up: first {first / 1024:.1f} MiB, min {min(after) / 1024:.1f}, "
          f"max {max(after) / 1024:.1f}, last {after[-1] / 1024:.1f} MiB (largest change {100 * worst:.1f}%)")
    print(("PASS" if worst <= 0.05 else "FAIL") + f": RSS within ±5% after warm-up ({100 * worst:.1f}%)")
if p99s:
    median = statistics.median(p99s)
    spread = max(p99s) / median if median else float("inf")
    print(("PASS" if spread <= 2 and min(p99s) >= median / 2 else "FAIL")
          + f": soak p99 stable (per-minute p99 {min(p99s)}–{max(p99s)} µs, median {median:.0f})")

over = lines("overload.jsonl")
peak, recovery = phases(over)
print(f"\noverload: {peak['sent']} sent at {peak['rate']}/s: {peak['ok']} ok, 429 {peak['s429']}, "
      f"503 {peak['s503']}, other {peak['other']}, errors {peak['errors']}; "
      f"admitted p50 {peak['p50_us']} µs, p99 {peak['p99_us']} µs, max {peak['max_us']} µs")
bad = peak["other"] + peak["errors"] + recovery["other"] + recovery["errors"]
print(("PASS" if bad == 0 else "FAIL") + f": no answers but 2xx/429/503, no transport errors ({bad})")
ratio = peak["p99_us"] / base_p99 if base_p99 else float("inf")
print(("PASS" if ratio <= 5 else "FAIL") + f": admitted p99 {ratio:.1f}× the unloaded p99 (target ≤ 5×)")
normal = lambda r: r["s429"] + r["s503"] + r["other"] + r["errors"] == 0 and r["p99_us"] <= 2 * base_p99
after_end = [r for r in intervals(over) if r["t"] >= overload_secs]
back = None
for i, r in enumerate(after_end):
    if all(normal(x) for x in after_end[i:]):
        back = r["t"] - overload_secs
        break
for r in after_end[:12]:
    print(f"   t={r['t'] - overload_secs:+.2f}s: sent {r['sent']}, ok {r['ok']}, 429 {r['s429']}, 503 {r['s503']}, p99 {r['p99_us']} µs")
if back is None:
    print("FAIL: not back to normal before the run ended")
else:
    print(("PASS" if back <= 2 else "FAIL") + f": back to normal {back:.2f} s after the overload (target ≤ 2 s)")
PY
echo "gateway counters after the run:"
cat "$WORK/metrics.txt"
