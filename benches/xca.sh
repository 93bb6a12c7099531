#!/usr/bin/env bash
# XCA-I benchmark (issue 15): one CT study (default 2000 slices, ~1.05 GB) held only by
# hospital B's Orthanc, brought into hospital A's Orthanc in one run
#   1. directly: DCMTK movescu asks B's Orthanc to C-MOVE it to A's Orthanc (the baseline);
#   2. through both gateways: movescu (as A's workstation, a local user with UZI, role and
#      purpose of use) asks gateway A to C-MOVE it to A's Orthanc; A fetches the manifest
#      (ITI-39) and the instances (RAD-75) from gateway B over mutual TLS with an XUA
#      assertion, and passes each instance on by C-STORE as it arrives; B streams them from
#      its Orthanc (C-GET, cache miss: B is started afresh for every run, so is A).
# 1 and 2 alternate, REPS runs each; medians. Per run: the total time of movescu, the time
# from the C-MOVE request to the first instance in A's Orthanc (its /statistics polled every
# 20 ms), and for 2 the peak RSS (VmHWM) of each gateway above its RSS just before the
# C-MOVE (after the C-FIND that located the study). A's Orthanc starts empty every run.
# CPU-seconds of every process (utime + stime from /proc over the C-MOVE; the DCMTK client's
# from /usr/bin/time) go with each run into $BENCH_DIR/cpu.txt, with the load average.
#
# Usage: unshare -n bash -c 'ip link set lo up; benches/xca.sh'   (fixed ports on loopback)
# Environment (defaults in brackets):
#   BENCH_DIR [/tmp/beeldbrug-xca-bench]  inputs, B's Orthanc store (kept), runs, logs
#   CT_SLICES [2000]  slices of the CT study (512x512x16 bit, ~0.5 MB each)
#   REPS [3]          runs of 1 and 2 each
#   BB_BIN            a beeldbrug binary to test instead of a release build of this checkout
#   BB_BIN2           a second binary: then each round runs direct, BB_BIN, BB_BIN2 (A/B)
#   B_RETRIEVE [c-get]  how gateway B fetches from its Orthanc ([pacs] retrieve: c-get or
#                     c-move, then into B's own Storage SCP, which Orthanc B knows as BEELDBRUG)
#   B_RETRIEVE2 [$B_RETRIEVE]  the same for the BB_BIN2 runs (an A/B of B's retrieve)
#   A_WADO_RS [false]  true: A fetches by WADO-RS from B's dicomweb_url ([remote] prefer_wado_rs)
#   A_WADO_RS2 [$A_WADO_RS]  the same for the BB_BIN2 runs (BB_BIN2=BB_BIN: RAD-75 vs WADO-RS)
#   RELAY [unset]     1: each round also runs 1 through two byte relays (socat) joined by
#                     mutual TLS: Orthanc B -> relay A' -> TLS -> relay B' -> Orthanc A, the
#                     same number of processes and the same mTLS hop as the gateway path but
#                     no parsing, cache or index: the least any pair of gateways costs here
#   PERF [unset]      1: perf record -g of both gateways during the gateway runs
#                     (into $BENCH_DIR/perf-{a,b}-N.data); 2: of both Orthancs too
#                     ($BENCH_DIR/perf-o{a,b}-N.data)
#   PERF_CALLGRAPH [fp]  perf's --call-graph mode: dwarf resolves the callers in a release
#                     build without frame pointers (larger files)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST=127.0.0.1
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-xca-bench}
CT_SLICES=${CT_SLICES:-2000}
REPS=${REPS:-3}
ORTHANC=${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
export PATH=/usr/bin:$PATH   # DCMTK's tools, not pynetdicom's of the same names
PDU=131072
A_DIMSE=11440 A_HTTP=11441 B_DIMSE=11442 B_HTTP=11443 MITZ=11444
OA_DIMSE=11445 OA_HTTP=11446 OB_DIMSE=11447 OB_HTTP=11448
RELAY_IN=11449 RELAY_TLS=11450
BSN_OID=2.16.840.1.113883.2.4.6.3

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
kib() { awk -v k="$1" '/^'"$1"':/ { print $2 }' "/proc/$2/status"; }
# cpu PID: CPU-seconds (user + system, all threads) the process used so far
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
client_cpu() { awk '{ printf "%.2f", $1 + $2 }' "$BENCH_DIR/time.txt"; }
load() { cut -d' ' -f1 /proc/loadavg; }

mkdir -p "$BENCH_DIR"
prepare_beeldbrug

# What a run leaves (gateway data dirs, Orthanc A's store) is moved aside, not deleted, until
# the end of the script: ext4 allocates no inode freed in the last 5-35 s, and skips each such
# one by reading its inode table (`recently_deleted`), so thousands of files deleted just
# before a run made every file created in it (at A, B and Orthanc A) pay that walk: 27-29 %
# of each gateway's CPU in `perf` (2026-12-06). Removed once, at the start, 40 s before.
TRASH=$BENCH_DIR/trash
retire() { if [ -e "$1" ]; then mkdir -p "$TRASH" && mv "$1" "$TRASH/$(date +%s%N)"; fi; }
if [ -e "$TRASH" ] || [ -e "$BENCH_DIR/run" ] || [ -e "$BENCH_DIR/orthanc-A" ]; then
    rm -rf "$TRASH" "$BENCH_DIR/run" "$BENCH_DIR/orthanc-A"
    log "removed the last runs' files; 40 s for ext4 to forget them"
    sleep 40
fi

# --- the study (generate writes valid BSNs as Patient IDs) -------------------------------------
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
BSN=$(find "$CT_DIR" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' -quit)
STUDY=$(find "$CT_DIR" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' -quit)

# --- certificates, participants, consent --------------------------------------------------------
P=$BENCH_DIR/pki
if [ ! -f "$P/.complete" ]; then
    rm -rf "$P" && mkdir -p "$P"
    (
        cd "$P"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=xca bench CA" -keyout ca-key.pem -out ca.pem \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign
        for gw in a b; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=gateway-$gw" \
                -keyout $gw-key.pem -out $gw.csr
            openssl x509 -req -in $gw.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
                -out $gw.pem -extfile <(printf "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        done
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=xua gateway-a" \
            -keyout xua-a-key.pem -out xua-a.pem
    ) 2>/dev/null
    touch "$P/.complete"
fi
fp() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }
cat >"$BENCH_DIR/participants-a.toml" <<EOF
[[participant]]
name = "GtK B"
ura = "22220000"
home_community_id = "urn:oid:1.2.3.4.5.22"
certificate_sha256 = "$(fp "$P/b.pem")"
query_url = "https://$HOST:$B_HTTP/xca/query"
retrieve_url = "https://$HOST:$B_HTTP/xca/retrieve"
dicomweb_url = "https://$HOST:$B_HTTP/dicomweb"
EOF
cat >"$BENCH_DIR/participants-b.toml" <<EOF
[[participant]]
name = "GtK A"
ura = "11110000"
home_community_id = "urn:oid:1.2.3.4.5.21"
certificate_sha256 = "$(fp "$P/a.pem")"
EOF
printf '[[consent]]\nbsn = "%s"\ndecision = "Permit"\n' "$BSN" >"$BENCH_DIR/consents.toml"
"$BB" mitz-sim --listen "$HOST:$MITZ" --consents "$BENCH_DIR/consents.toml" >"$BENCH_DIR/mitz.log" 2>&1 &
PIDS+=($!)

# --- Orthanc B (loaded once, kept) and Orthanc A (empty every run) ------------------------------
# start_orthanc NAME DIMSE HTTP: sets OPID
start_orthanc() {
    local dir=$BENCH_DIR/orthanc-$1
    mkdir -p "$dir"
    cat >"$dir/orthanc.json" <<EOF
{
  "Name": "xca-bench-$1", "StorageDirectory": "$dir/storage", "IndexDirectory": "$dir/storage",
  "Plugins": [], "HttpPort": $3, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomAet": "ORTHANC$1", "DicomPort": $2, "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowFind": true,
  "DicomAlwaysAllowGet": true, "DicomAlwaysAllowMove": true,
  "DicomModalities": { "ORTHANCA": ["ORTHANCA", "$HOST", $OA_DIMSE], "GATEWAYB": ["BEELDBRUG", "$HOST", $B_DIMSE],
                       "RELAYA": ["RELAYA", "$HOST", $RELAY_IN] },
  "MaximumPduLength": $PDU, "SyncStorageArea": false, "SaveJobs": false
}
EOF
    TCP_NODELAY=1 "$ORTHANC" "$dir/orthanc.json" >>"$dir/orthanc.log" 2>&1 &
    OPID=$!
    PIDS+=("$OPID")
    wait_ready "ORTHANC$1" "$2" "http://$HOST:$3/system" "$OPID" "$dir/orthanc.log"
}
count() { curl -sf "http://$HOST:$1/statistics" | sed -n 's/.*"CountInstances" *: *\([0-9]*\).*/\1/p'; }

if [ ! -f "$BENCH_DIR/orthanc-B.complete" ]; then
    rm -rf "$BENCH_DIR/orthanc-B"
    start_orthanc B $OB_DIMSE $OB_HTTP
    log "loading the study ($N instances, $MB MB) into Orthanc B"
    /usr/bin/storescu -aet BENCH -aec ORTHANCB --max-pdu "$PDU" +sd +r +sp "*.dcm" "$HOST" $OB_DIMSE "$CT_DIR" \
        >"$BENCH_DIR/storescu.log" 2>&1 || die "storescu to Orthanc B failed"
    [ "$(count $OB_HTTP)" = "$N" ] || die "Orthanc B holds $(count $OB_HTTP) of $N"
    stop "$OPID"
    touch "$BENCH_DIR/orthanc-B.complete"
fi
start_orthanc B $OB_DIMSE $OB_HTTP
OBPID=$OPID

# --- the gateways (fresh data dirs every run) -----------------------------------------------
gateway_toml() { # NAME: the configuration of gateway A or B
    local d=$BENCH_DIR/run/$1
    if [ "$1" = a ]; then cat <<EOF
[dimse]
listen = "$HOST:$A_DIMSE"
[[dimse.peers]]
ae_title = "WORKSTATION"
host = "$HOST"
port = 1
organisation_ura = "11110000"
role = "01.015"
purpose_of_use = "TREAT"
uzi = "900012345"
[[dimse.peers]]
ae_title = "ORTHANCA"
host = "$HOST"
port = $OA_DIMSE
[http]
listen = "$HOST:$A_HTTP"
[storage]
data_dir = "$d"
[tls]
cert_file = "$P/a.pem"
key_file = "$P/a-key.pem"
client_ca_file = "$P/ca.pem"
[trust]
participants_file = "$BENCH_DIR/participants-a.toml"
own_ura = "11110000"
[trust.saml]
issuer = "https://xua.gateway-a.test"
signing_cert_file = "$P/xua-a.pem"
signing_key_file = "$P/xua-a-key.pem"
[remote]
enabled = true
timeout_secs = 30
prefer_wado_rs = ${A_WADO_RS:-false}
EOF
    else cat <<EOF
[dimse]
listen = "$HOST:$B_DIMSE"
[http]
listen = "$HOST:$B_HTTP"
[storage]
data_dir = "$d"
[tls]
cert_file = "$P/b.pem"
key_file = "$P/b-key.pem"
client_ca_file = "$P/ca.pem"
[trust]
participants_file = "$BENCH_DIR/participants-b.toml"
own_ura = "22220000"
[[trust.saml.trusted_issuers]]
issuer = "https://xua.gateway-a.test"
cert_file = "$P/xua-a.pem"
gateways = ["GtK A"]
[trust.consent]
url = "http://$HOST:$MITZ/"
purposes = ["TREAT"]
[xds]
enabled = true
home_community_id = "urn:oid:1.2.3.4.5.22"
repository_unique_id = "1.2.3.4.5.22.1"
source_id = "1.2.3.4.5.22.2"
organisation_name = "Ziekenhuis B"
[pacs]
ae_title = "ORTHANCB"
host = "$HOST"
port = $OB_DIMSE
retrieve = "${B_RETRIEVE:-c-get}"
probe_at_start = false
EOF
    fi
}
start_gateway() { # NAME: sets GPID
    local d=$BENCH_DIR/run/$1
    retire "$d" && mkdir -p "$d"
    gateway_toml "$1" >"$BENCH_DIR/run/$1.toml"
    # No backtrace capture (a deployment default): with RUST_BACKTRACE=1 inherited from the
    # shell, dicom-rs's snafu errors on the decode path captured a stack each (4.6 % of
    # gateway B's samples, 2026-12-06).
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE RUST_LOG=warn "$BB" serve --config "$BENCH_DIR/run/$1.toml" >"$BENCH_DIR/run/$1.log" 2>&1 &
    GPID=$!
    PIDS+=("$GPID")
    local port=$A_DIMSE
    [ "$1" = b ] && port=$B_DIMSE
    wait_ready BEELDBRUG "$port" "" "$GPID" "$BENCH_DIR/run/$1.log"
}

# first_instance T0: seconds from T0 until Orthanc A holds an instance (polled every 20 ms)
watch_first() {
    local t0=$1
    while [ "$(count $OA_HTTP)" = 0 ]; do sleep 0.02; done
    since "$t0" >"$BENCH_DIR/first"
}

# run_direct [relayed]: movescu asks B's Orthanc to C-MOVE the study to A's Orthanc. With
# `relayed`, its C-STOREs go through two socat relays joined by mTLS (the gateways'
# certificates; 128 KiB blocks, no Nagle, as the gateways' sockets).
run_direct() {
    local mode=${1:-direct} dest=ORTHANCA relays=()
    retire "$BENCH_DIR/orthanc-A"
    start_orthanc A $OA_DIMSE $OA_HTTP
    if [ "$mode" = relayed ]; then
        socat -b 131072 "OPENSSL-LISTEN:$RELAY_TLS,bind=$HOST,reuseaddr,fork,nodelay,cert=$P/b.pem,key=$P/b-key.pem,cafile=$P/ca.pem,verify=1" \
            "TCP:$HOST:$OA_DIMSE,nodelay" 2>>"$BENCH_DIR/relay.log" &
        relays+=($!)
        socat -b 131072 "TCP-LISTEN:$RELAY_IN,bind=$HOST,reuseaddr,fork,nodelay" \
            "OPENSSL:$HOST:$RELAY_TLS,nodelay,cert=$P/a.pem,key=$P/a-key.pem,cafile=$P/ca.pem,verify=1" 2>>"$BENCH_DIR/relay.log" &
        relays+=($!)
        PIDS+=("${relays[@]}")
        dest=RELAYA
        sleep 0.3
    fi
    local t0 oa0 ob0 l0
    oa0=$(cpu $OPID) ob0=$(cpu $OBPID) l0=$(load)
    t0=$(now)
    watch_first "$t0" &
    local watcher=$!
    /usr/bin/time -f '%U %S' -o "$BENCH_DIR/time.txt" \
        /usr/bin/movescu -S -aet BENCH -aec ORTHANCB -aem $dest --max-pdu $PDU -to 60 -td 600 \
        -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$STUDY" "$HOST" $OB_DIMSE >"$BENCH_DIR/movescu-$mode.log" 2>&1
    local total
    total=$(since "$t0")
    wait "$watcher"
    [ "$(count $OA_HTTP)" = "$N" ] || die "$mode: Orthanc A holds $(count $OA_HTTP) of $N"
    local extra=
    if [ "$mode" = relayed ]; then
        # socat forks a child per connection: the listeners' CPU includes their waited-for
        # children (which end with Orthanc B's association, just after movescu).
        sleep 0.3
        local stats=() r
        for r in "${relays[@]}"; do stats+=("/proc/$r/stat"); done
        extra=" relays=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); s += $12 + $13 + $14 + $15 } END { printf "%.2f", s / hz }' "${stats[@]}")"
    fi
    echo "$total $(cat "$BENCH_DIR/first")" >>"$BENCH_DIR/$mode.txt"
    echo "$mode total=$total$extra orthancB=$(minus "$(cpu $OBPID)" "$ob0") orthancA=$(minus "$(cpu $OPID)" "$oa0") movescu=$(client_cpu) load=$l0-$(load)" >>"$BENCH_DIR/cpu.txt"
    log "$mode: $total s, first instance after $(cat "$BENCH_DIR/first") s; $(tail -1 "$BENCH_DIR/cpu.txt")"
    local p
    for p in "${relays[@]}"; do stop "$p"; done
    stop "$OPID"
}

run_gateways() {
    retire "$BENCH_DIR/orthanc-A"
    start_orthanc A $OA_DIMSE $OA_HTTP
    start_gateway b
    local bpid=$GPID
    start_gateway a
    local apid=$GPID
    # Locate the study through A (B publishes it from its Orthanc on this first query).
    /usr/bin/findscu -S -aet WORKSTATION -aec BEELDBRUG -k QueryRetrieveLevel=STUDY -k PatientID="$BSN" \
        -k StudyInstanceUID "$HOST" $A_DIMSE >"$BENCH_DIR/findscu.log" 2>&1
    grep -q "$STUDY" "$BENCH_DIR/findscu.log" 2>/dev/null || /usr/bin/findscu -v -S -aet WORKSTATION -aec BEELDBRUG \
        -k QueryRetrieveLevel=STUDY -k PatientID="$BSN" -k StudyInstanceUID "$HOST" $A_DIMSE 2>&1 | grep -q "$STUDY" \
        || die "A does not find B's study (logs: $BENCH_DIR/run)"
    local a_idle b_idle
    a_idle=$(kib VmRSS $apid)
    b_idle=$(kib VmRSS $bpid)
    local t0 a0 b0 oa0 ob0 l0 perfs=()
    RUN=$((RUN + 1))
    if [ "${PERF:-}" = 1 ]; then
        perf record -F 999 --call-graph "${PERF_CALLGRAPH:-fp}" -p "$apid" -o "$BENCH_DIR/perf-a-$RUN.data" >/dev/null 2>&1 &
        perfs+=($!)
        perf record -F 999 --call-graph "${PERF_CALLGRAPH:-fp}" -p "$bpid" -o "$BENCH_DIR/perf-b-$RUN.data" >/dev/null 2>&1 &
        perfs+=($!)
        sleep 0.5
    elif [ "${PERF:-}" = 2 ]; then
        local p
        for p in "a:$apid" "b:$bpid" "oa:$OPID" "ob:$OBPID"; do
            perf record -F 999 --call-graph "${PERF_CALLGRAPH:-fp}" -p "${p#*:}" -o "$BENCH_DIR/perf-${p%%:*}-$RUN.data" >/dev/null 2>&1 &
            perfs+=($!)
        done
        sleep 0.5
    fi
    a0=$(cpu $apid) b0=$(cpu $bpid) oa0=$(cpu $OPID) ob0=$(cpu $OBPID) l0=$(load)
    t0=$(now)
    watch_first "$t0" &
    local watcher=$!
    /usr/bin/time -f '%U %S' -o "$BENCH_DIR/time.txt" \
        /usr/bin/movescu -S -aet WORKSTATION -aec BEELDBRUG -aem ORTHANCA -to 60 -td 600 \
        -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$STUDY" "$HOST" $A_DIMSE >"$BENCH_DIR/movescu-gateways.log" 2>&1
    local total
    total=$(since "$t0")
    wait "$watcher"
    local cpus
    cpus="gatewayA=$(minus "$(cpu $apid)" "$a0") gatewayB=$(minus "$(cpu $bpid)" "$b0") orthancB=$(minus "$(cpu $OBPID)" "$ob0") orthancA=$(minus "$(cpu $OPID)" "$oa0") movescu=$(client_cpu)"
    for p in "${perfs[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [ "$(count $OA_HTTP)" = "$N" ] || die "gateways: Orthanc A holds $(count $OA_HTTP) of $N"
    local a_peak b_peak
    a_peak=$(( ($(kib VmHWM $apid) - a_idle) / 1024 ))
    b_peak=$(( ($(kib VmHWM $bpid) - b_idle) / 1024 ))
    echo "$total $(cat "$BENCH_DIR/first") $a_peak $b_peak" >>"$BENCH_DIR/gateways$SUFFIX.txt"
    echo "gateways$SUFFIX (B by ${B_RETRIEVE:-c-get}, A by $([ "${A_WADO_RS:-false}" = true ] && echo WADO-RS || echo RAD-75)) total=$total $cpus load=$l0-$(load)" >>"$BENCH_DIR/cpu.txt"
    cp "$BENCH_DIR/run/a.log" "$BENCH_DIR/a-$RUN.log"
    cp "$BENCH_DIR/run/b.log" "$BENCH_DIR/b-$RUN.log"
    log "gateways$SUFFIX: $total s, first instance after $(cat "$BENCH_DIR/first") s, RSS above idle A $a_peak MB, B $b_peak MB; $cpus"
    stop "$apid"
    stop "$bpid"
    stop "$OPID"
}

BB1=$BB
if [ -n "${BB_BIN2:-}" ]; then
    [ -x "$BB_BIN2" ] || die "BB_BIN2=$BB_BIN2 is not an executable"
    BB2=$BENCH_DIR/beeldbrug2
    cp "$BB_BIN2" "$BB2.tmp" && mv "$BB2.tmp" "$BB2"
    BB_VERSION="$BB_VERSION; 2: binary $BB_BIN2, sha256 $(sha256sum "$BB2" | cut -c1-12)"
fi
rm -f "$BENCH_DIR/direct.txt" "$BENCH_DIR/relayed.txt" "$BENCH_DIR/gateways.txt" "$BENCH_DIR/gateways2.txt" "$BENCH_DIR/cpu.txt"
RUN=0
log "study: $N instances, $MB MB; $REPS runs each, alternating"
for i in $(seq 1 "$REPS"); do
    run_direct
    if [ "${RELAY:-}" = 1 ]; then run_direct relayed; fi
    BB=$BB1 SUFFIX= run_gateways
    if [ -n "${BB2:-}" ]; then BB=$BB2 SUFFIX=2 B_RETRIEVE=${B_RETRIEVE2:-${B_RETRIEVE:-c-get}} A_WADO_RS=${A_WADO_RS2:-${A_WADO_RS:-false}} run_gateways; fi
done

rm -rf "$TRASH"

col() { awk -v c="$2" '{ print $c }' "$BENCH_DIR/$1.txt" | median; }
D=$(col direct 1) G=$(col gateways 1)
echo
echo "beeldbrug $BB_VERSION; $N instances, $MB MB; medians of $REPS"
printf '%-44s %8s %12s %10s %10s\n' "" "total s" "1st inst. s" "A RSS MB" "B RSS MB"
printf '%-44s %8s %12s %10s %10s\n' "movescu: Orthanc B -> Orthanc A (direct)" "$D" "$(col direct 2)" "-" "-"
if [ "${RELAY:-}" = 1 ]; then
    R=$(col relayed 1)
    printf '%-44s %8s %12s %10s %10s\n' "the same through two relays joined by mTLS" "$R" "$(col relayed 2)" "-" "-"
    awk -v r="$R" -v d="$D" 'BEGIN { printf "ratio relayed / direct: %.2f\n", r / d }'
fi
printf '%-44s %8s %12s %10s %10s\n' "C-MOVE via A <- RAD-75/mTLS <- B <- C-GET" "$G" "$(col gateways 2)" "$(col gateways 3)" "$(col gateways 4)"
awk -v g="$G" -v d="$D" 'BEGIN { printf "ratio gateways / direct: %.2f\n", g / d }'
if [ -n "${BB2:-}" ]; then
    G2=$(col gateways2 1)
    printf '%-44s %8s %12s %10s %10s\n' "the same, BB_BIN2" "$G2" "$(col gateways2 2)" "$(col gateways2 3)" "$(col gateways2 4)"
    awk -v g="$G2" -v d="$D" 'BEGIN { printf "ratio BB_BIN2 gateways / direct: %.2f\n", g / d }'
fi
echo "CPU-seconds per run ($BENCH_DIR/cpu.txt):"
cat "$BENCH_DIR/cpu.txt"
