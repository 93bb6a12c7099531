# Shared by the benchmark scripts (sourced): messages, the process guard that kills whatever a
# script started when it exits, and waiting for a DICOM peer to answer.
# Needs HOST set by the caller.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# --- processes: everything started here is killed on exit --------------------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# wait_ready AE PORT URL PID LOG: until the peer answers C-ECHO and, when URL is not empty,
# that URL over HTTP (fail if it dies first)
wait_ready() {
    local i
    for i in $(seq 1 300); do
        if /usr/bin/echoscu -aec "$1" "$HOST" "$2" >/dev/null 2>&1 \
            && { [ -z "$3" ] || curl -sf -o /dev/null "$3"; }; then
            return 0
        fi
        kill -0 "$4" 2>/dev/null || { tail -20 "$5" >&2; die "$1 exited before answering (log: $5)"; }
        sleep 0.1
    done
    tail -20 "$5" >&2
    die "$1 did not answer on port $2${3:+ and $3} within 30 s"
}
