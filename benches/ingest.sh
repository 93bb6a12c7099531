#!/usr/bin/env bash
# Ingest benchmark (issue 16 section 5): send one generated CT study with DCMTK storescu to
#   (a) beeldbrug serve (release build), (b) DCMTK storescp (writing to disk; --fork, one
#   process per association), (c) Orthanc (default SQLite index),
# over one association and over ASSOCS concurrent associations (the files dealt out in turn),
# REPS times each (a fresh, empty store for every run, targets interleaved), and report the
# median instances/s and MB/s per target and mode. Part 1b: STOW-RS of the same study into
# beeldbrug and into Orthanc with its DICOMweb plugin (benches/dicomweb_bench.py stow,
# STOW_BATCH instances per request), STOW_REPS runs each. Part 2 measures beeldbrug's peak
# RSS (VmHWM) while it receives one multi-frame instance of >= 2 GB, against its idle RSS.
#
# Usage: benches/ingest.sh            (see benches/README.md)
# Environment (defaults in brackets):
#   BENCH_DIR [/tmp/beeldbrug-bench]  inputs, stores and logs
#   CT_SLICES [200]   slices of the CT study (512x512x16 bit, ~0.5 MB each: ~100 MB)
#   REPS      [5]     runs per target and mode
#   ASSOCS    [4]     concurrent associations of the second mode
#   STOW_REPS [3] STOW_BATCH [50]   STOW-RS runs per server, instances per request
#   SKIP_STOW [0]     1 skips part 1b
#   SKIP_LARGE [0]    1 skips part 2
#   MF_FRAMES [1024] MF_SIZE [1024]   part 2 instance: frames of MF_SIZE^2 16-bit pixels
#   PDU       [131072]  max PDU every receiver announces (DCMTK and Orthanc max out here)
#   BB_PORT [11300] BB_HTTP_PORT [11301] STORESCP_PORT [11302]
#   ORTHANC_PORT [11303] ORTHANC_HTTP_PORT [11304]      all on 127.0.0.1
#   ORTHANC [/usr/sbin/Orthanc]   CARGO_TARGET_DIR [<repo>/target]   BEELDBRUG_LOG [info]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-bench}
CT_SLICES=${CT_SLICES:-200}
REPS=${REPS:-5}
ASSOCS=${ASSOCS:-4}
STOW_REPS=${STOW_REPS:-3}
STOW_BATCH=${STOW_BATCH:-50}
SKIP_STOW=${SKIP_STOW:-0}
ORTHANC_DICOMWEB=${ORTHANC_DICOMWEB:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
SKIP_LARGE=${SKIP_LARGE:-0}
MF_FRAMES=${MF_FRAMES:-1024}
MF_SIZE=${MF_SIZE:-1024}
PDU=${PDU:-131072}
HOST=127.0.0.1
BB_PORT=${BB_PORT:-11300}
BB_HTTP_PORT=${BB_HTTP_PORT:-11301}
STORESCP_PORT=${STORESCP_PORT:-11302}
ORTHANC_PORT=${ORTHANC_PORT:-11303}
ORTHANC_HTTP_PORT=${ORTHANC_HTTP_PORT:-11304}
ORTHANC=${ORTHANC:-/usr/sbin/Orthanc}
CLIENT=$ROOT/benches/dicomweb_bench.py
export TCP_NODELAY=1 # DCMTK: disable Nagle (otherwise small PDUs wait for delayed ACKs)

# shellcheck source=lib.sh
source "$ROOT/benches/lib.sh"

for tool in storescu storescp echoscu; do
    [ -x "/usr/bin/$tool" ] || die "DCMTK $tool missing: apt-get install -y dcmtk"
done
[ -x "$ORTHANC" ] || die "Orthanc missing ($ORTHANC): apt-get install -y orthanc"
command -v curl >/dev/null || die "curl missing: apt-get install -y curl"

# Each start_* sets PID and leaves the target ready; $1 is a fresh directory.
start_beeldbrug() {
    BEELDBRUG_DIMSE__LISTEN=$HOST:$BB_PORT BEELDBRUG_HTTP__LISTEN=$HOST:$BB_HTTP_PORT \
        BEELDBRUG_DIMSE__MAX_PDU=$PDU BEELDBRUG_STORAGE__DATA_DIR="$1/data" \
        BEELDBRUG_LOG=${BEELDBRUG_LOG:-info} \
        "$BB" serve >"$1/beeldbrug.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    BASE=http://$HOST:$BB_HTTP_PORT/dicomweb
    wait_ready BEELDBRUG "$BB_PORT" "http://$HOST:$BB_HTTP_PORT/health" "$PID" "$1/beeldbrug.log"
}
count_beeldbrug() { find "$1/data/blobs" -type f -name '*.dcm' | wc -l; }

start_storescp() {
    mkdir -p "$1/out"
    /usr/bin/storescp --fork -aet STORESCP --max-pdu "$PDU" --output-directory "$1/out" "$STORESCP_PORT" \
        >"$1/storescp.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_ready STORESCP "$STORESCP_PORT" "" "$PID" "$1/storescp.log"
}
count_storescp() { find "$1/out" -type f | wc -l; }

start_orthanc() {
    cat >"$1/orthanc.json" <<EOF
{
  "Name": "beeldbrug-bench",
  "StorageDirectory": "$1/storage",
  "IndexDirectory": "$1/storage",
  "Plugins": ["$ORTHANC_DICOMWEB"],
  "HttpPort": $ORTHANC_HTTP_PORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomAet": "ORTHANC",
  "DicomPort": $ORTHANC_PORT,
  "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowStore": true,
  "MaximumPduLength": $PDU,
  "KeepAlive": true,
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
}
EOF
    "$ORTHANC" "$1/orthanc.json" >"$1/orthanc.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    BASE=http://$HOST:$ORTHANC_HTTP_PORT/dicom-web
    wait_ready ORTHANC "$ORTHANC_PORT" "http://$HOST:$ORTHANC_HTTP_PORT/plugins/dicom-web" "$PID" "$1/orthanc.log"
}
count_orthanc() {
    curl -sf "http://$HOST:$ORTHANC_HTTP_PORT/statistics" | sed -n 's/.*"CountInstances" *: *\([0-9]*\).*/\1/p'
}

# send AE PORT LOG PATH: storescu PATH (recursively), print the wall time in seconds
send() {
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/storescu -aet BENCH -aec "$1" --max-pdu "$PDU" +sd +r +sp "*.dcm" "$HOST" "$2" "$4" >"$3" 2>&1 \
        || { tail -20 "$3" >&2; die "storescu to $1 failed (log: $3)"; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# send_many AE PORT LOGPREFIX: storescu of each list $CT_LISTS[i] at once, one association
# each; print the wall time from the first start to the last exit
send_many() {
    local t0 t1 i pids=()
    t0=$(date +%s.%N)
    for i in "${!CT_LISTS[@]}"; do
        # shellcheck disable=SC2046 # one argument per file
        /usr/bin/storescu -aet BENCH -aec "$1" --max-pdu "$PDU" "$HOST" "$2" $(cat "${CT_LISTS[$i]}") \
            >"$3.$i" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { tail -20 "$3.$i" >&2; die "storescu $i to $1 failed (log: $3.$i)"; }
    done
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
fmt() { awk -v x="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f", d, x }'; }

# --- build and inputs ---------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
prepare_beeldbrug

CT_DIR=$BENCH_DIR/input-ct-$CT_SLICES
if [ ! -f "$CT_DIR.complete" ]; then
    log "generating a CT study of $CT_SLICES slices into $CT_DIR"
    rm -rf "$CT_DIR"
    "$BB" generate -o "$CT_DIR" --seed 1 --patients 1 --ct-slices "$CT_SLICES" --mr-slices 0 >/dev/null
    touch "$CT_DIR.complete"
fi
N=$(find "$CT_DIR" -type f -name '*.dcm' | wc -l)
BYTES=$(find "$CT_DIR" -type f -name '*.dcm' -printf '%s\n' | awk '{ s += $1 } END { print s }')
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
[ "$N" -gt 0 ] || die "no input files in $CT_DIR"

# --- part 1: throughput ---------------------------------------------------------------------
TARGETS=(beeldbrug storescp orthanc)
MODES=(1 "$ASSOCS")
declare -A AE=([beeldbrug]=BEELDBRUG [storescp]=STORESCP [orthanc]=ORTHANC)
declare -A PORT=([beeldbrug]=$BB_PORT [storescp]=$STORESCP_PORT [orthanc]=$ORTHANC_PORT)
declare -A TIMES=()

# The files dealt out to ASSOCS lists, in turn (each association gets every ASSOCS-th slice).
CT_LISTS=()
find "$CT_DIR" -type f -name '*.dcm' | sort >"$BENCH_DIR/ct.list"
for i in $(seq 0 $((ASSOCS - 1))); do
    awk -v n="$ASSOCS" -v i="$i" '(NR - 1) % n == i' "$BENCH_DIR/ct.list" >"$BENCH_DIR/ct.list.$i"
    CT_LISTS+=("$BENCH_DIR/ct.list.$i")
done

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date -u +%H:%M)
log "part 1: $N instances, $MB MB, $REPS runs per target over 1 and $ASSOCS associations (interleaved)"
for rep in $(seq 1 "$REPS"); do
    for m in "${MODES[@]}"; do
        for t in "${TARGETS[@]}"; do
            dir=$BENCH_DIR/run-$t
            rm -rf "$dir"
            mkdir -p "$dir"
            "start_$t" "$dir"
            sync # earlier runs' dirty pages must not land in this run's fsyncs
            if [ "$m" = 1 ]; then
                secs=$(send "${AE[$t]}" "${PORT[$t]}" "$dir/storescu.log" "$CT_DIR")
            else
                secs=$(send_many "${AE[$t]}" "${PORT[$t]}" "$dir/storescu.log")
            fi
            got=$("count_$t" "$dir")
            stop "$PID"
            [ "$got" = "$N" ] || die "$t holds $got of $N instances after run $rep over $m associations (see $dir)"
            TIMES[$t/$m]="${TIMES[$t/$m]:-} $secs"
            log "run $rep, $m association(s), $t: $secs s"
        done
    done
done
for t in "${TARGETS[@]}"; do rm -rf "$BENCH_DIR/run-$t"; done

declare -A MED=() IPS=() MBS=()
for t in "${TARGETS[@]}"; do
    for m in "${MODES[@]}"; do
        # shellcheck disable=SC2086 # word splitting intended
        MED[$t/$m]=$(median ${TIMES[$t/$m]})
        IPS[$t/$m]=$(awk -v n="$N" -v s="${MED[$t/$m]}" 'BEGIN { printf "%.1f", n / s }')
        MBS[$t/$m]=$(awk -v b="$BYTES" -v s="${MED[$t/$m]}" 'BEGIN { printf "%.1f", b / 1e6 / s }')
    done
done
ratio() { awk -v a="${IPS[$1]}" -v b="${IPS[$2]}" 'BEGIN { printf "%.2f", a / b }'; }

# --- part 1b: STOW-RS of the same study -----------------------------------------------------
declare -A STIMES=() SMED=() SIPS=()
STOW_TARGETS=(beeldbrug orthanc)
if [ "$SKIP_STOW" != "1" ]; then
    [ -f "$ORTHANC_DICOMWEB" ] || die "Orthanc's DICOMweb plugin missing ($ORTHANC_DICOMWEB)"
    log "part 1b: STOW-RS of $N instances, $STOW_BATCH per request, $STOW_REPS runs per server"
    for rep in $(seq 1 "$STOW_REPS"); do
        for t in "${STOW_TARGETS[@]}"; do
            dir=$BENCH_DIR/stow-$t
            rm -rf "$dir"
            mkdir -p "$dir"
            "start_$t" "$dir"
            sync
            out=$(python3 "$CLIENT" stow "$BASE" "$BENCH_DIR/ct.list" --batch "$STOW_BATCH") \
                || die "STOW-RS to $t failed (see $dir)"
            secs=$(echo "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["seconds"])')
            got=$("count_$t" "$dir")
            stop "$PID"
            [ "$got" = "$N" ] || die "$t holds $got of $N instances after STOW-RS run $rep (see $dir)"
            rm -rf "$dir"
            STIMES[$t]="${STIMES[$t]:-} $secs"
            log "STOW-RS $rep $t: $secs s"
        done
    done
    for t in "${STOW_TARGETS[@]}"; do
        # shellcheck disable=SC2086 # word splitting intended
        SMED[$t]=$(median ${STIMES[$t]})
        SIPS[$t]=$(awk -v n="$N" -v s="${SMED[$t]}" 'BEGIN { printf "%.1f", n / s }')
    done
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
T_END=$(date -u +%H:%M)

# --- part 2: peak RSS while receiving one large instance ------------------------------------
LARGE=""
if [ "$SKIP_LARGE" != "1" ]; then
    MF_DIR=$BENCH_DIR/input-mf-${MF_FRAMES}x$MF_SIZE
    if [ ! -f "$MF_DIR.complete" ]; then
        log "generating a multi-frame instance ($MF_FRAMES frames of ${MF_SIZE}x$MF_SIZE) into $MF_DIR"
        rm -rf "$MF_DIR"
        "$BB" generate -o "$MF_DIR" --seed 1 --patients 1 --ct-slices 0 --mr-slices 0 \
            --multiframe-frames "$MF_FRAMES" --frame-size "$MF_SIZE" >/dev/null
        touch "$MF_DIR.complete"
    fi
    MF_FILE=$(find "$MF_DIR" -type f -name '*.dcm' | head -1)
    MF_BYTES=$(stat -c %s "$MF_FILE")
    dir=$BENCH_DIR/run-large
    rm -rf "$dir"
    mkdir -p "$dir"
    start_beeldbrug "$dir"
    sleep 2
    IDLE_RSS=$(rss_kb "$PID" VmRSS)
    IDLE_HWM=$(rss_kb "$PID" VmHWM)
    sync
    log "part 2: sending $MF_BYTES bytes in one instance to beeldbrug (idle RSS $IDLE_RSS kB)"
    MF_SECS=$(send BEELDBRUG "$BB_PORT" "$dir/storescu.log" "$MF_FILE")
    PEAK=$(rss_kb "$PID" VmHWM)
    AFTER_RSS=$(rss_kb "$PID" VmRSS)
    got=$(count_beeldbrug "$dir")
    stored=$(find "$dir/data/blobs" -type f -name '*.dcm' -printf '%s\n' | head -1)
    stop "$PID"
    rm -rf "$dir"
    [ "$got" = "1" ] || die "beeldbrug holds $got instances after the large send"
    LARGE=$(
        cat <<EOF

Peak RSS of beeldbrug receiving one $(fmt "$(awk -v b="$MF_BYTES" 'BEGIN { print b / 1e9 }')" 2) GB instance ($MF_FRAMES frames of ${MF_SIZE}x$MF_SIZE, 16-bit; stored blob $stored bytes):

| idle VmRSS | idle VmHWM | peak VmHWM (after receive) | peak above idle RSS | VmRSS after | time | MB/s |
|---:|---:|---:|---:|---:|---:|---:|
| $((IDLE_RSS / 1024)) MiB | $((IDLE_HWM / 1024)) MiB | $((PEAK / 1024)) MiB | $(((PEAK - IDLE_RSS) / 1024)) MiB | $((AFTER_RSS / 1024)) MiB | $MF_SECS s | $(awk -v b="$MF_BYTES" -v s="$MF_SECS" 'BEGIN { printf "%.1f", b / 1e6 / s }') |
EOF
    )
fi

# --- report -----------------------------------------------------------------------------------
REPORT=$BENCH_DIR/results.md
{
    echo "## beeldbrug ingest benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; $BENCH_DIR on $(df -hT "$BENCH_DIR" | awk 'NR == 2 { print $2 " (" $1 ")" }')."
    echo "Versions: $(/usr/bin/storescu --version | head -1 | tr -d '$'), Orthanc $("$ORTHANC" --version | head -1 | awk '{ print $2 }')."
    echo "beeldbrug: $BB_VERSION."
    echo "Parts 1 and 1b: $T_START-$T_END UTC, load average (1/5/15 min) $LOAD_START at the start, $LOAD_END at the end."
    echo "Input: $N CT instances (512x512, 16-bit, Explicit VR LE), $MB MB, sent by storescu over one association and over $ASSOCS at once (every ${ASSOCS}th file each), max PDU $PDU; $REPS runs per target and mode, medians."
    echo
    echo "| target | associations | median time | instances/s | MB/s | runs (s) |"
    echo "|---|---:|---:|---:|---:|---|"
    for m in "${MODES[@]}"; do
        for t in "${TARGETS[@]}"; do
            echo "| $t | $m | ${MED[$t/$m]} s | ${IPS[$t/$m]} | ${MBS[$t/$m]} | ${TIMES[$t/$m]# } |"
        done
    done
    echo
    for m in "${MODES[@]}"; do
        echo "Ratios (instances/s) over $m association(s): beeldbrug/storescp = $(ratio beeldbrug/$m storescp/$m), beeldbrug/Orthanc = $(ratio beeldbrug/$m orthanc/$m), Orthanc/storescp = $(ratio orthanc/$m storescp/$m)."
    done
    if [ "$SKIP_STOW" != "1" ]; then
        echo
        echo "STOW-RS, $STOW_BATCH instances per request over one keep-alive connection, $STOW_REPS runs, medians:"
        echo
        echo "| server | median time | instances/s | runs (s) |"
        echo "|---|---:|---:|---|"
        for t in "${STOW_TARGETS[@]}"; do
            echo "| $t | ${SMED[$t]} s | ${SIPS[$t]} | ${STIMES[$t]# } |"
        done
        echo
        echo "STOW-RS instances/s: beeldbrug/Orthanc = $(awk -v a="${SIPS[beeldbrug]}" -v b="${SIPS[orthanc]}" 'BEGIN { printf "%.2f", a / b }')."
    fi
    echo "$LARGE"
} | tee "$REPORT"
log "report written to $REPORT"
