#!/usr/bin/env bash
# Replicas sharing PostgreSQL, measured on this machine (not part of CI):
#
# throughput  one gateway with the embedded stores (files + SQLite under --state) against one with
#             --database-url (deployments, inference log and feedback in PostgreSQL), alternated
#             $ROUNDS times in the same run: wrk -t2 -c$CONNECTIONS for $DURATION on single-row iris
#             v2 requests to version 1, inference log on; prints req/s and p50/p99 of each.
# follow      two replicas on the database: benches/swap_latency.py swaps iris's champion $SWAPS
#             times through replica A while its client sends requests to replica B, and prints how
#             long after each PUT B answered with the new champion.
#
# PostgreSQL is Debian's server (`apt-get install postgresql`), initdb'ed into a temporary
# directory and run as the `postgres` user on a free loopback port; stopped by PID at the end.
#
# Environment: DURATION [10s], CONNECTIONS [64], ROUNDS [2], SWAPS [50], VIGIL_BIN
# [target/release/vigil]. Usage: bash benches/replicas.sh
set -euo pipefail
# The gateways measured here serve HTTP only (an older baseline binary ignores the variable).
export VIGIL_GRPC_ADDR=off
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
ROUNDS="${ROUNDS:-2}"
SWAPS="${SWAPS:-50}"
VIGIL_BIN="${VIGIL_BIN:-target/release/vigil}"
TOKEN=bench-token
WORK="$(mktemp -d)"
chmod 755 "$WORK" # the postgres user must reach its data directory inside
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

die() { echo "replicas.sh: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk is missing: apt-get install wrk"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL is missing: apt-get install postgresql"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
as_owner() { if [[ "$(id -u)" == 0 ]]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }

echo "== building (release)"
cargo build --release --bin vigil

echo "== PostgreSQL"
mkdir -p "$WORK/pg"
[[ "$(id -u)" == 0 ]] && chown postgres:postgres "$WORK/pg"
as_owner "$PG_BIN/initdb" -D "$WORK/pg/data" -U vigil --auth=trust -E UTF8 >/dev/null
PG_PORT="$(free_port)"
as_owner "$PG_BIN/postgres" -D "$WORK/pg/data" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
    -c "unix_socket_directories=$WORK/pg" >"$WORK/postgres.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q && break; sleep 0.1; done
"$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U vigil -d postgres -qc "CREATE DATABASE vigil"
DATABASE="postgres://vigil@127.0.0.1:$PG_PORT/vigil"
"$PG_BIN/psql" -V

# start NAME ARGS...: a gateway on a free port; sets PORT and PID.
start() {
    local name=$1; shift
    PORT="$(free_port)"
    mkdir -p "$WORK/$name"
    "$VIGIL_BIN" serve --models models --state "$WORK/$name" --addr "127.0.0.1:$PORT" \
        --admin-token "$TOKEN" "$@" >"$WORK/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/health/ready")" == 200 ]] && return
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/$name.log"; die "$name exited"; }
        sleep 0.1
    done
    die "$name did not become ready"
}

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
wrk.headers["Content-Type"] = "application/json"
LUA

echo "== throughput: embedded stores vs PostgreSQL (c=$CONNECTIONS, $DURATION, $ROUNDS rounds)"
printf '%-10s %-6s %10s %10s %10s\n' store round "req/s" "p50" "p99"
for round in $(seq 1 "$ROUNDS"); do
    for store in embedded postgres; do
        if [[ $store == postgres ]]; then start "$store-$round" --database-url "$DATABASE"; else start "$store-$round"; fi
        url="http://127.0.0.1:$PORT/v2/models/iris/versions/1/infer"
        wrk -t2 -c"$CONNECTIONS" -d2s -s "$WORK/post.lua" "$url" >/dev/null
        out="$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/post.lua" "$url")"
        rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
        p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
        p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
        grep -q "Non-2xx" <<<"$out" && die "non-2xx answers: $out"
        printf '%-10s %-6s %10s %10s %10s\n' "$store" "$round" "$rps" "$p50" "$p99"
        kill "$PID"; wait "$PID" 2>/dev/null || true
    done
done

echo "== follow: a champion change on replica A served by replica B ($SWAPS swaps)"
start replica-a --database-url "$DATABASE"
PORT_A=$PORT
start replica-b --database-url "$DATABASE"
PORT_B=$PORT
ADMIN_TOKEN="$TOKEN" python3 benches/swap_latency.py --port "$PORT_A" --client-port "$PORT_B" \
    --swaps "$SWAPS" --versions 1,3
