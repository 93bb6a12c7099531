#!/usr/bin/env bash
# TLS at line rate (issue 16 section 6): a cached WADO-RS study retrieve over mTLS against the
# same retrieve over plain HTTP, with curl (OpenSSL) as the client, and the server's CPU per GB
# in each, next to the cost of AES-GCM measured on its own. One run, retrieves interleaved so
# the machine's drift hits every server alike.
#
#   plain  `beeldbrug serve`, plain HTTP, [dicomweb] allow_anonymous = true
#   tls    the same over HTTPS with mTLS ([tls] cert_file, key_file, client_ca_file; a test
#          CA, server and client certificate, EC P-256, made here with openssl), the client's
#          certificate on the participant list (so it is admitted without a token: the
#          trust policy's own cost is benches/trust.sh's subject, not this one's)
#
# Each binary under test gets both servers, on copies of one data directory loaded once with
# DCMTK storescu, so several builds (say base and new) are measured back to back in one run.
# Per retrieve: curl -o /dev/null (a new connection each, the handshake included), over mTLS
# once with HTTP/1.1 and once with h2 (curl's choice by ALPN when not told), wall time and time to first byte from curl, the client's
# CPU from /usr/bin/time, the server's CPU as utime + stime of /proc/<pid>/stat before and
# after. The AES-GCM reference: `openssl speed -evp aes-128-gcm` (OpenSSL, the client's
# cipher) and benches/tls_records.rs (ring's AES-128-GCM on 16 KiB records, the server's
# cipher; and rustls' whole record path without a socket).
#
# Usage: benches/tls.sh            (see benches/README.md)
# Environment (defaults in brackets):
#   BENCH_DIR [/tmp/beeldbrug-tls-bench]   inputs, stores, PKI and logs
#   CT_SLICES [2000]     slices of the retrieved CT study (512x512x16 bit, ~0.5 MB each)
#   REPS [7]             retrieves per server (after one untimed warm-up each)
#   BB_BINS [unset]      binaries to measure, "label=path label=path ..." (e.g.
#                        "base=/tmp/bb-base new=/tmp/bb-new"); unset: a release build of this
#                        checkout, labelled by its commit
#   RECORDS [1]          1: run benches/tls_records.rs (cargo bench, release) for ring's
#                        AES-GCM and rustls' record path on their own; 0 skips it
#   RECORDS_MB [2000]    megabytes through each tls_records measurement
#   PERF [0]             1: also `perf record` the last binary's tls server during PERF_REPS
#                        extra, untimed retrieves (profile in $BENCH_DIR/perf-tls.txt)
#   PERF_REPS [3]        PERF_PROTO [h1]   h1 or h2: which of the tls retrieves to profile
#   PDU [131072]         max PDU of the storescu load
#   BASE_PORT [11360]    DIMSE/HTTP ports from BASE_PORT on 127.0.0.1 (two per server)
#   CARGO_TARGET_DIR [<repo>/target]   BEELDBRUG_LOG [warn]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-tls-bench}
CT_SLICES=${CT_SLICES:-2000}
REPS=${REPS:-7}
BB_BINS=${BB_BINS:-}
RECORDS=${RECORDS:-1}
RECORDS_MB=${RECORDS_MB:-2000}
PERF=${PERF:-0}
PERF_REPS=${PERF_REPS:-3}
PDU=${PDU:-131072}
BASE_PORT=${BASE_PORT:-11360}
HOST=127.0.0.1
ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*'
OWN_URA=12345678
export TCP_NODELAY=1 # DCMTK: disable Nagle

# shellcheck source=lib.sh
source "$ROOT/benches/lib.sh"

for tool in storescu echoscu; do
    [ -x "/usr/bin/$tool" ] || die "DCMTK $tool missing: apt-get install -y dcmtk"
done
for tool in curl openssl python3; do
    command -v "$tool" >/dev/null || die "$tool missing: apt-get install -y $tool"
done
[ -x /usr/bin/time ] || die "/usr/bin/time missing: apt-get install -y time"
[ "$PERF" = 0 ] || command -v perf >/dev/null || die "PERF=1 needs perf (apt-get install -y linux-perf)"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f\n", b - a }'; }
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

START=$(now)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$BENCH_DIR"

# --- binaries -------------------------------------------------------------------------------
LABELS=()
declare -A BIN=() VERSION=()
if [ -z "$BB_BINS" ]; then
    BB_BIN='' prepare_beeldbrug
    label=$(cd "$ROOT" && git rev-parse --short HEAD)
    mkdir -p "$BENCH_DIR/bin"
    mv "$BB" "$BENCH_DIR/bin/$label"
    LABELS+=("$label")
    BIN[$label]=$BENCH_DIR/bin/$label
    VERSION[$label]=$BB_VERSION
else
    mkdir -p "$BENCH_DIR/bin"
    for pair in $BB_BINS; do
        label=${pair%%=*}
        path=${pair#*=}
        [ -x "$path" ] || die "$label: $path is not an executable"
        cp "$path" "$BENCH_DIR/bin/$label"
        LABELS+=("$label")
        BIN[$label]=$BENCH_DIR/bin/$label
        VERSION[$label]="$path, sha256 $(sha256sum "$path" | cut -c1-12)"
    done
fi
FIRST=${BIN[${LABELS[0]}]}

# --- inputs ---------------------------------------------------------------------------------
CT_DIR=$BENCH_DIR/input-ct-$CT_SLICES
if [ ! -f "$CT_DIR.complete" ]; then
    log "generating $CT_DIR"
    rm -rf "$CT_DIR"
    "$FIRST" generate -o "$CT_DIR" --seed 1 --patients 1 --ct-slices "$CT_SLICES" --mr-slices 0 >/dev/null
    touch "$CT_DIR.complete"
fi
N=$(find "$CT_DIR" -type f -name '*.dcm' | wc -l)
[ "$N" = "$CT_SLICES" ] || die "$CT_DIR holds $N files, expected $CT_SLICES"
STUDY=$(find "$CT_DIR" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' -quit)

PKI=$BENCH_DIR/pki
if [ ! -f "$PKI/complete" ]; then
    log "making the test PKI in $PKI (openssl, EC P-256)"
    rm -rf "$PKI"
    mkdir -p "$PKI"
    (
        cd "$PKI"
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -keyout ca.key -out ca.pem -subj "/CN=beeldbrug tls bench CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        leaf() { # leaf NAME CN EKU SAN
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
            printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' "$3" "$4" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
                -extfile "$1.ext" -out "$1.pem" 2>/dev/null
        }
        leaf server localhost serverAuth "subjectAltName=IP:127.0.0.1,DNS:localhost"
        leaf client "tls bench remote gateway" clientAuth "subjectAltName=DNS:gateway.bench.example"
        touch complete
    )
fi
FPR=$(openssl x509 -noout -fingerprint -sha256 -in "$PKI/client.pem" | cut -d= -f2)
cat >"$BENCH_DIR/participants.toml" <<EOF
[[participant]]
name = "TLS bench remote gateway"
ura = "87654321"
home_community_id = "urn:oid:2.16.840.1.113883.2.4.6.6.99"
certificate_sha256 = "$FPR"
EOF
CLIENT_TLS=(--cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key")

write_config() { # write_config MODE DIR DIMSE_PORT HTTP_PORT
    {
        cat <<EOF
[dimse]
listen = "$HOST:$3"
max_pdu = $PDU
[http]
listen = "$HOST:$4"
[storage]
data_dir = "$2/data"
[dicomweb]
allow_anonymous = true
[trust]
own_ura = "$OWN_URA"
participants_file = "$BENCH_DIR/participants.toml"
EOF
        if [ "$1" = tls ]; then
            cat <<EOF
[tls]
cert_file = "$PKI/server.pem"
key_file = "$PKI/server.key"
client_ca_file = "$PKI/ca.pem"
EOF
        fi
    } >"$2/beeldbrug.toml"
}

health() { # health MODE PORT
    if [ "$1" = tls ]; then
        curl -sf -o /dev/null "${CLIENT_TLS[@]}" "https://$HOST:$2/health"
    else
        curl -sf -o /dev/null "http://$HOST:$2/health"
    fi
}

start_server() { # start_server BIN MODE DIR DIMSE_PORT HTTP_PORT: sets PID
    BEELDBRUG_LOG=${BEELDBRUG_LOG:-warn} "$1" serve --config "$3/beeldbrug.toml" >>"$3/beeldbrug.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_ready BEELDBRUG "$4" "" "$PID" "$3/beeldbrug.log"
    for _ in $(seq 1 100); do
        health "$2" "$5" && return 0
        sleep 0.1
    done
    tail -20 "$3/beeldbrug.log" >&2
    die "$3: /health did not answer"
}

# --- one data directory, loaded once, copied for every server ---------------------------------
SEED=$BENCH_DIR/seed
rm -rf "$SEED" "$BENCH_DIR"/store-*
mkdir -p "$SEED"
write_config plain "$SEED" "$BASE_PORT" "$((BASE_PORT + 1))"
start_server "$FIRST" plain "$SEED" "$BASE_PORT" "$((BASE_PORT + 1))"
t0=$(now)
/usr/bin/storescu -aet BENCH -aec BEELDBRUG --max-pdu "$PDU" +sd +r +sp "*.dcm" "$HOST" "$BASE_PORT" "$CT_DIR" \
    >>"$SEED/storescu.log" 2>&1 || { tail -20 "$SEED/storescu.log" >&2; die "storescu failed"; }
log "loaded $N instances in $(since "$t0") s"
stop "$PID"
BYTES=$(find "$SEED/data/blobs" -type f -name '*.dcm' -printf '%s\n' | awk '{ s += $1 } END { print s }')
got=$(find "$SEED/data/blobs" -type f -name '*.dcm' | wc -l)
[ "$got" = "$N" ] || die "the seed store holds $got of $N instances"

SERVERS=()
declare -A SPID=() URL=() SMODE=() SLABEL=()
port=$((BASE_PORT + 2))
for label in "${LABELS[@]}"; do
    for mode in plain tls; do
        s=$label-$mode
        dir=$BENCH_DIR/store-$s
        mkdir -p "$dir"
        cp -a --reflink=auto "$SEED/data" "$dir/data"
        write_config "$mode" "$dir" "$port" "$((port + 1))"
        start_server "${BIN[$label]}" "$mode" "$dir" "$port" "$((port + 1))"
        SERVERS+=("$s")
        SPID[$s]=$PID
        SMODE[$s]=$mode
        SLABEL[$s]=$label
        scheme=http
        [ "$mode" = tls ] && scheme=https
        URL[$s]=$scheme://$HOST:$((port + 1))/dicomweb/studies/$STUDY
        log "$s: ${URL[$s]} (pid $PID)"
        port=$((port + 2))
    done
done
sync
sleep 1

# What is retrieved: per build, plain HTTP/1.1, and over mTLS both HTTP/1.1 (`--http1.1`) and
# h2 (curl's default over TLS, ALPN), from the same tls server.
TARGETS=()
declare -A TSERVER=() TPROTO=()
for label in "${LABELS[@]}"; do
    TARGETS+=("$label-plain" "$label-tls-h1" "$label-tls-h2")
    TSERVER[$label-plain]=$label-plain
    TSERVER[$label-tls-h1]=$label-tls
    TSERVER[$label-tls-h2]=$label-tls
    TPROTO[$label-plain]=--http1.1
    TPROTO[$label-tls-h1]=--http1.1
    TPROTO[$label-tls-h2]=--http2
done

# retrieve TARGET: one curl retrieve; prints "wall ttfb bytes server_cpu client_cpu http_version"
retrieve() {
    local t=$1 s=${TSERVER[$1]} tls=() c0 c1 out
    [ "${SMODE[$s]}" = tls ] && tls=("${CLIENT_TLS[@]}")
    c0=$(cpu_ticks "${SPID[$s]}")
    out=$(/usr/bin/time -f '%U %S' -o "$BENCH_DIR/time.out" \
        curl -sS -o /dev/null "${TPROTO[$t]}" -H "Accept: $ACCEPT" -H 'Accept-Encoding: identity' "${tls[@]}" \
        -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{http_version}' "${URL[$s]}")
    c1=$(cpu_ticks "${SPID[$s]}")
    read -r code size ttfb total version <<<"$out"
    [ "$code" = 200 ] || die "$t: HTTP $code"
    [ "$size" -gt "$BYTES" ] || die "$t: $size bytes, less than the study's $BYTES"
    awk -v t="$total" -v f="$ttfb" -v b="$size" -v c0="$c0" -v c1="$c1" -v k="$TICK" -v v="$version" \
        -v u="$(cat "$BENCH_DIR/time.out")" \
        'BEGIN { split(u, x, " "); printf "%s %s %s %.3f %.3f %s\n", t, f, b, (c1 - c0) / k, x[1] + x[2], v }'
}

log "warm-up: one retrieve per target"
for t in "${TARGETS[@]}"; do retrieve "$t" >/dev/null; done

SAMPLES=$BENCH_DIR/samples.tsv
: >"$SAMPLES"
log "measuring: ${TARGETS[*]}, $REPS rounds, the order reversed every other round"
RUN_START=$(now)
for r in $(seq 1 "$REPS"); do
    order=("${TARGETS[@]}")
    if [ $((r % 2)) = 0 ]; then
        order=()
        for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[$i]}"); done
    fi
    for t in "${order[@]}"; do
        label=${SLABEL[${TSERVER[$t]}]}
        printf '%s\t%s\t%s\t%s\n' "$r" "$label" "${t#"$label"-}" "$(retrieve "$t" | tr ' ' '\t')" >>"$SAMPLES"
    done
done
RUN_SECS=$(since "$RUN_START")

if [ "$PERF" = 1 ]; then
    last=${LABELS[$((${#LABELS[@]} - 1))]}-tls-${PERF_PROTO:-h1}
    log "perf record of $last during $PERF_REPS extra retrieves (not part of the figures)"
    perf record -F 999 --call-graph dwarf,16384 -p "${SPID[${TSERVER[$last]}]}" -o "$BENCH_DIR/perf-tls.data" -- sleep 3600 >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 1
    for _ in $(seq 1 "$PERF_REPS"); do retrieve "$last" >/dev/null; done
    kill -INT "$PERF_PID"
    wait "$PERF_PID" || true
    perf report -i "$BENCH_DIR/perf-tls.data" --no-children --sort dso,symbol -g none --percent-limit 0.5 \
        --stdio 2>/dev/null | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' >"$BENCH_DIR/perf-tls.txt" || true
fi

# --- AES-GCM on its own -------------------------------------------------------------------------
OPENSSL_SPEED=$BENCH_DIR/openssl-speed.txt
openssl speed -evp aes-128-gcm -bytes 16384 -seconds 2 >"$OPENSSL_SPEED" 2>/dev/null || true
RECORDS_OUT=$BENCH_DIR/tls-records.tsv
: >"$RECORDS_OUT"
if [ "$RECORDS" = 1 ]; then
    log "benches/tls_records.rs: ring AES-GCM and rustls' record path, $RECORDS_MB MB each"
    (
        cd "$ROOT"
        cargo bench --quiet --bench tls_records -- aead "$RECORDS_MB"
        cargo bench --quiet --bench tls_records -- rustls "$RECORDS_MB" 1048576 65536
        cargo bench --quiet --bench tls_records -- rustls "$RECORDS_MB" 1048576 1048576
    ) >>"$RECORDS_OUT" 2>"$BENCH_DIR/tls-records.log" || log "tls_records failed (see $BENCH_DIR/tls-records.log)"
fi

# --- report -------------------------------------------------------------------------------------
REPORT=$BENCH_DIR/results.md
{
    echo "## TLS at line rate: results ($START_DATE)"
    echo
    echo "Machine: $(nproc) vCPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; whole run $(since "$START") s (retrieves $RUN_SECS s); load average (1/5/15 min) $START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo "Versions: $(curl --version | head -1 | cut -d' ' -f1-5), $(openssl version | cut -d' ' -f1-2); kernel TLS ULP available: $(grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null && echo yes || echo no)."
    for label in "${LABELS[@]}"; do echo "- $label: ${VERSION[$label]}"; done
    echo "Data: one CT study of $N slices, $BYTES bytes as stored; $REPS retrieves per server (curl, new connection each), interleaved."
    echo
    python3 - "$SAMPLES" "$OPENSSL_SPEED" "$RECORDS_OUT" "${LABELS[@]}" <<'EOF'
import statistics as st, sys
samples, speed, records, labels = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
MODES = ("plain", "tls-h1", "tls-h2")
rows = [l.rstrip("\n").split("\t") for l in open(samples) if l.strip()]
by = {}
for r, label, mode, wall, ttfb, size, scpu, ccpu, version in rows:
    by.setdefault((label, mode), []).append(dict(
        r=int(r), wall=float(wall), ttfb=float(ttfb), size=int(size), scpu=float(scpu), ccpu=float(ccpu), version=version))
med = lambda k, xs: st.median(x[k] for x in xs)
print("| build | mode (HTTP version) | median wall | MB/s | first byte | server CPU / GB | client CPU / GB |")
print("|---|---|---:|---:|---:|---:|---:|")
agg = {}
for label in labels:
    for mode in MODES:
        xs = by[(label, mode)]
        size = xs[0]["size"]
        g = size / 1e9
        agg[(label, mode)] = (med("wall", xs), st.median(x["scpu"] / g for x in xs), st.median(x["ccpu"] / g for x in xs))
        print(f"| {label} | {mode} ({xs[0]['version']}) | {agg[(label, mode)][0]:.3f} s | {size / 1e6 / agg[(label, mode)][0]:.0f} | "
              f"{med('ttfb', xs) * 1000:.1f} ms | {agg[(label, mode)][1]:.3f} s | {agg[(label, mode)][2]:.3f} s |")
print()
ref = {}
for line in open(speed):
    f = line.split()
    if f and f[0].upper().startswith("AES-128-GCM") and f[-1].endswith("k"):
        ref["openssl speed -evp aes-128-gcm (16 KiB blocks)"] = 1e9 / (float(f[-1][:-1]) * 1000)
for line in open(records):
    f = line.rstrip("\n").split("\t")
    if len(f) == 7:
        # CPU seconds per GB (10 ms ticks; the wall clock would count a loaded machine's waits)
        ref[f"tls_records {f[0]} {f[1]}"] = float(f[6]) if float(f[4]) > 0 else float(f[3]) / (float(f[2]) / 1e3)
if ref:
    print("| on its own (one thread, no socket) | s / GB |")
    print("|---|---:|")
    for k, v in ref.items():
        print(f"| {k} | {v:.3f} |")
    print()
ring = next((v for k, v in ref.items() if "aead AES-128-GCM" in k), None)
print("| build | mode | wall ÷ plain (ratio of medians) | per-round ratios, median (range) | server CPU added by TLS / GB | added ÷ ring AES-128-GCM alone |")
print("|---|---|---:|---:|---:|---:|")
for label in labels:
    p = {x["r"]: x["wall"] for x in by[(label, "plain")]}
    for mode in MODES[1:]:
        t = {x["r"]: x["wall"] for x in by[(label, mode)]}
        per = [t[r] / p[r] for r in sorted(set(p) & set(t))]
        added = agg[(label, mode)][1] - agg[(label, "plain")][1]
        vs = f"{added / ring:.2f}" if ring else ""
        print(f"| {label} | {mode} | {agg[(label, mode)][0] / agg[(label, 'plain')][0]:.2f} | {st.median(per):.2f} "
              f"({min(per):.2f}-{max(per):.2f}) | {added:.3f} s | {vs} |")
EOF
} | tee "$REPORT"
log "report written to $REPORT (samples in $SAMPLES)"
