# Shell helpers of the load scripts (sourced by benches/load.sh and benches/grpc.sh; each defines
# its own `die`).

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

# busy_note WHEN: how busy the machine was over the last second, from /proc/stat (other
# processes skew every figure), e.g. `busy_note "before the runs"`.
busy_note() {
    [[ -r /proc/stat ]] || return 0
    local -a a b
    read -r -a a </proc/stat
    sleep 1
    read -r -a b </proc/stat
    local busy=$(((b[1] + b[2] + b[3] + b[6] + b[7]) - (a[1] + a[2] + a[3] + a[6] + a[7])))
    local idle=$(((b[4] + b[5]) - (a[4] + a[5])))
    if ((busy + idle > 0)); then
        echo "   machine busy $1: $((100 * busy / (busy + idle)))% of $(nproc) CPUs over 1 s"
    fi
}
