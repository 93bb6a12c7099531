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

# The beeldbrug binary under test: $BB_BIN (described by $BB_LABEL) or a release build of this
# checkout, copied to $BENCH_DIR/beeldbrug so that a rebuild of the checkout during the run
# changes nothing. Sets BB and BB_VERSION (what it was built from, and its sha256).
prepare_beeldbrug() {
    BB=$BENCH_DIR/beeldbrug
    if [ -n "${BB_BIN:-}" ]; then
        [ -x "$BB_BIN" ] || die "BB_BIN=$BB_BIN is not an executable"
        BB_VERSION="binary $BB_BIN${BB_LABEL:+ ($BB_LABEL)}"
    else
        log "building beeldbrug (release)"
        (cd "$ROOT" && cargo build --release --quiet)
        BB_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/beeldbrug
        [ -x "$BB_BIN" ] || die "no release binary at $BB_BIN"
        BB_VERSION="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes in src/')"
    fi
    cp "$BB_BIN" "$BB.tmp" && mv "$BB.tmp" "$BB"
    BB_VERSION="$BB_VERSION, sha256 $(sha256sum "$BB" | cut -c1-12)"
}
