#!/usr/bin/env bash
# Bounded load test (issue 16, "Load"; not a timed test): CLIENTS concurrent DICOMweb clients
# (QIDO-RS, WADO-RS of a study, metadata, rendered; one in ten a slow reader, one in ten
# vanishing mid-stream) and ASSOCS DIMSE associations (DCMTK storescu re-sending a study,
# getscu retrieving one) for LOAD_SECONDS, driven by benches/load.rs, against
#   1. one node on the embedded defaults (SQLite, filesystem), and
#   2. three nodes on one PostgreSQL database and one S3 bucket (moto's server), the clients
#      round robin over them,
# then SETTLE seconds without load. Reports per request kind the count, errors (5xx or a cut
# answer to a well-formed request, a failed DCMTK run) and p50/p99, and per node VmRSS and open
# descriptors idle, at peak and after. Each phase runs once per allocator setting in MALLOCS.
#
# Usage: benches/load.sh   (run it in a network namespace: unshare -n bash -c 'ip link set lo up; benches/load.sh')
# Environment (defaults in brackets):
#   BENCH_DIR [/tmp/beeldbrug-load]   data, logs, report (BENCH_DIR/report.md)
#   CLIENTS [200] ASSOCS [20] LOAD_SECONDS [120] SETTLE [15]
#   PHASES ["one three"]   which of the two phases run
#   MALLOCS ["default"]    the allocator settings to compare, one run of each phase per entry:
#                          default: the binary as built (its global allocator, see src/main.rs);
#                          arena2: the same with MALLOC_ARENA_MAX=2 (matters for glibc malloc only);
#                          NAME=BINARY: another beeldbrug binary, e.g. one built with another
#                          global allocator (glibc=/tmp/bb-glibc jemalloc=/tmp/bb-jemalloc)
#   STUDIES [6]            generated studies (CT of CT_SLICES slices, MR of MR_SLICES) loaded first
#   CT_SLICES [40] MR_SLICES [20]
#   PG_SOCKET [/var/run/postgresql]   PostgreSQL for phase 2, by its socket directory (the
#                          network namespace has no 127.0.0.1:5432); user postgres, trust
#                          auth; database bb_load, recreated
#   BB_BIN [unset]         a beeldbrug binary instead of a release build of this checkout
#   LOAD_DRIVER [unset]    a built load driver (benches/load.rs) instead of `cargo bench --no-run`
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-load}
CLIENTS=${CLIENTS:-200}
ASSOCS=${ASSOCS:-20}
SECONDS_LOAD=${LOAD_SECONDS:-120}
SETTLE=${SETTLE:-15}
PHASES=${PHASES:-one three}
MALLOCS=${MALLOCS:-default}
STUDIES=${STUDIES:-6}
CT_SLICES=${CT_SLICES:-40}
MR_SLICES=${MR_SLICES:-20}
PG_SOCKET=${PG_SOCKET:-/var/run/postgresql}
pg_url() { echo "postgres:///$1?host=$PG_SOCKET&user=postgres"; }
HOST=127.0.0.1
# shellcheck source=lib.sh
source "$ROOT/benches/lib.sh"

for tool in storescu getscu echoscu; do
    [ -x "/usr/bin/$tool" ] || die "DCMTK $tool missing: apt-get install -y dcmtk"
done
mkdir -p "$BENCH_DIR"
prepare_beeldbrug
if [ -n "${LOAD_DRIVER:-}" ]; then
    DRIVER=$LOAD_DRIVER
else
log "building the load driver (cargo bench --bench load --no-run)"
DRIVER=$(cd "$ROOT" && cargo bench --bench load --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "load" and m.get("executable"):
        print(m["executable"])')
fi
[ -x "$DRIVER" ] || die "no load driver built"

INPUT=$BENCH_DIR/input
if [ ! -f "$INPUT.complete" ]; then
    rm -rf "$INPUT"
    "$BB" generate -o "$INPUT" --seed 7 --patients "$STUDIES" --ct-slices "$CT_SLICES" --mr-slices "$MR_SLICES" >/dev/null
    touch "$INPUT.complete"
fi
# What storescu re-sends: the first study's files.
# (input/<patient>/<study>/<series>/<files>; `|| true`: head closes the pipe early)
RESEND=$( (find "$INPUT" -mindepth 2 -maxdepth 2 -type d | sort | head -1) || true)
[ -d "$RESEND" ] || die "no study directory in $INPUT"

REPORT=$BENCH_DIR/report.md
{
    echo "## beeldbrug load test, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ { print $2 }') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg) at the start. Binary: $BB_VERSION."
    echo "Data: $(find "$INPUT" -name '*.dcm' | wc -l) instances in $(( STUDIES * 2 )) studies ($(du -sm "$INPUT" | cut -f1) MB); storescu re-sends $RESEND."
    echo
} >"$REPORT"

# node N DIR EXTRA_TOML: start node N (ports 1180N DIMSE, 1190N HTTP); sets PID
node() {
    local n=$1 dir=$2
    mkdir -p "$dir"
    cat >"$dir/beeldbrug.toml" <<EOF
[dimse]
ae_title = "BEELDBRUG"
listen = "$HOST:1180$n"
# every client of this test comes from 127.0.0.1: the per-address cap (16 by default) would
# refuse a part of the ASSOCS associations as "local limit exceeded"
max_associations_per_address = 64

[http]
listen = "$HOST:1190$n"

[storage]
data_dir = "$dir/data"
$3
EOF
    env ${MALLOC_ENV:-} BEELDBRUG_LOG=warn "$NODE_BIN" serve -c "$dir/beeldbrug.toml" >>"$dir/beeldbrug.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_ready BEELDBRUG "1180$n" "http://$HOST:1190$n/health" "$PID" "$dir/beeldbrug.log"
}

drive() {
    local label=$1
    shift
    log "$label: $CLIENTS clients, $ASSOCS associations, $SECONDS_LOAD s"
    {
        echo "### $label"
        echo
        "$DRIVER" --clients "$CLIENTS" --assocs "$ASSOCS" --store-dir "$RESEND" \
            --seconds "$SECONDS_LOAD" --settle "$SETTLE" "$@"
        echo
    } | tee -a "$REPORT"
}

for malloc in $MALLOCS; do
    NODE_BIN=$BB
    case $malloc in
        default) MALLOC_ENV="" ;;
        arena2) MALLOC_ENV="MALLOC_ARENA_MAX=2" ;;
        *=*)
            MALLOC_ENV=""
            NODE_BIN=${malloc#*=}
            malloc=${malloc%%=*}
            [ -x "$NODE_BIN" ] || die "MALLOCS entry $malloc: $NODE_BIN is not executable"
            ;;
        *) die "unknown MALLOCS entry $malloc" ;;
    esac
    for phase in $PHASES; do
        run=$BENCH_DIR/run-$phase-$malloc
        rm -rf "$run"
        case $phase in
            one)
                node 1 "$run/node1" ""
                n1=$PID
                /usr/bin/storescu -aet LOAD -aec BEELDBRUG +sd +r +sp '*.dcm' "$HOST" 11801 "$INPUT" >/dev/null 2>&1 \
                    || die "loading the studies into node 1 failed"
                sleep 5
                drive "one node (SQLite, filesystem), $malloc" --url "http://$HOST:11901" --pid "$n1" \
                    --dimse "$HOST:11801"
                stop "$n1"
                ;;
            three)
                psql "$(pg_url postgres)" -qc "DROP DATABASE IF EXISTS bb_load" -c "CREATE DATABASE bb_load" >/dev/null
                mkdir -p "$run/moto"
                (cd "$run/moto" && exec python3 -m moto.server -H "$HOST" -p 11999 >moto.log 2>&1) &
                MOTO=$!
                PIDS+=("$MOTO")
                for _ in $(seq 1 100); do curl -sf -o /dev/null "http://$HOST:11999/" && break; sleep 0.2; done
                curl -sf -X PUT "http://$HOST:11999/bb-load" >/dev/null || die "CreateBucket failed"
                shared="index = \"$(pg_url bb_load)\"
blobs = \"s3://bb-load/images\"

[storage.s3]
endpoint = \"http://$HOST:11999\"
region = \"us-east-1\"
access_key_id = \"test\"
secret_access_key = \"test\"
allow_http = true"
                node 1 "$run/node1" "$shared"
                n1=$PID
                node 2 "$run/node2" "$shared"
                n2=$PID
                node 3 "$run/node3" "$shared"
                n3=$PID
                /usr/bin/storescu -aet LOAD -aec BEELDBRUG +sd +r +sp '*.dcm' "$HOST" 11801 "$INPUT" >/dev/null 2>&1 \
                    || die "loading the studies into node 1 failed"
                sleep 5
                drive "three nodes (PostgreSQL, S3), $malloc" \
                    --url "http://$HOST:11901" --url "http://$HOST:11902" --url "http://$HOST:11903" \
                    --pid "$n1" --pid "$n2" --pid "$n3" \
                    --dimse "$HOST:11801" --dimse "$HOST:11802" --dimse "$HOST:11803"
                stop "$n1"; stop "$n2"; stop "$n3"; stop "$MOTO"
                psql "$(pg_url postgres)" -qc "DROP DATABASE IF EXISTS bb_load" >/dev/null || true
                ;;
            *) die "unknown phase $phase" ;;
        esac
    done
done
log "report written to $REPORT"
