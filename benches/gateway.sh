#!/usr/bin/env bash
# Gateway-mode benchmark: one CT study (default 2000 slices, ~1.05 GB) held only by Orthanc,
# retrieved in one run
#   1. directly from Orthanc with DCMTK getscu (C-GET, files written to BENCH_DIR), and
#   2. by WADO-RS through beeldbrug `serve` with `[pacs] retrieve = "c-get"` (release build),
#      a freshly started process on an empty data dir each time (cache miss): beeldbrug
#      C-GETs the study from Orthanc and streams each instance into the multipart response
#      as it arrives; then
#   3. the same WADO-RS again on the same process once the fetch has ended (cache hit), and
#      right after it the loopback baseline of the hit: the same files (the ones this miss
#      cached, still in the page cache) read and written by a minimal HTTP server
#      (`gateway_bench.py serve-copy`) into the same client, in the same framing.
# 1 and 2 alternate, REPS runs each; medians. Time to first byte, total time, the time from
# the PACS's first C-STORE sub-operation to the first body byte (the DIMSE messages are
# time-stamped on `lo` by benches/gateway_bench.py), beeldbrug's peak RSS (VmHWM) above its
# idle RSS, and CPU time of beeldbrug and Orthanc per retrieve. Then, for comparison:
#   4. MOVE_REPS cache misses with `retrieve = "c-move"` and as many direct `movescu` runs,
#      alternating; movescu moves the study to a separate DCMTK `storescp` (files to disk),
#      started for each run (movescu receiving itself, +P, accepts the PACS's association
#      only on its next poll, ~1 s late);
#   5. PHASE_REPS more getscu runs and C-GET cache misses, alternating, with every packet of
#      the PACS's association time-stamped (`gateway_bench.py --timeline`): per sub-operation,
#      the transfer (C-STORE-RQ to the last data packet), the receiver's turn (last data
#      packet to its C-STORE-RSP: what getscu or beeldbrug does before it answers) and the
#      PACS's turn (C-STORE-RSP to the next C-STORE-RQ); summed over the study. Their totals
#      are not used above (the capture costs CPU);
#   6. NAGLE_REPS direct getscu runs and C-GET cache misses with Orthanc started without
#      TCP_NODELAY (DCMTK, and so Orthanc, leaves Nagle's algorithm on unless TCP_NODELAY is
#      set in its environment; Debian's orthanc service does not set it);
#   7. with PROFILE_REPS=1, one C-GET and one C-MOVE miss under perf (not in the tables);
#   8. (run after part 5, before part 6 restarts Orthanc) the DIMSE proxy (`[dimse]
#      proxy_pacs = true`, docs/gateway.md; issue 11): PROXY_REPS
#      runs of getscu against beeldbrug (a fresh process on an empty data dir: cache miss,
#      beeldbrug fetches the study from Orthanc by PROXY_RETRIEVE and passes each instance on
#      as a C-STORE sub-operation on getscu's association; then, once the study is complete
#      in the cache, getscu again: hit) alternating with direct getscu against Orthanc; then
#      PROXY_REPS runs of movescu against beeldbrug into a storescp (a [[dimse.peers]] entry
#      of beeldbrug) alternating with direct movescu into the same kind of storescp. Each
#      row: the PACS's first C-STORE-RQ, the first sub-operation at the client (time-stamped
#      on `lo`), beeldbrug's CPU time and peak RSS above idle; every run's files counted.
#
# Usage: benches/gateway.sh            (see benches/README.md)
# Environment (defaults in brackets):
#   BENCH_DIR [/tmp/beeldbrug-gateway-bench]  inputs, Orthanc's store (kept), runs, logs
#   CT_SLICES [2000]  slices of the CT study (512x512x16 bit, ~0.5 MB each)
#   REPS [5]          runs of 1 and 2 (and 3); 0 skips them (e.g. only the DIMSE proxy:
#                     REPS=0 MOVE_REPS=0 PHASE_REPS=0 NAGLE_REPS=0 PROXY_REPS=3)
#   MOVE_REPS [3]     runs of part 4 (0 skips it)
#   PHASE_REPS [3]    runs of part 5 (0 skips it; needs root)
#   NAGLE_REPS [1]    runs of part 6 (0 skips it)
#   PROXY_REPS [REPS] runs of part 8, C-GET and C-MOVE each (0 skips it)
#   PROXY_RETRIEVE [c-get]  how the proxying beeldbrug fetches from Orthanc (`[pacs] retrieve`)
#   TRUNCATE_RUNS [unset]  1: truncate each run's files to zero length once counted (the
#                     disk then needs ~3 GB besides the input, instead of ~1 GB per run)
#   PROFILE_REPS [0]  1: part 7, one more C-GET (and C-MOVE) cache miss under `perf record`
#                     and `perf stat` (needs perf); profiles in BENCH_DIR/perf-*.txt
#   PDU [131072]      max PDU Orthanc and getscu/movescu announce (DCMTK's maximum);
#                     beeldbrug announces its default 262144 toward the PACS
#   BB_PORT [11330] BB_HTTP_PORT [11331] ORTHANC_PORT [11332] ORTHANC_HTTP_PORT [11333]
#   MOVESCU_PORT [11334] (storescp, the C-MOVE destination of movescu)
#   COPY_PORT [11335] (the loopback baseline)              all on 127.0.0.1
#   ORTHANC [/usr/sbin/Orthanc]
#   BB_BIN [unset]    a beeldbrug binary to measure instead of building this checkout;
#                     BB_LABEL [unset] says in the report what it was built from
#   CARGO_TARGET_DIR [<repo>/target]   BEELDBRUG_LOG [info]
# Needs root (or CAP_NET_RAW) for the time stamps of part 2's "first sub-operation"; without
# it those columns stay empty.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-gateway-bench}
CT_SLICES=${CT_SLICES:-2000}
REPS=${REPS:-5}
MOVE_REPS=${MOVE_REPS:-3}
PHASE_REPS=${PHASE_REPS:-3}
NAGLE_REPS=${NAGLE_REPS:-1}
PROFILE_REPS=${PROFILE_REPS:-0}
PROXY_REPS=${PROXY_REPS:-$REPS}
PROXY_RETRIEVE=${PROXY_RETRIEVE:-c-get}
PDU=${PDU:-131072}
HOST=127.0.0.1
BB_PORT=${BB_PORT:-11330}
BB_HTTP_PORT=${BB_HTTP_PORT:-11331}
ORTHANC_PORT=${ORTHANC_PORT:-11332}
ORTHANC_HTTP_PORT=${ORTHANC_HTTP_PORT:-11333}
MOVESCU_PORT=${MOVESCU_PORT:-11334}
COPY_PORT=${COPY_PORT:-11335}
ORTHANC=${ORTHANC:-/usr/sbin/Orthanc}
BB_BIN=${BB_BIN:-}
CLIENT=$ROOT/benches/gateway_bench.py
ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*'
export TCP_NODELAY=1 # DCMTK (getscu, movescu, storescu and Orthanc): Nagle off

# shellcheck source=lib.sh
source "$ROOT/benches/lib.sh"

for tool in storescu storescp echoscu getscu movescu; do
    [ -x "/usr/bin/$tool" ] || die "DCMTK $tool missing: apt-get install -y dcmtk"
done
[ -x "$ORTHANC" ] || die "Orthanc missing ($ORTHANC): apt-get install -y orthanc"
for tool in curl python3; do
    command -v "$tool" >/dev/null || die "$tool missing: apt-get install -y $tool"
done
if python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()' 2>/dev/null; then
    SNIFF=1
else
    SNIFF=0
    PHASE_REPS=0
    log "no raw socket (not root?): the first-sub-operation times and part 5 are left out"
fi

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -1; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f\n", b - a }'; }
sub_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a - b }'; }
mbs() { awk -v b="$1" -v s="$2" 'BEGIN { if (s == "" || s == 0) print ""; else printf "%.1f", b / 1e6 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.2f", a / b }'; }
ms() { awk -v s="$1" 'BEGIN { if (s == "") print ""; else printf "%.1f", s * 1000 }'; }
json() { python3 -c 'import json, sys; v = json.load(sys.stdin); [v := v.get(k, "") if isinstance(v, dict) else "" for k in sys.argv[1:]]; print(v)' "$@"; }
join_runs() { local IFS=' '; echo "$*"; }
# gap JSON A B: B - A of the sniffed times (seconds), empty when either is missing
gap() { python3 -c 'import json, sys; v = json.loads(sys.argv[1]); s = v.get("sniff", {}); a, b = sys.argv[2:]; t = {"request": 0.0, "first_byte": v.get("first_byte")}; ta = t[a] if a in t else s.get(a); tb = t[b] if b in t else s.get(b); print("" if ta is None or tb is None else round(tb - ta, 4))' "$1" "$2" "$3"; }

START=$(now)
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
# --- build and inputs -------------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
prepare_beeldbrug

CT_DIR=$BENCH_DIR/input-ct-$CT_SLICES
if [ ! -f "$CT_DIR.complete" ]; then
    log "generating $CT_DIR"
    rm -rf "$CT_DIR"
    "$BB" generate -o "$CT_DIR" --seed 1 --patients 1 --ct-slices "$CT_SLICES" --mr-slices 0 >/dev/null
    touch "$CT_DIR.complete"
fi
N=$(find "$CT_DIR" -type f -name '*.dcm' | wc -l)
BYTES=$(find "$CT_DIR" -type f -name '*.dcm' -printf '%s\n' | awk '{ s += $1 } END { print s }')
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
STUDY=$(find "$CT_DIR" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' -quit)
[ "$N" = "$CT_SLICES" ] || die "$CT_DIR holds $N files, expected $CT_SLICES"

# --- Orthanc: the PACS, loaded once (its store is kept in BENCH_DIR for the next run) ---------
ORTHANC_DIR=$BENCH_DIR/orthanc-ct-$CT_SLICES
# start_orthanc NODELAY: 1 with TCP_NODELAY in its environment, 0 without; sets OPID
start_orthanc() {
    mkdir -p "$ORTHANC_DIR"
    cat >"$ORTHANC_DIR/orthanc.json" <<EOF
{
  "Name": "beeldbrug-gateway-bench",
  "StorageDirectory": "$ORTHANC_DIR/storage",
  "IndexDirectory": "$ORTHANC_DIR/storage",
  "Plugins": [],
  "HttpPort": $ORTHANC_HTTP_PORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomAet": "ORTHANC",
  "DicomPort": $ORTHANC_PORT,
  "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowStore": true,
  "DicomAlwaysAllowGet": true,
  "DicomAlwaysAllowMove": true,
  "DicomModalities": {
    "BEELDBRUG": ["BEELDBRUG", "$HOST", $BB_PORT],
    "MOVESCU": ["MOVESCU", "$HOST", $MOVESCU_PORT]
  },
  "MaximumPduLength": $PDU,
  "SyncStorageArea": false,
  "SaveJobs": false
}
EOF
    if [ "$1" = 1 ]; then
        "$ORTHANC" "$ORTHANC_DIR/orthanc.json" >>"$ORTHANC_DIR/orthanc.log" 2>&1 &
    else
        env -u TCP_NODELAY "$ORTHANC" "$ORTHANC_DIR/orthanc.json" >>"$ORTHANC_DIR/orthanc.log" 2>&1 &
    fi
    OPID=$!
    PIDS+=("$OPID")
    wait_ready ORTHANC "$ORTHANC_PORT" "http://$HOST:$ORTHANC_HTTP_PORT/system" "$OPID" "$ORTHANC_DIR/orthanc.log"
}
count_orthanc() {
    curl -sf "http://$HOST:$ORTHANC_HTTP_PORT/statistics" | sed -n 's/.*"CountInstances" *: *\([0-9]*\).*/\1/p'
}
if [ ! -f "$ORTHANC_DIR.complete" ]; then
    rm -rf "$ORTHANC_DIR"
    start_orthanc 1
    log "loading the study ($N instances, $MB MB) into Orthanc with storescu"
    t0=$(now)
    /usr/bin/storescu -aet BENCH -aec ORTHANC --max-pdu "$PDU" +sd +r +sp "*.dcm" "$HOST" "$ORTHANC_PORT" "$CT_DIR" \
        >"$ORTHANC_DIR/storescu.log" 2>&1 || { tail -20 "$ORTHANC_DIR/storescu.log" >&2; die "storescu to Orthanc failed"; }
    log "loaded in $(since "$t0") s"
    [ "$(count_orthanc)" = "$N" ] || die "Orthanc holds $(count_orthanc) of $N instances after the load"
    stop "$OPID"
    sync
    touch "$ORTHANC_DIR.complete"
fi
start_orthanc 1
[ "$(count_orthanc)" = "$N" ] || die "Orthanc holds $(count_orthanc) instances, expected $N (rm -rf $ORTHANC_DIR* to reload)"
ORTHANC_VERSION=$(curl -sf "http://$HOST:$ORTHANC_HTTP_PORT/system" | json Version)

# --- beeldbrug in gateway mode -----------------------------------------------------------------
# start_beeldbrug DIR MODE [EXTRA]: a fresh process on DIR/data (MODE c-get or c-move; EXTRA:
# more lines for the [dimse] table); sets PID
start_beeldbrug() {
    mkdir -p "$1"
    cat >"$1/beeldbrug.toml" <<EOF
[dimse]
ae_title = "BEELDBRUG"
listen = "$HOST:$BB_PORT"
${3:-}

[http]
listen = "$HOST:$BB_HTTP_PORT"

[storage]
data_dir = "$1/data"

[pacs]
ae_title = "ORTHANC"
host = "$HOST"
port = $ORTHANC_PORT
retrieve = "$2"
probe_at_start = false
forward_stow = false
EOF
    BEELDBRUG_LOG=${BEELDBRUG_LOG:-info} "$BB" serve -c "$1/beeldbrug.toml" >>"$1/beeldbrug.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_ready BEELDBRUG "$BB_PORT" "http://$HOST:$BB_HTTP_PORT/health" "$PID" "$1/beeldbrug.log"
}
SNIFF_ARGS=()
[ "$SNIFF" = 1 ] && SNIFF_ARGS=(--pacs-port "$ORTHANC_PORT" --bb-port "$BB_PORT")
URL=http://$HOST:$BB_HTTP_PORT/dicomweb/studies/$STUDY

# Nothing is deleted until the end, not even what an aborted run left: ext4 without a
# journal creates files more slowly for minutes after many were deleted (recently_deleted()
# in its inode allocator), which would tax whichever ran next.
RUN_DIR=$BENCH_DIR/runs
[ -e "$RUN_DIR" ] && mv "$RUN_DIR" "$RUN_DIR.stale.$$"
mkdir -p "$RUN_DIR"
# every run's files stay until the end (unless TRUNCATE_RUNS): say so before the disk fills up
if [ -z "${TRUNCATE_RUNS:-}" ]; then
    studies=$((2 * REPS + 2 * MOVE_REPS + 4 * PHASE_REPS + 2 * NAGLE_REPS + 7 * PROXY_REPS + 6 * PROFILE_REPS))
    need_mb=$(awk -v n="$studies" -v mb="$MB" 'BEGIN { printf "%.0f", n * mb * 1.05 }')
    free_mb=$(df -Pm "$RUN_DIR" | awk 'NR == 2 { print $4 }')
    [ "$free_mb" -ge "$need_mb" ] \
        || die "the runs' files need ~$need_mb MB, $free_mb MB free in $RUN_DIR: free some, lower the REPS, or set TRUNCATE_RUNS=1"
fi

# Results: R[KEY.WHAT] holds one word per run.
declare -A R=()
add() { if [ -n "${R[$1]:-}" ]; then R[$1]+=" $2"; else R[$1]=$2; fi; }
# shellcheck disable=SC2086 # word splitting intended
med() { median ${R[$1]:-}; }
runs() { echo "${R[$1]:-}"; }

# phases KEY JSON: the per-sub-operation phases of a --timeline run, when there are some
phases() {
    local v
    [ -n "${TIMELINE:-}" ] || return 0
    for v in transfer receiver pacs; do
        add "$1.ph_$v" "$(echo "$2" | json phases "$v" sum_s)"
        add "$1.ph_${v}_ms" "$(echo "$2" | json phases "$v" median_ms)"
    done
    add "$1.ph_n" "$(echo "$2" | json phases sub_operations)"
}

# direct TOOL KEY: one getscu (or movescu) of the whole study into a new directory
direct() {
    local tool=$1 key=$2 dir c0 out
    local -a args sniff=()
    dir=$(mktemp -d "$RUN_DIR/$key-XXXX")
    local scp_pid= bpid=${PROXY_PID:-} b0=
    if [ "$tool" = getscu ]; then
        args=(-aet GETSCU -od "$dir")
        [ "$SNIFF" = 1 ] && sniff=(--pacs-port "$ORTHANC_PORT")
        # through the proxy: the sub-operations beeldbrug sends on getscu's association
        [ "$SNIFF" = 1 ] && [ -n "$bpid" ] && sniff+=(--client-port "$BB_PORT")
    else
        # the destination: storescp as AE MOVESCU (known to Orthanc), its files into $dir
        /usr/bin/storescp -aet MOVESCU --max-pdu "$PDU" -od "$dir" "$MOVESCU_PORT" >"$dir.storescp.log" 2>&1 &
        scp_pid=$!
        PIDS+=("$scp_pid")
        wait_ready MOVESCU "$MOVESCU_PORT" "" "$scp_pid" "$dir.storescp.log"
        args=(-aet MOVECLIENT -aem MOVESCU)
        if [ -n "$bpid" ]; then
            # through the proxy (fetching by C-GET): the PACS's sub-operations come on
            # beeldbrug's C-GET association, beeldbrug's go to storescp
            [ "$SNIFF" = 1 ] && sniff=(--pacs-port "$ORTHANC_PORT" --client-port "$MOVESCU_PORT")
        else
            [ "$SNIFF" = 1 ] && sniff=(--pacs-port "$ORTHANC_PORT" --bb-port "$MOVESCU_PORT")
        fi
    fi
    # DIRECT_AEC / DIRECT_PORT: whom to ask (default Orthanc); PROXY_PID: beeldbrug's pid when
    # that is beeldbrug as a DIMSE proxy (its CPU time is counted, see `proxy`).
    args+=(-aec "${DIRECT_AEC:-ORTHANC}" --max-pdu "$PDU" -S -k QueryRetrieveLevel=STUDY -k "StudyInstanceUID=$STUDY" "$HOST" "${DIRECT_PORT:-$ORTHANC_PORT}")
    sync
    c0=$(cpu_s "$OPID")
    [ -n "$bpid" ] && b0=$(cpu_s "$bpid")
    [ -n "${TIMELINE:-}" ] && sniff+=(--timeline)
    out=$(python3 "$CLIENT" get --tool "$tool" "${sniff[@]}" "$dir" -- "${args[@]}") || die "$tool ($key) failed"
    [ -n "$bpid" ] && add "$key.bcpu" "$(sub_s "$(cpu_s "$bpid")" "$b0")"
    local ccpu
    ccpu=$(echo "$out" | json cpu)
    if [ -n "$scp_pid" ]; then
        ccpu=$(awk -v a="$ccpu" -v b="$(cpu_s "$scp_pid")" 'BEGIN { printf "%.2f", a + b }')
        stop "$scp_pid"
    fi
    add "$key.ccpu" "$ccpu"
    phases "$key" "$out"
    add "$key.ocpu" "$(sub_s "$(cpu_s "$OPID")" "$c0")"
    [ "$(echo "$out" | json files)" = "$N" ] || die "$tool wrote $(echo "$out" | json files) of $N files"
    add "$key.total" "$(echo "$out" | json total)"
    add "$key.subop" "$(gap "$out" request c_store_rq)"
    add "$key.pacs" "$(gap "$out" c_get_rq c_store_rq)$(gap "$out" c_move_rq c_store_rq)"
    if [ -n "$bpid" ]; then
        # the proxy's first sub-operation at the client, from the request and from the PACS's
        # first sub-operation (in the table's "first byte" and "after sub-op" columns)
        add "$key.ttfb" "$(gap "$out" request client_c_store_rq)"
        add "$key.after" "$(gap "$out" c_store_rq client_c_store_rq)"
    fi
    log "$key ($tool${bpid:+ against beeldbrug}): $(echo "$out" | json total) s, $(echo "$out" | json files) files, first C-STORE-RQ from the PACS after $(gap "$out" request c_store_rq) s${bpid:+, at the client after $(gap "$out" request client_c_store_rq) s}"
    settle "$dir"
}

# settle DIR: write back and drop from the page cache the files a run wrote, so that the
# memory does not fill up with them run after run (reclaim would slow the later runs)
# (with TRUNCATE_RUNS=1: truncate them to zero length, after they were counted: the blocks go
# back, the inodes stay, so the disk need not hold every run's files and ext4 sees no deletes)
settle() {
    sync
    python3 "$CLIENT" evict ${TRUNCATE_RUNS:+--truncate} "$1" >/dev/null
}

# profile_start KEY / profile_stop KEY: perf record and perf stat of beeldbrug ($PID)
profile_start() {
    perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$PID" -o "$BENCH_DIR/perf-stat-$1.txt" &
    PERF_STAT_PID=$!
    perf record -F 999 -g -p "$PID" -o "$BENCH_DIR/perf-$1.data" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 1
}
profile_stop() {
    kill -INT "$PERF_PID" "$PERF_STAT_PID"
    wait "$PERF_PID" "$PERF_STAT_PID" || true
    perf report -i "$BENCH_DIR/perf-$1.data" --no-children --stdio --sort sym --percent-limit 1 -g none \
        2>/dev/null | grep -v '^$' | head -60 >"$BENCH_DIR/perf-$1.txt"
    log "$1: profile in $BENCH_DIR/perf-$1.txt, counters in $BENCH_DIR/perf-stat-$1.txt"
}

# miss KEY MODE [HIT]: a fresh beeldbrug on an empty data dir, WADO-RS of the study (cache
# miss), wait until the cache records it complete; with HIT, WADO-RS again (cache hit)
miss() {
    local key=$1 mode=$2 hit=${3:-} dir out out2 idle hwm c0 o0 got cpid
    dir=$(mktemp -d "$RUN_DIR/$key-XXXX")
    start_beeldbrug "$dir" "$mode"
    sleep 2
    idle=$(rss_kb "$PID" VmRSS)
    sync
    [ -n "${PROFILE:-}" ] && profile_start "$key"
    c0=$(cpu_s "$PID")
    o0=$(cpu_s "$OPID")
    out=$(python3 "$CLIENT" wado "$URL" --accept "$ACCEPT" "${SNIFF_ARGS[@]}" ${TIMELINE:+--timeline}) || die "WADO-RS ($key) failed (see $dir)"
    [ -n "${PROFILE:-}" ] && profile_stop "$key"
    phases "$key" "$out"
    add "$key.bcpu" "$(sub_s "$(cpu_s "$PID")" "$c0")"
    add "$key.ocpu" "$(sub_s "$(cpu_s "$OPID")" "$o0")"
    add "$key.ccpu" "$(echo "$out" | json cpu)"
    hwm=$(rss_kb "$PID" VmHWM)
    [ "$(echo "$out" | json parts)" = "$N" ] || die "WADO-RS ($key) gave $(echo "$out" | json parts) parts, expected $N"
    WSIZE=$(echo "$out" | json bytes)
    add "$key.total" "$(echo "$out" | json total)"
    add "$key.ttfb" "$(echo "$out" | json first_byte)"
    add "$key.head" "$(echo "$out" | json headers)"
    add "$key.subop" "$(gap "$out" request c_store_rq)"
    add "$key.pacs" "$(gap "$out" c_get_rq c_store_rq)$(gap "$out" c_move_rq c_store_rq)"
    add "$key.after" "$(gap "$out" c_store_rq first_byte)"
    add "$key.idle" "$idle"
    add "$key.hwm" "$hwm"
    add "$key.above" "$((hwm - idle))"
    # the fetch ends (files synced, study recorded complete) a little after the response
    out2=$(python3 "$CLIENT" wait-cached "$dir/data/index.db" "$STUDY") \
        || die "the study never became complete in the cache (see $dir)"
    add "$key.sync" "$(echo "$out2" | json waited)"
    got=$(find "$dir/data/blobs" -type f -name '*.dcm' | wc -l)
    [ "$got" = "$N" ] || die "beeldbrug cached $got of $N instances (see $dir)"
    log "$key (beeldbrug $mode): $(echo "$out" | json total) s, first byte $(echo "$out" | json first_byte) s ($(gap "$out" c_store_rq first_byte) s after the first C-STORE-RQ), VmHWM $((hwm / 1024)) MiB (idle $((idle / 1024)) MiB), complete in the cache $(echo "$out2" | json waited) s later"
    if [ -n "$hit" ]; then
        sync
        c0=$(cpu_s "$PID")
        out=$(python3 "$CLIENT" wado "$URL" --accept "$ACCEPT") || die "WADO-RS ($hit) failed (see $dir)"
        add "$hit.bcpu" "$(sub_s "$(cpu_s "$PID")" "$c0")"
        add "$hit.ccpu" "$(echo "$out" | json cpu)"
        [ "$(echo "$out" | json parts)" = "$N" ] || die "WADO-RS ($hit) gave $(echo "$out" | json parts) parts"
        add "$hit.total" "$(echo "$out" | json total)"
        add "$hit.ttfb" "$(echo "$out" | json first_byte)"
        add "$hit.hwm" "$(rss_kb "$PID" VmHWM)"
        log "$hit (beeldbrug, cache): $(echo "$out" | json total) s, first byte $(echo "$out" | json first_byte) s"
        # the loopback baseline: the same files, just read and written
        python3 "$CLIENT" serve-copy "$dir/data/blobs" --port "$COPY_PORT" >"$dir.copy.log" 2>&1 &
        cpid=$!
        PIDS+=("$cpid")
        for _ in $(seq 1 50); do curl -s -o /dev/null "http://$HOST:$COPY_PORT/" && break; sleep 0.1; done
        out=$(python3 "$CLIENT" wado "http://$HOST:$COPY_PORT/copy" --accept "$ACCEPT") || die "loopback copy failed"
        stop "$cpid"
        [ "$(echo "$out" | json parts)" = "$N" ] || die "loopback copy gave $(echo "$out" | json parts) parts"
        add copy.total "$(echo "$out" | json total)"
        add copy.ccpu "$(echo "$out" | json cpu)"
        add copy.ttfb "$(echo "$out" | json first_byte)"
        log "copy (loopback baseline): $(echo "$out" | json total) s"
    fi
    stop "$PID"
    settle "$dir"
}

# proxy TOOL KEY [HIT]: a fresh beeldbrug with `[dimse] proxy_pacs = true` on an empty data
# dir; TOOL (getscu, or movescu into storescp) against it for the PACS-only study (cache miss:
# beeldbrug fetches it from Orthanc and passes each instance on); with HIT, once the study is
# complete in the cache, getscu against the same process again (cache hit)
proxy() {
    local tool=$1 key=$2 hit=${3:-} dir idle hwm out2 got
    dir=$(mktemp -d "$RUN_DIR/$key-XXXX")
    # storescp, the C-MOVE destination of both movescu rows, is a known AE of beeldbrug
    start_beeldbrug "$dir" "$PROXY_RETRIEVE" "proxy_pacs = true

[[dimse.peers]]
ae_title = \"MOVESCU\"
host = \"$HOST\"
port = $MOVESCU_PORT"
    sleep 2
    idle=$(rss_kb "$PID" VmRSS)
    [ -n "${PROFILE:-}" ] && profile_start "$key"
    PROXY_PID=$PID DIRECT_AEC=BEELDBRUG DIRECT_PORT=$BB_PORT direct "$tool" "$key"
    [ -n "${PROFILE:-}" ] && profile_stop "$key"
    hwm=$(rss_kb "$PID" VmHWM)
    add "$key.idle" "$idle"
    add "$key.hwm" "$hwm"
    add "$key.above" "$((hwm - idle))"
    out2=$(python3 "$CLIENT" wait-cached "$dir/data/index.db" "$STUDY") \
        || die "the study never became complete in the cache (see $dir)"
    add "$key.sync" "$(echo "$out2" | json waited)"
    got=$(find "$dir/data/blobs" -type f -name '*.dcm' | wc -l)
    [ "$got" = "$N" ] || die "beeldbrug cached $got of $N instances (see $dir)"
    log "$key: VmHWM $((hwm / 1024)) MiB (idle $((idle / 1024)) MiB), complete in the cache $(echo "$out2" | json waited) s later"
    if [ -n "$hit" ]; then
        PROXY_PID=$PID DIRECT_AEC=BEELDBRUG DIRECT_PORT=$BB_PORT direct getscu "$hit"
        add "$hit.hwm" "$(rss_kb "$PID" VmHWM)"
    fi
    stop "$PID"
    settle "$dir"
}

log "study: $N instances, $MB MB; one untimed getscu (--ignore) to warm Orthanc"
python3 "$CLIENT" get "$RUN_DIR" -- -aet GETSCU -aec ORTHANC --max-pdu "$PDU" -S -k QueryRetrieveLevel=STUDY \
    -k "StudyInstanceUID=$STUDY" --ignore "$HOST" "$ORTHANC_PORT" >/dev/null || die "warm-up getscu failed"

# --- parts 1-3: getscu and beeldbrug C-GET (miss, then hit), alternating ------------------------
for rep in $(seq 1 "$REPS"); do
    log "run $rep of $REPS"
    if [ $((rep % 2)) = 1 ]; then
        direct getscu get
        miss miss c-get hit
    else
        miss miss c-get hit
        direct getscu get
    fi
done

# --- part 4: C-MOVE ---------------------------------------------------------------------------
for rep in $(seq 1 "$MOVE_REPS"); do
    log "C-MOVE run $rep of $MOVE_REPS"
    if [ $((rep % 2)) = 1 ]; then
        direct movescu movescu
        miss move c-move
    else
        miss move c-move
        direct movescu movescu
    fi
done

# --- part 5: where the time goes: every packet time-stamped -------------------------------------
for rep in $(seq 1 "$PHASE_REPS"); do
    log "phases run $rep of $PHASE_REPS"
    if [ $((rep % 2)) = 1 ]; then
        TIMELINE=1 direct getscu ph-get
        TIMELINE=1 miss ph-miss c-get
    else
        TIMELINE=1 miss ph-miss c-get
        TIMELINE=1 direct getscu ph-get
    fi
    if [ "$MOVE_REPS" != 0 ]; then
        TIMELINE=1 direct movescu ph-movescu
        TIMELINE=1 miss ph-move c-move
    fi
done

# --- part 8: the DIMSE proxy (getscu / movescu against beeldbrug), alternating (before part 6 restarts Orthanc)
for rep in $(seq 1 "$PROXY_REPS"); do
    log "DIMSE proxy C-GET run $rep of $PROXY_REPS"
    if [ $((rep % 2)) = 1 ]; then
        direct getscu pget
        proxy getscu proxy-get proxy-hit
    else
        proxy getscu proxy-get proxy-hit
        direct getscu pget
    fi
done
for rep in $(seq 1 "$PROXY_REPS"); do
    log "DIMSE proxy C-MOVE run $rep of $PROXY_REPS"
    if [ $((rep % 2)) = 1 ]; then
        direct movescu pmovescu
        proxy movescu proxy-move
    else
        proxy movescu proxy-move
        direct movescu pmovescu
    fi
done
# --- part 6: Orthanc with Nagle's algorithm on --------------------------------------------------
if [ "$NAGLE_REPS" != 0 ]; then
    log "Orthanc restarted without TCP_NODELAY"
    stop "$OPID"
    start_orthanc 0
    for rep in $(seq 1 "$NAGLE_REPS"); do
        log "Nagle run $rep of $NAGLE_REPS"
        direct getscu nagle-get
        miss nagle-miss c-get
    done
fi
# --- part 7: profiles ---------------------------------------------------------------------------
if [ "$PROFILE_REPS" != 0 ]; then
    log "profiled cache misses (perf record / perf stat; not in the tables)"
    stop "$OPID"
    start_orthanc 1
    PROFILE=1 miss prof-get c-get
    [ "$MOVE_REPS" != 0 ] && PROFILE=1 miss prof-move c-move
    if [ "$PROXY_REPS" != 0 ]; then
        PROFILE=1 proxy getscu prof-proxy-get
        PROFILE=1 proxy movescu prof-proxy-move
    fi
fi
stop "$OPID"
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
WALL=$(since "$START")
rm -rf "$RUN_DIR" "$RUN_DIR".stale.*

# --- report -------------------------------------------------------------------------------------
G=$(med get.total)
M=$(med miss.total)
H=$(med hit.total)
C=$(med copy.total)
MV=$(med movescu.total)
MM=$(med move.total)
mib() { awk -v k="$1" 'BEGIN { if (k == "") print ""; else printf "%.0f", k / 1024 }'; }
f2() { awk -v x="$1" 'BEGIN { if (x == "") print ""; else printf "%.2f", x }'; }
# row LABEL KEY [BASE LABEL]: one line of the results table; the ratio is to the median of
# BASE (default getscu). A new comparison (e.g. getscu against beeldbrug as a DIMSE proxy)
# is one more `direct`/`miss`-like function filling R[key.total] etc., and one more row.
row() {
    local k=$2 t base=${3:-$G} bl=${4:-getscu}
    t=$(med "$k.total")
    echo "| $1 | $(ms "$(med "$k.subop")") | $(ms "$(med "$k.ttfb")") | $(ms "$(med "$k.after")") | $(f2 "$t") s | $(mbs "$BYTES" "$t") | **$(ratio "$t" "$base")** × $bl | $(f2 "$(med "$k.bcpu")") | $(f2 "$(med "$k.ocpu")") | $(f2 "$(med "$k.ccpu")") | $(runs "$k.total") |"
}
# aim LABEL MEASURED OK: one line of the aims table
aim() { echo "| $1 | $2 | $(if [ "$3" = 1 ]; then echo yes; elif [ "$3" = 0 ]; then echo "**no**"; else echo "?"; fi) |"; }
# pairs A B: the median (min-max) of the per-pair ratios, run i of A against run i of B (the
# runs alternate, so each pair ran next to each other)
pairs() {
    local -a a b r=()
    local i
    read -ra a <<<"${R[$1.total]:-}"
    read -ra b <<<"${R[$2.total]:-}"
    for i in "${!a[@]}"; do [ -n "${b[$i]:-}" ] && r+=("$(ratio "${a[$i]}" "${b[$i]}")"); done
    [ "${#r[@]}" = 0 ] && return 0
    echo "$(f2 "$(median "${r[@]}")") ($(printf '%s\n' "${r[@]}" | sort -g | head -1)-$(maxof "${r[@]}"))"
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "?"; else print (a <= b) ? 1 : 0 }'; }
REPORT=$BENCH_DIR/results.md
{
    echo "## beeldbrug gateway-mode benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; $BENCH_DIR on $(df -hT "$BENCH_DIR" | awk 'NR == 2 { print $2 " (" $1 ")" }'); whole run $WALL s; load average (1/5/15 min) $START_LOAD at the start, $END_LOAD at the end."
    echo "Versions: beeldbrug $BB_VERSION, Orthanc $ORTHANC_VERSION, $(/usr/bin/getscu --version | awk 'NR == 1' | tr -d '$'), Python $(python3 -c 'import platform; print(platform.python_version())')."
    echo
    echo "$N CT instances (512x512, 16-bit, Explicit VR LE), $MB MB, held by Orthanc only. $REPS runs of getscu and of beeldbrug (fresh process, empty data dir: cache miss, then the same request again once the study is complete in the cache: hit), alternating; medians. Times from the request (getscu started / HTTP request written); *first C-STORE-RQ*: the PACS's first sub-operation on the wire; *after sub-op*: first body byte minus first C-STORE-RQ. MB/s and ratio: study bytes / total time, total / getscu's median. CPU: user + system seconds of beeldbrug / Orthanc / the client per retrieve (client: the Python WADO-RS client, or getscu, or movescu + storescp)."
    echo
    echo "| retrieve | first C-STORE-RQ (ms) | first byte (ms) | after sub-op (ms) | total | MB/s | ratio | beeldbrug CPU (s) | Orthanc CPU (s) | client CPU (s) | runs (s) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    if [ "$REPS" != 0 ]; then
        row "getscu (C-GET, files to disk)" get
        row "beeldbrug WADO-RS, cache miss (C-GET)" miss
        row "beeldbrug WADO-RS, cache hit" hit "$C" "loopback copy"
        row "loopback copy of the hit's files (baseline)" copy
    fi
    if [ "$MOVE_REPS" != 0 ]; then
        row "movescu into storescp (C-MOVE, files to disk)" movescu
        row "beeldbrug WADO-RS, cache miss (C-MOVE)" move "$MV" movescu
    fi
    if [ "$PROXY_REPS" != 0 ]; then
        row "getscu against Orthanc (DIMSE proxy part)" pget
        row "getscu against beeldbrug as DIMSE proxy, cache miss" proxy-get "$(med pget.total)" getscu
        row "getscu against beeldbrug as DIMSE proxy, cache hit" proxy-hit "$(med pget.total)" getscu
        row "movescu into storescp, against Orthanc (DIMSE proxy part)" pmovescu "$(med pmovescu.total)" movescu
        row "movescu into storescp, against beeldbrug as DIMSE proxy, cache miss" proxy-move "$(med pmovescu.total)" movescu
    fi
    if [ "$NAGLE_REPS" != 0 ]; then
        row "getscu, Orthanc without TCP_NODELAY" nagle-get
        row "beeldbrug miss (C-GET), Orthanc without TCP_NODELAY" nagle-miss
    fi
    echo
    echo "Response: ${WSIZE:-} bytes (multipart framing included). PACS latency, C-GET-RQ to first C-STORE-RQ (median): getscu $(ms "$(med get.pacs)") ms, beeldbrug $(ms "$(med miss.pacs)") ms; beeldbrug's response head after $(ms "$(med miss.head)") ms (before it asks the PACS: C-FIND count, then C-GET). After a miss the study was recorded complete in the cache (files synced) $(med miss.sync) s after the response ended (runs: $(runs miss.sync))."
    echo
    echo "beeldbrug memory (\`/proc/<pid>/status\`, fresh process each miss): idle VmRSS $(mib "$(med miss.idle)") MiB, VmHWM after the miss $(mib "$(med miss.hwm)") MiB, **$(mib "$(med miss.above)") MiB above idle** (median; max $(mib "$(maxof ${R[miss.above]:-})") MiB; runs in kB: $(runs miss.above)); VmHWM after the hit too: $(mib "$(med hit.hwm)") MiB.$( [ "$MOVE_REPS" != 0 ] && echo " C-MOVE miss: $(mib "$(med move.above)") MiB above idle.")"
    echo
    echo "Medians of the per-pair ratios (min-max): C-GET miss / getscu $(pairs miss get); hit / copy $(pairs hit copy)$( [ "$MOVE_REPS" != 0 ] && echo "; C-MOVE miss / movescu $(pairs move movescu)")$( [ "$PROXY_REPS" != 0 ] && echo "; DIMSE proxy: getscu miss / getscu $(pairs proxy-get pget), hit / getscu $(pairs proxy-hit pget), movescu miss / movescu $(pairs proxy-move pmovescu)")."
    if [ "$PROXY_REPS" != 0 ]; then
        echo
        # shellcheck disable=SC2086 # word splitting intended
        echo "DIMSE proxy (part 8, beeldbrug fetching by $PROXY_RETRIEVE, fresh process and data dir per miss): in its rows *first byte* is the first C-STORE-RQ beeldbrug sends to the client (getscu, or storescp for movescu), *after sub-op* that minus the PACS's first C-STORE-RQ to beeldbrug. beeldbrug CPU: while the client ran. Memory: getscu miss $(mib "$(med proxy-get.above)") MiB above idle (max $(mib "$(maxof ${R[proxy-get.above]:-})") MiB; idle $(mib "$(med proxy-get.idle)") MiB), movescu miss $(mib "$(med proxy-move.above)") MiB (max $(mib "$(maxof ${R[proxy-move.above]:-})") MiB); VmHWM after the hit too $(mib "$(med proxy-hit.hwm)") MiB. The study was complete in the cache $(med proxy-get.sync) s (getscu) / $(med proxy-move.sync) s (movescu) after the client exited. PACS latency, C-GET-RQ to first C-STORE-RQ: getscu $(ms "$(med pget.pacs)") ms, beeldbrug $(ms "$(med proxy-get.pacs)") ms."
    fi
    if [ "$PHASE_REPS" != 0 ]; then
        echo
        echo "Where the time goes (part 5: $PHASE_REPS more runs each with every packet of the PACS association time-stamped, medians of the per-run sums over the $(printf '%.0f' "$(med ph-get.ph_n)") sub-operations; in brackets the median sub-operation):"
        echo
        echo "| | transfer: C-STORE-RQ → last data packet | receiver: last data packet → C-STORE-RSP | PACS: C-STORE-RSP → next C-STORE-RQ | total (runs) |"
        echo "|---|---:|---:|---:|---|"
        keys="ph-get ph-miss"
        [ "$MOVE_REPS" != 0 ] && keys+=" ph-movescu ph-move"
        for k in $keys; do
            case $k in
                ph-get) name="getscu" ;;
                ph-miss) name="beeldbrug cache miss (C-GET)" ;;
                ph-movescu) name="storescp (movescu's C-MOVE)" ;;
                ph-move) name="beeldbrug cache miss (C-MOVE)" ;;
            esac
            echo "| $name | $(med "$k.ph_transfer") s ($(med "$k.ph_transfer_ms") ms) | $(med "$k.ph_receiver") s ($(med "$k.ph_receiver_ms") ms) | $(med "$k.ph_pacs") s ($(med "$k.ph_pacs_ms") ms) | $(f2 "$(med "$k.total")") s ($(runs "$k.total")) |"
        done
    fi
    echo
    echo "| aim | measured | met? |"
    echo "|---|---|---|"
    aim "C-GET miss total ≤ 1.1 × direct getscu" "$(ratio "$M" "$G") × ($M s vs $G s)" "$(le "$(ratio "$M" "$G")" 1.1)"
    if [ "$MOVE_REPS" != 0 ]; then
        aim "C-MOVE miss total ≤ 1.2 × direct movescu into storescp" "$(ratio "$MM" "$MV") × ($MM s vs $MV s)" "$(le "$(ratio "$MM" "$MV")" 1.2)"
    fi
    aim "first byte ≤ 100 ms after the PACS's first sub-operation" "$(ms "$(med miss.after)") ms (max $(ms "$(maxof ${R[miss.after]:-0})") ms)$( [ "$MOVE_REPS" != 0 ] && echo "; C-MOVE $(ms "$(med move.after)") ms")" "$(le "$(maxof ${R[miss.after]:-})" 0.1)"
    # shellcheck disable=SC2086 # word splitting intended
    aim "peak RSS ≤ 64 MB above idle" "$(mib "$(med miss.above)") MiB (max $(mib "$(maxof ${R[miss.above]:-})") MiB)$( [ "$MOVE_REPS" != 0 ] && echo "; C-MOVE $(mib "$(med move.above)") MiB (max $(mib "$(maxof ${R[move.above]:-})") MiB)")" "$(le "$(maxof ${R[miss.above]:-} ${R[move.above]:-})" 62500)"
    if [ "$PROXY_REPS" != 0 ]; then
        PG=$(med pget.total) PM=$(med proxy-get.total) PMV=$(med pmovescu.total) PMM=$(med proxy-move.total)
        aim "DIMSE proxy: getscu miss ≤ 1.1 × direct getscu" "$(ratio "$PM" "$PG") × ($PM s vs $PG s); per pair $(pairs proxy-get pget)" "$(le "$(ratio "$PM" "$PG")" 1.1)"
        aim "DIMSE proxy: movescu miss ≤ 1.2 × direct movescu into storescp" "$(ratio "$PMM" "$PMV") × ($PMM s vs $PMV s); per pair $(pairs proxy-move pmovescu)" "$(le "$(ratio "$PMM" "$PMV")" 1.2)"
        # shellcheck disable=SC2086 # word splitting intended
        aim "DIMSE proxy: first sub-operation at the client ≤ 100 ms after the PACS's first" "getscu $(ms "$(med proxy-get.after)") ms (max $(ms "$(maxof ${R[proxy-get.after]:-0})") ms); movescu $(ms "$(med proxy-move.after)") ms (max $(ms "$(maxof ${R[proxy-move.after]:-0})") ms)" "$(le "$(maxof ${R[proxy-get.after]:-} ${R[proxy-move.after]:-})" 0.1)"
        # shellcheck disable=SC2086 # word splitting intended
        aim "DIMSE proxy: peak RSS ≤ 64 MB above idle" "getscu $(mib "$(med proxy-get.above)") MiB, movescu $(mib "$(med proxy-move.above)") MiB (max $(mib "$(maxof ${R[proxy-get.above]:-} ${R[proxy-move.above]:-})") MiB)" "$(le "$(maxof ${R[proxy-get.above]:-} ${R[proxy-move.above]:-})" 62500)"
    fi
    aim "cache hit ≥ 0.9 × a loopback copy of the same files (time ≤ 1/0.9)" "$(ratio "$C" "$H") × ($H s vs $C s)" "$(le "$(ratio "$H" "$C")" 1.111)"
    echo
    echo "Cache hit: $H s ($(mbs "$BYTES" "$H") MB/s), $(ratio "$H" "$G") × getscu, $(ratio "$H" "$M") × the miss; loopback copy $C s ($(mbs "$BYTES" "$C") MB/s)."
} | tee "$REPORT"
log "report written to $REPORT"
