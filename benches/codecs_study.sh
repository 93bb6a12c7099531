#!/usr/bin/env bash
# Whole-study retrieves through the codecs (issue 13), beeldbrug `serve` (release build):
#
#   1. WADO-RS default-syntax retrieve (Accept: multipart/related; type="application/dicom",
#      no transfer-syntax: Explicit VR LE, every instance decoded) of a JPEG 2000 lossless CT
#      study of J2K_MB (1024) MB as stored, encoded by pydicom with pylibjpeg-openjpeg
#      (`tests/codecs/codecs.py study`: 8 distinct 512 x 512 slices written again with new
#      UIDs); time, bytes, server CPU, and beeldbrug's peak RSS (VmHWM) above its idle RSS.
#   2. An uncompressed CT study of PLAIN_MB (105) MB retrieved as stored and as JPEG-LS
#      lossless on request (`transfer-syntax=1.2.840.10008.1.2.4.80`): bytes on the wire and
#      time, REPS (3) runs each, medians.
#
# Each study is loaded with pynetdicom's storescu (-cx: each file in its own syntax) into a fresh data dir, then the server is
# restarted (idle RSS and VmHWM from zero traffic). Ports 11330-11331 on 127.0.0.1; run it
# inside `unshare -n` when other benchmarks may hold them. Prints a Markdown table (also
# $BENCH_DIR/results.md).
#
#   benches/codecs_study.sh
#   BB_BIN=/path/to/beeldbrug J2K_MB=256 benches/codecs_study.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
HOST=127.0.0.1
BB_PORT=${BB_PORT:-11330}
BB_HTTP_PORT=${BB_HTTP_PORT:-11331}
J2K_MB=${J2K_MB:-1024}
PLAIN_MB=${PLAIN_MB:-105}
REPS=${REPS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-codecs-study}
source benches/lib.sh
mkdir -p "$BENCH_DIR"
prepare_beeldbrug

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_s() { awk '{ printf "%.2f\n", ($14 + $15) / 100 }' "/proc/$1/stat"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }'; }

# make NAME SYNTAX MB: the study's files in $BENCH_DIR/NAME (kept for the next run)
make_study() {
    local dir=$BENCH_DIR/$1
    if [ ! -s "$dir.tsv" ]; then
        rm -rf "$dir" && mkdir -p "$dir"
        log "making the $1 study ($3 MB)"
        python3 tests/codecs/codecs.py study "$dir" "$2" "$3" >"$dir.tsv"
    fi
}

start() {
    BEELDBRUG_DIMSE__LISTEN=$HOST:$BB_PORT BEELDBRUG_HTTP__LISTEN=$HOST:$BB_HTTP_PORT \
        BEELDBRUG_STORAGE__DATA_DIR="$1/data" BEELDBRUG_LOG=${BEELDBRUG_LOG:-warn} \
        "$BB" serve >>"$1/beeldbrug.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_ready BEELDBRUG "$BB_PORT" "http://$HOST:$BB_HTTP_PORT/health" "$PID" "$1/beeldbrug.log"
}

# load NAME: a fresh server dir with the study stored, the server restarted and idle
load() {
    local dir=$BENCH_DIR/run-$1
    rm -rf "$dir" && mkdir -p "$dir"
    start "$dir"
    # pynetdicom's storescu: DCMTK's has no JPEG 2000 codec and would send the files only as
    # Explicit VR LE; -cx proposes each file's own syntax.
    python3 -m pynetdicom storescu -aet BENCH -aec BEELDBRUG -cx -r "$HOST" "$BB_PORT" \
        "$BENCH_DIR/$1" >"$dir/storescu.log" 2>&1 || { tail "$dir/storescu.log" >&2; die "storescu"; }
    stop "$PID"
    start "$dir"
    sleep 2
}

# retrieve STUDY ACCEPT: curl to /dev/null; prints "seconds bytes"
retrieve() {
    curl -sS -o /dev/null -w '%{time_total} %{size_download}\n' -H "Accept: $2" \
        "http://$HOST:$BB_HTTP_PORT/dicomweb/studies/$1" || die "curl failed"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

make_study j2k j2k "$J2K_MB"
make_study plain plain "$PLAIN_MB"
read -r J_N J_BYTES J_PIXELS J_STUDY <"$BENCH_DIR/j2k.tsv"
read -r P_N P_BYTES P_PIXELS P_STUDY <"$BENCH_DIR/plain.tsv"

log "part 1: WADO-RS default syntax of the JPEG 2000 study ($J_N instances, $J_BYTES bytes)"
load j2k
IDLE=$(rss_kb "$PID" VmRSS)
CPU0=$(cpu_s "$PID")
read -r J_TIME J_SIZE < <(retrieve "$J_STUDY" 'multipart/related; type="application/dicom"')
J_CPU=$(awk -v a="$CPU0" -v b="$(cpu_s "$PID")" 'BEGIN { printf "%.1f", b - a }')
PEAK=$(rss_kb "$PID" VmHWM)
stop "$PID"
log "J2K study: $J_TIME s, $J_SIZE bytes, server CPU $J_CPU s, idle $IDLE kB, peak $PEAK kB"

log "part 2: the uncompressed study ($P_N instances) as stored and as JPEG-LS lossless"
load plain
declare -A TIMES SIZE
for rep in $(seq 1 "$REPS"); do
    for kind in stored jpegls; do
        case $kind in
            stored) accept='multipart/related; type="application/dicom"; transfer-syntax=*' ;;
            jpegls) accept='multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80' ;;
        esac
        read -r t s < <(retrieve "$P_STUDY" "$accept")
        TIMES[$kind]+="$t "
        SIZE[$kind]=$s
        log "$kind $rep: $t s, $s bytes"
    done
done
stop "$PID"

{
    echo "beeldbrug $BB_VERSION."
    echo
    echo "| WADO-RS retrieve | instances | stored bytes | response bytes | time s | MB/s decoded | server CPU s | idle VmRSS MiB | peak VmHWM MiB | peak above idle MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    echo "| JPEG 2000 lossless study, default syntax (decoded) | $J_N | $J_BYTES | $J_SIZE | $J_TIME | $(awk -v b="$J_PIXELS" -v s="$J_TIME" 'BEGIN { printf "%.1f", b / 1e6 / s }') | $J_CPU | $((IDLE / 1024)) | $((PEAK / 1024)) | **$(((PEAK - IDLE) / 1024))** |"
    echo
    echo "| uncompressed study of $P_N instances ($P_BYTES bytes) | response bytes | of as stored | median time s ($REPS runs) |"
    echo "|---|---|---|---|"
    for kind in stored jpegls; do
        t=$(echo "${TIMES[$kind]}" | tr ' ' '\n' | grep . | median)
        echo "| $([ $kind = stored ] && echo 'as stored (`transfer-syntax=*`)' || echo 'JPEG-LS lossless on request') | ${SIZE[$kind]} | $(awk -v a="${SIZE[$kind]}" -v b="${SIZE[stored]}" 'BEGIN { printf "%.2f", a / b }') | $t |"
    done
} | tee "$BENCH_DIR/results.md"
