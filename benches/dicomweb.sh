#!/usr/bin/env bash
# DICOMweb benchmark: beeldbrug `serve` (release build) against Orthanc with its DICOMweb
# plugin, on the same generated data, in one run:
#   1. WADO-RS retrieve of one whole CT study (default 2000 slices, ~1 GB), loaded into each
#      server with storescu first: curl with Accept multipart/related; type="application/dicom";
#      transfer-syntax=*, WADO_REPS runs, median time to first byte and MB/s;
#   2. the machine's reference: `cat` of the same files to /dev/null, and the same bytes
#      copied over loopback TCP into `socat > /dev/null`, sent once by `cat files | socat`
#      and once with sendfile(2) per file (benches/dicomweb_bench.py send);
#   3. STOW-RS of the same study into an empty store, STOW_BATCH instances per request
#      (benches/dicomweb_bench.py, one keep-alive connection), STOW_REPS runs, median
#      instances/s and MB/s;
#   4. QIDO-RS study search latency (p50/p99 over QIDO_QUERIES queries with varied filters,
#      limit=25) with 2 x QIDO_PATIENTS studies indexed (loaded with storescu);
#   5. beeldbrug's peak RSS (VmHWM) above its idle RSS while it serves the study of part 1
#      and a LARGE_SLICES study (default 8000 slices, ~4.2 GB).
#
# Usage: benches/dicomweb.sh            (see benches/README.md)
# Environment (defaults in brackets):
#   BENCH_DIR [/tmp/beeldbrug-dicomweb-bench]  inputs, stores and logs
#   CT_SLICES [2000]   slices of the CT study of parts 1-3 (512x512x16 bit, ~0.5 MB each)
#   WADO_REPS [5]      retrieves per server (and runs of each reference copy)
#   STOW_REPS [3]      STOW-RS runs per server (a fresh, empty store each)
#   STOW_BATCH [50]    instances per STOW-RS request
#   QIDO_PATIENTS [5000]  patients of part 4, a 1-slice CT and a 1-slice MR study each
#   QIDO_QUERIES [500]    timed queries per server (after 25 untimed ones)
#   LARGE_SLICES [8000]   slices of the part 5 study; 0 skips part 5
#   PDU [131072]       max PDU of the storescu loads
#   COPY_BLOCK [262144]   socat's block size in the loopback copy
#   BB_PORT [11310] BB_HTTP_PORT [11311] ORTHANC_PORT [11312] ORTHANC_HTTP_PORT [11313]
#   COPY_PORT [11314]                                     all on 127.0.0.1
#   ORTHANC [/usr/sbin/Orthanc]
#   ORTHANC_DICOMWEB [/usr/share/orthanc/plugins/libOrthancDicomWeb.so]
#   BB_BIN [unset]     a beeldbrug binary to measure instead of building this checkout;
#                      BB_LABEL [unset] says in the report what it was built from
#   CARGO_TARGET_DIR [<repo>/target]   BEELDBRUG_LOG [warn]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-dicomweb-bench}
CT_SLICES=${CT_SLICES:-2000}
WADO_REPS=${WADO_REPS:-5}
STOW_REPS=${STOW_REPS:-3}
STOW_BATCH=${STOW_BATCH:-50}
QIDO_PATIENTS=${QIDO_PATIENTS:-5000}
QIDO_QUERIES=${QIDO_QUERIES:-500}
LARGE_SLICES=${LARGE_SLICES:-8000}
PDU=${PDU:-131072}
COPY_BLOCK=${COPY_BLOCK:-262144}
HOST=127.0.0.1
BB_PORT=${BB_PORT:-11310}
BB_HTTP_PORT=${BB_HTTP_PORT:-11311}
ORTHANC_PORT=${ORTHANC_PORT:-11312}
ORTHANC_HTTP_PORT=${ORTHANC_HTTP_PORT:-11313}
COPY_PORT=${COPY_PORT:-11314}
ORTHANC=${ORTHANC:-/usr/sbin/Orthanc}
ORTHANC_DICOMWEB=${ORTHANC_DICOMWEB:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
BB_BIN=${BB_BIN:-}
CLIENT=$ROOT/benches/dicomweb_bench.py
ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*'
export TCP_NODELAY=1 # DCMTK: disable Nagle (otherwise small PDUs wait for delayed ACKs)

# shellcheck source=lib.sh
source "$ROOT/benches/lib.sh"

for tool in storescu echoscu; do
    [ -x "/usr/bin/$tool" ] || die "DCMTK $tool missing: apt-get install -y dcmtk"
done
[ -x "$ORTHANC" ] || die "Orthanc missing ($ORTHANC): apt-get install -y orthanc"
[ -e "$ORTHANC_DICOMWEB" ] || die "Orthanc DICOMweb plugin missing ($ORTHANC_DICOMWEB): apt-get install -y orthanc-dicomweb"
for tool in curl socat python3; do
    command -v "$tool" >/dev/null || die "$tool missing: apt-get install -y $tool"
done
python3 -c 'import requests' 2>/dev/null || die "python3 requests missing: pip install requests"

# Each start_* sets PID and BASE (the DICOMweb root) and leaves the server ready; $1 is its
# directory, created empty by the caller or kept from an earlier start (restart).
start_beeldbrug() {
    BEELDBRUG_DIMSE__LISTEN=$HOST:$BB_PORT BEELDBRUG_HTTP__LISTEN=$HOST:$BB_HTTP_PORT \
        BEELDBRUG_DIMSE__MAX_PDU=$PDU BEELDBRUG_STORAGE__DATA_DIR="$1/data" \
        BEELDBRUG_LOG=${BEELDBRUG_LOG:-warn} \
        "$BB" serve >>"$1/beeldbrug.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    BASE=http://$HOST:$BB_HTTP_PORT/dicomweb
    wait_ready BEELDBRUG "$BB_PORT" "http://$HOST:$BB_HTTP_PORT/health" "$PID" "$1/beeldbrug.log"
}
count_beeldbrug() { find "$1/data/blobs" -type f -name '*.dcm' | wc -l; }

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
  "KeepAlive": true,
  "DicomAet": "ORTHANC",
  "DicomPort": $ORTHANC_PORT,
  "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowStore": true,
  "MaximumPduLength": $PDU,
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
}
EOF
    "$ORTHANC" "$1/orthanc.json" >>"$1/orthanc.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    BASE=http://$HOST:$ORTHANC_HTTP_PORT/dicom-web
    wait_ready ORTHANC "$ORTHANC_PORT" "http://$HOST:$ORTHANC_HTTP_PORT/plugins/dicom-web" "$PID" "$1/orthanc.log"
}
count_orthanc() {
    curl -sf "http://$HOST:$ORTHANC_HTTP_PORT/statistics" | sed -n 's/.*"CountInstances" *: *\([0-9]*\).*/\1/p'
}

# load AE PORT LOG PATH: storescu PATH (recursively) over one association, print the wall time
load() {
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/storescu -aet BENCH -aec "$1" --max-pdu "$PDU" +sd +r +sp "*.dcm" "$HOST" "$2" "$4" >"$3" 2>&1 \
        || { tail -20 "$3" >&2; die "storescu to $1 failed (log: $3)"; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# fresh_store TARGET DIR N PATH: start TARGET on an empty DIR, load PATH (N instances) with
# storescu, check the count, restart it (so its idle RSS and VmHWM start from zero traffic).
# Sets PID, BASE, LOAD_SECS.
fresh_store() {
    local t=$1 dir=$2 n=$3 src=$4 got
    rm -rf "$dir"
    mkdir -p "$dir"
    "start_$t" "$dir"
    sync
    LOAD_SECS=$(load "${AE[$t]}" "${PORT[$t]}" "$dir/storescu.log" "$src")
    got=$("count_$t" "$dir")
    [ "$got" = "$n" ] || die "$t holds $got of $n instances after the storescu load (see $dir)"
    stop "$PID"
    "start_$t" "$dir"
}

# wado URL: one WADO-RS retrieve with curl into /dev/null; prints "ttfb total bytes"
wado() {
    local out code
    out=$(curl -sS -o /dev/null -H "Accept: $ACCEPT" \
        -w '%{http_code} %{time_starttransfer} %{time_total} %{size_download}' "$1") \
        || die "curl $1 failed"
    code=${out%% *}
    [ "$code" = 200 ] || die "WADO-RS $1 answered HTTP $code"
    echo "${out#* }" | awk '{ printf "%.4f %.4f %d\n", $1, $2, $3 }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# cpu_s PID: user + system CPU seconds the process has used so far
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f\n", b - a }'; }
mbs() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
json() { python3 -c 'import json, sys; v = json.load(sys.stdin); [v := v[k] for k in sys.argv[1:]]; print(v)' "$@"; }
join_runs() { local IFS=' '; echo "$*"; }

# gen NAME ARGS...: `beeldbrug generate` into $BENCH_DIR/input-NAME once; sets GEN_DIR
gen() {
    GEN_DIR=$BENCH_DIR/input-$1
    shift
    if [ ! -f "$GEN_DIR.complete" ]; then
        log "generating $GEN_DIR"
        rm -rf "$GEN_DIR"
        "$BB" generate -o "$GEN_DIR" --seed 1 "$@" >/dev/null
        touch "$GEN_DIR.complete"
    fi
}
files_of() { find "$1" -type f -name '*.dcm' | sort; }
bytes_of() { find "$1" -type f -name '*.dcm' -printf '%s\n' | awk '{ s += $1 } END { print s }'; }
study_of() { find "$1" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' -quit; }

START=$(now)
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
# --- build and inputs ---------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
prepare_beeldbrug

gen "ct-$CT_SLICES" --patients 1 --ct-slices "$CT_SLICES" --mr-slices 0
CT_DIR=$GEN_DIR
files_of "$CT_DIR" >"$BENCH_DIR/ct.list"
tr '\n' '\0' <"$BENCH_DIR/ct.list" >"$BENCH_DIR/ct.list0"
N=$(wc -l <"$BENCH_DIR/ct.list")
BYTES=$(bytes_of "$CT_DIR")
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
STUDY=$(study_of "$CT_DIR")
[ "$N" = "$CT_SLICES" ] || die "$CT_DIR holds $N files, expected $CT_SLICES"

TARGETS=(beeldbrug orthanc)
declare -A AE=([beeldbrug]=BEELDBRUG [orthanc]=ORTHANC)
declare -A PORT=([beeldbrug]=$BB_PORT [orthanc]=$ORTHANC_PORT)
declare -A SPID=() SBASE=() IDLE=() IDLE_HWM=() PEAK=() AFTER=() WCPU=() TTFB=() WTIME=() WSIZE=() WLOAD=()

# --- part 1: WADO-RS retrieve of the whole study --------------------------------------------
log "part 1: WADO-RS, study of $N instances, $MB MB; loading it into each server with storescu"
for t in "${TARGETS[@]}"; do
    fresh_store "$t" "$BENCH_DIR/wado-$t" "$N" "$CT_DIR"
    SPID[$t]=$PID
    SBASE[$t]=$BASE
    WLOAD[$t]=$LOAD_SECS
done
sleep 2
for t in "${TARGETS[@]}"; do
    IDLE[$t]=$(rss_kb "${SPID[$t]}" VmRSS)
    IDLE_HWM[$t]=$(rss_kb "${SPID[$t]}" VmHWM)
    # the answer is checked once, untimed: one part per instance
    parts=$(python3 "$CLIENT" parts "${SBASE[$t]}" "$STUDY" --accept "$ACCEPT" | json parts)
    [ "$parts" = "$N" ] || die "WADO-RS from $t gave $parts parts, expected $N"
done
for rep in $(seq 1 "$WADO_REPS"); do
    for t in "${TARGETS[@]}"; do
        c0=$(cpu_s "${SPID[$t]}")
        res=$(wado "${SBASE[$t]}/studies/$STUDY")
        read -r ttfb total size <<<"$res"
        WCPU[$t]="${WCPU[$t]:-} $(awk -v a="$c0" -v b="$(cpu_s "${SPID[$t]}")" 'BEGIN { printf "%.2f", b - a }')"
        TTFB[$t]="${TTFB[$t]:-} $ttfb"
        WTIME[$t]="${WTIME[$t]:-} $total"
        WSIZE[$t]=$size
        log "retrieve $rep $t: first byte $ttfb s, $total s, $size bytes, server CPU ${WCPU[$t]##* } s"
    done
done
for t in "${TARGETS[@]}"; do
    PEAK[$t]=$(rss_kb "${SPID[$t]}" VmHWM)
    AFTER[$t]=$(rss_kb "${SPID[$t]}" VmRSS)
    [ "$t" = orthanc ] && DICOMWEB_VERSION=$(curl -sf "${SBASE[$t]%/dicom-web}/plugins/dicom-web" | json Version)
    stop "${SPID[$t]}"
    rm -rf "$BENCH_DIR/wado-$t"
done

# --- part 2: reference copies of the same bytes -----------------------------------------------
# receiver: socat on COPY_PORT into /dev/null, in the background; sets RPID once it listens
receiver() {
    socat -u -b "$COPY_BLOCK" "TCP-LISTEN:$COPY_PORT,bind=$HOST,reuseaddr" OPEN:/dev/null &
    RPID=$!
    PIDS+=("$RPID")
    for _ in $(seq 1 100); do
        ss -Hltn "sport = :$COPY_PORT" | grep -q . && return 0
        sleep 0.05
    done
    die "socat did not listen on port $COPY_PORT"
}
log "part 2: cat and loopback TCP copies of the same $N files"
xargs -0 cat <"$BENCH_DIR/ct.list0" >/dev/null # page cache warm, as for the servers
CAT_TIMES="" COPY_TIMES="" SF_TIMES=""
for rep in $(seq 1 "$WADO_REPS"); do
    t0=$(now)
    xargs -0 cat <"$BENCH_DIR/ct.list0" >/dev/null
    CAT_TIMES="$CAT_TIMES $(since "$t0")"

    receiver
    t0=$(now)
    xargs -0 cat <"$BENCH_DIR/ct.list0" | socat -u -b "$COPY_BLOCK" STDIN "TCP:$HOST:$COPY_PORT"
    wait "$RPID" || die "socat receiver failed"
    COPY_TIMES="$COPY_TIMES $(since "$t0")"

    receiver
    out=$(python3 "$CLIENT" send "$HOST" "$COPY_PORT" "$BENCH_DIR/ct.list")
    wait "$RPID" || die "socat receiver failed"
    [ "$(echo "$out" | json bytes)" = "$BYTES" ] || die "sendfile copy sent $out, expected $BYTES bytes"
    SF_TIMES="$SF_TIMES $(echo "$out" | json seconds)"
    log "reference $rep: cat ${CAT_TIMES##* } s, loopback copy ${COPY_TIMES##* } s, loopback sendfile ${SF_TIMES##* } s"
done

# --- part 3: STOW-RS of the same study ------------------------------------------------------
log "part 3: STOW-RS of $N instances, $STOW_BATCH per request, $STOW_REPS runs per server"
declare -A STIMES=() SCPU=()
for rep in $(seq 1 "$STOW_REPS"); do
    for t in "${TARGETS[@]}"; do
        dir=$BENCH_DIR/stow-$t
        rm -rf "$dir"
        mkdir -p "$dir"
        "start_$t" "$dir"
        sync # earlier runs' dirty pages must not land in this run's fsyncs
        c0=$(cpu_s "$PID")
        out=$(python3 "$CLIENT" stow "$BASE" "$BENCH_DIR/ct.list" --batch "$STOW_BATCH") \
            || die "STOW-RS to $t failed (see $dir)"
        secs=$(echo "$out" | json seconds)
        SCPU[$t]="${SCPU[$t]:-} $(awk -v a="$c0" -v b="$(cpu_s "$PID")" 'BEGIN { printf "%.2f", b - a }')"
        got=$("count_$t" "$dir")
        stop "$PID"
        [ "$got" = "$N" ] || die "$t holds $got of $N instances after STOW-RS run $rep (see $dir)"
        rm -rf "$dir"
        STIMES[$t]="${STIMES[$t]:-} $secs"
        log "STOW-RS $rep $t: $secs s, server CPU ${SCPU[$t]##* } s"
    done
done

# --- part 4: QIDO-RS latency with many studies ----------------------------------------------
gen "qido-$QIDO_PATIENTS" --patients "$QIDO_PATIENTS" --ct-slices 1 --mr-slices 1
QIDO_DIR=$GEN_DIR
QN=$(find "$QIDO_DIR" -type f -name '*.dcm' | wc -l)
QSTUDIES=$(find "$QIDO_DIR" -mindepth 2 -maxdepth 2 -type d | wc -l)
QMB=$(awk -v b="$(bytes_of "$QIDO_DIR")" 'BEGIN { printf "%.0f", b / 1e6 }')
declare -A QIDO=() QLOAD=()
log "part 4: QIDO-RS with $QSTUDIES studies ($QN instances, $QMB MB) in each server"
for t in "${TARGETS[@]}"; do
    dir=$BENCH_DIR/qido-$t
    fresh_store "$t" "$dir" "$QN" "$QIDO_DIR"
    QLOAD[$t]=$LOAD_SECS
    log "$t: loaded in $LOAD_SECS s"
    QIDO[$t]=$(python3 "$CLIENT" qido "$BASE" "$QIDO_DIR" --queries "$QIDO_QUERIES" \
        --counts "$BENCH_DIR/qido-counts-$t.txt") || die "QIDO-RS against $t failed"
    stop "$PID"
    rm -rf "$dir"
    log "$t: ${QIDO[$t]}"
done
QSAME=$(paste "$BENCH_DIR/qido-counts-beeldbrug.txt" "$BENCH_DIR/qido-counts-orthanc.txt" | awk -F'\t' '$1 == $3' | wc -l)

# --- part 5: beeldbrug's peak RSS while serving a large study --------------------------------
LARGE=""
if [ "$LARGE_SLICES" != "0" ]; then
    gen "ct-$LARGE_SLICES" --patients 1 --ct-slices "$LARGE_SLICES" --mr-slices 0
    L_DIR=$GEN_DIR
    L_N=$(find "$L_DIR" -type f -name '*.dcm' | wc -l)
    L_BYTES=$(bytes_of "$L_DIR")
    L_STUDY=$(study_of "$L_DIR")
    log "part 5: beeldbrug serving a study of $L_N instances, $(mbs "$L_BYTES" 1) MB (free: $(df -h --output=avail "$BENCH_DIR" | tail -1))"
    fresh_store beeldbrug "$BENCH_DIR/large" "$L_N" "$L_DIR"
    sleep 2
    L_IDLE=$(rss_kb "$PID" VmRSS)
    L_IDLE_HWM=$(rss_kb "$PID" VmHWM)
    res=$(wado "$BASE/studies/$L_STUDY")
    read -r L_TTFB L_TIME L_SIZE <<<"$res"
    L_PEAK=$(rss_kb "$PID" VmHWM)
    L_AFTER=$(rss_kb "$PID" VmRSS)
    stop "$PID"
    rm -rf "$BENCH_DIR/large"
    log "large retrieve: $L_TIME s, $L_SIZE bytes, peak VmHWM $L_PEAK kB (idle $L_IDLE kB)"
    LARGE="| $L_N instances, $(awk -v b="$L_BYTES" 'BEGIN { printf "%.2f", b / 1e9 }') GB | $((L_IDLE / 1024)) MiB | $((L_IDLE_HWM / 1024)) MiB | $((L_PEAK / 1024)) MiB | **$(((L_PEAK - L_IDLE) / 1024)) MiB** | $((L_AFTER / 1024)) MiB | 1 retrieve: $L_TIME s, $(mbs "$L_SIZE" "$L_TIME") MB/s |"
fi

# --- report -----------------------------------------------------------------------------------
# shellcheck disable=SC2086 # word splitting intended
{
    for t in "${TARGETS[@]}"; do
        declare "W_T_$t=$(median ${WTIME[$t]})" "W_F_$t=$(median ${TTFB[$t]})" "S_T_$t=$(median ${STIMES[$t]})"
    done
    CAT_MED=$(median $CAT_TIMES)
    COPY_MED=$(median $COPY_TIMES)
    SF_MED=$(median $SF_TIMES)
}
W_MBS_B=$(mbs "${WSIZE[beeldbrug]}" "$W_T_beeldbrug")
W_MBS_O=$(mbs "${WSIZE[orthanc]}" "$W_T_orthanc")
CAT_MBS=$(mbs "$BYTES" "$CAT_MED")
COPY_MBS=$(mbs "$BYTES" "$COPY_MED")
SF_MBS=$(mbs "$BYTES" "$SF_MED")
S_IPS_B=$(awk -v n="$N" -v s="$S_T_beeldbrug" 'BEGIN { printf "%.1f", n / s }')
S_IPS_O=$(awk -v n="$N" -v s="$S_T_orthanc" 'BEGIN { printf "%.1f", n / s }')
q() { echo "${QIDO[$1]}" | json "${@:2}"; }
ORTHANC_VERSION=$("$ORTHANC" --version | awk 'NR == 1 { print $2 }')

REPORT=$BENCH_DIR/results.md
{
    echo "## beeldbrug DICOMweb benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; $BENCH_DIR on $(df -hT "$BENCH_DIR" | awk 'NR == 2 { print $2 " (" $1 ")" }'); whole run $(since "$START") s; load average (1/5/15 min) $START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo "Versions: beeldbrug $BB_VERSION, Orthanc $ORTHANC_VERSION with DICOMweb plugin ${DICOMWEB_VERSION:-?}, $(/usr/bin/storescu --version | awk 'NR == 1' | tr -d '$'), $(curl --version | awk 'NR == 1 { print $1 " " $2 }'), $(socat -V | awk '/socat version/ { print "socat " $3; exit }'), Python $(python3 -c 'import platform, requests; print(platform.python_version(), "requests", requests.__version__)')."
    echo
    echo "### WADO-RS retrieve of one study"
    echo
    echo "$N CT instances (512x512, 16-bit, Explicit VR LE), $MB MB, loaded with storescu (beeldbrug $(printf %s "${WLOAD[beeldbrug]}") s, Orthanc ${WLOAD[orthanc]} s), servers restarted; \`curl -H 'Accept: $ACCEPT'\` to /dev/null, $WADO_REPS runs each (interleaved), medians. MB/s counts the whole response (multipart framing included: beeldbrug ${WSIZE[beeldbrug]}, Orthanc ${WSIZE[orthanc]} bytes); server CPU is the median user + system time the server process used per retrieve (/proc/<pid>/stat)."
    echo
    echo "| target | first byte | time | MB/s | server CPU | runs (s) |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| beeldbrug | $(ms "$W_F_beeldbrug") ms | $W_T_beeldbrug s | $W_MBS_B | $(median ${WCPU[beeldbrug]}) s | $(join_runs ${WTIME[beeldbrug]}) |"
    echo "| Orthanc + DICOMweb | $(ms "$W_F_orthanc") ms | $W_T_orthanc s | $W_MBS_O | $(median ${WCPU[orthanc]}) s | $(join_runs ${WTIME[orthanc]}) |"
    echo "| \`cat\` files > /dev/null | | $CAT_MED s | $CAT_MBS | | $(join_runs $CAT_TIMES) |"
    echo "| loopback TCP copy: \`cat files \| socat\` → \`socat\` > /dev/null (${COPY_BLOCK}-byte blocks) | | $COPY_MED s | $COPY_MBS | | $(join_runs $COPY_TIMES) |"
    echo "| loopback TCP copy: sendfile(2) of each file (\`dicomweb_bench.py send\`) → \`socat\` > /dev/null | | $SF_MED s | $SF_MBS | | $(join_runs $SF_TIMES) |"
    echo
    echo "Ratios (MB/s): beeldbrug/Orthanc = **$(ratio "$W_MBS_B" "$W_MBS_O")**, beeldbrug/loopback copy = **$(ratio "$W_MBS_B" "$COPY_MBS")** (cat | socat) and **$(ratio "$W_MBS_B" "$SF_MBS")** (sendfile), Orthanc/loopback copy = $(ratio "$W_MBS_O" "$COPY_MBS") and $(ratio "$W_MBS_O" "$SF_MBS"), beeldbrug/cat = $(ratio "$W_MBS_B" "$CAT_MBS"); first byte beeldbrug/Orthanc = $(ratio "$W_F_beeldbrug" "$W_F_orthanc")."
    echo
    echo "### STOW-RS of the same study"
    echo
    echo "$N instances, $MB MB, $STOW_BATCH instances per request over one keep-alive connection (\`benches/dicomweb_bench.py stow\`, bodies streamed from the files), into a fresh, empty store each run; $STOW_REPS runs each, medians."
    echo
    echo "| target | time | instances/s | MB/s | server CPU | runs (s) |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| beeldbrug | $S_T_beeldbrug s | $S_IPS_B | $(mbs "$BYTES" "$S_T_beeldbrug") | $(median ${SCPU[beeldbrug]}) s | $(join_runs ${STIMES[beeldbrug]}) |"
    echo "| Orthanc + DICOMweb | $S_T_orthanc s | $S_IPS_O | $(mbs "$BYTES" "$S_T_orthanc") | $(median ${SCPU[orthanc]}) s | $(join_runs ${STIMES[orthanc]}) |"
    echo
    echo "Ratio (instances/s): beeldbrug/Orthanc = **$(ratio "$S_IPS_B" "$S_IPS_O")**."
    echo
    echo "### QIDO-RS study search"
    echo
    echo "$QSTUDIES studies ($QN instances, $QMB MB) loaded with storescu (beeldbrug ${QLOAD[beeldbrug]} s, Orthanc ${QLOAD[orthanc]} s); $QIDO_QUERIES timed \`GET /studies\` after 25 untimed, one keep-alive connection (\`benches/dicomweb_bench.py qido\`), four kinds in turn, each with limit=25: PatientID=<one patient>, PatientName=<prefix>*, StudyDate=<30-day range>, PatientName=<prefix>*&StudyDate=<range>. Time: request sent to body received."
    echo
    echo "| target | p50 | p99 | mean | max | p50 / p99 by kind (ms): patient_id, name_prefix, date_range, name_and_date |"
    echo "|---|---:|---:|---:|---:|---|"
    for t in "${TARGETS[@]}"; do
        kinds=""
        for k in patient_id name_prefix date_range name_and_date; do
            kinds="$kinds${kinds:+, }$(q "$t" kinds "$k" p50_ms) / $(q "$t" kinds "$k" p99_ms)"
        done
        name=$t
        [ "$t" = orthanc ] && name="Orthanc + DICOMweb"
        echo "| $name | $(q "$t" p50_ms) ms | **$(q "$t" p99_ms) ms** | $(q "$t" mean_ms) ms | $(q "$t" max_ms) ms | $kinds |"
    done
    echo
    echo "Results returned in all: beeldbrug $(q beeldbrug results), Orthanc $(q orthanc results); $QSAME of $QIDO_QUERIES queries gave both the same number of results."
    echo
    echo "### beeldbrug peak RSS while serving WADO-RS"
    echo
    echo "VmRSS after a restart on the loaded store (2 s idle), VmHWM after the retrieves; from \`/proc/<pid>/status\`."
    echo
    echo "| study | idle VmRSS | idle VmHWM | peak VmHWM | peak above idle RSS | VmRSS after | retrieves |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    echo "| $N instances, $(awk -v b="$BYTES" 'BEGIN { printf "%.2f", b / 1e9 }') GB | $((IDLE[beeldbrug] / 1024)) MiB | $((IDLE_HWM[beeldbrug] / 1024)) MiB | $((PEAK[beeldbrug] / 1024)) MiB | **$(((PEAK[beeldbrug] - IDLE[beeldbrug]) / 1024)) MiB** | $((AFTER[beeldbrug] / 1024)) MiB | $((WADO_REPS + 1)) (part 1) |"
    [ -n "$LARGE" ] && echo "$LARGE"
    echo
    echo "Orthanc, part 1, for comparison: idle VmRSS $((IDLE[orthanc] / 1024)) MiB, peak VmHWM $((PEAK[orthanc] / 1024)) MiB (**$(((PEAK[orthanc] - IDLE[orthanc]) / 1024)) MiB** above idle)."
} | tee "$REPORT"
log "report written to $REPORT"
