#!/usr/bin/env bash
# Trust benchmark (issue 5): the added cost of the full trust path on DICOMweb, beeldbrug
# `serve` (release build) with trust off against trust on, on the same generated data, in
# one run, requests interleaved so that the machine's drift hits every mode alike:
#   off    plain HTTP, [dicomweb] allow_anonymous = true, no token, no consent
#   on     HTTPS with mTLS (a test CA, server and client certificate made here with openssl;
#          the client's SHA-256 fingerprint on the participant list), require_token = true,
#          allowed_roles, a bearer JWT (ES256, JWKS file, fresh jti per request) on every
#          request, consent asked of `beeldbrug mitz-sim` (cache warmed before timing)
#   tokens (PLAIN_TOKENS=1) the same as `on` but over plain HTTP: token + consent without
#          TLS, to tell the cost of TLS from the cost of the policy
# The audit store is on in every mode (it always is: one hash-chained record per request).
# Measured by benches/trust_bench.py (one persistent connection per mode; tokens minted
# before each timed part, never timed):
#   1. WADO-RS retrieve of one cached CT study (CT_SLICES slices, Accept multipart/related;
#      type="application/dicom"; transfer-syntax=*), WADO_REPS runs per mode, alternating,
#      median seconds and the on/off ratio; then CURL_REPS retrieves per mode with curl (C
#      client, new connection each), so that the client's TLS cost is not Python's;
#   2. QIDO-RS `/studies?PatientID=<one patient>` and `/studies?limit=25` without keys,
#      QIDO_QUERIES each per mode, every query sent to each mode in turn, p50/p99;
#   3. FRESH_QUERIES PatientID searches with a new connection (TCP + TLS handshake) per
#      request, labelled as such (0 skips it).
# Server CPU per request is read from /proc/<pid>/stat around each request.
#
# Usage: benches/trust.sh            (see benches/README.md)
# Environment (defaults in brackets):
#   BENCH_DIR [/tmp/beeldbrug-trust-bench]  inputs, stores, PKI and logs
#   CT_SLICES [300]      slices of the retrieved CT study (512x512x16 bit, ~0.5 MB each)
#   WADO_REPS [15]       retrieves per mode
#   QIDO_PATIENTS [500]  patients in the QIDO data, a 1-slice CT and a 1-slice MR study each
#   QIDO_QUERIES [300]   timed searches of each kind per mode (after an untimed warm-up)
#   FRESH_QUERIES [100]  timed PatientID searches on a new connection each, per mode; 0 skips
#   CURL_REPS [5]        retrieves per mode with curl (new connection each), after part 1; 0 skips
#   PLAIN_TOKENS [1]     also measure the `tokens` mode (trust on, plain HTTP); 0 skips it
#   PERF [0]             1: also `perf record` (DWARF call graphs) the `on` server during an
#                        extra, untimed QIDO run (profiles in $BENCH_DIR/perf-on*.txt)
#   PDU [131072]         max PDU of the storescu loads
#   BASE_PORT [11340]    DIMSE/HTTP ports BASE_PORT..BASE_PORT+5 on 127.0.0.1
#   BB_BIN [unset]       a beeldbrug binary to measure instead of building this checkout;
#                        BB_LABEL [unset] says in the report what it was built from
#   CARGO_TARGET_DIR [<repo>/target]   BEELDBRUG_LOG [warn]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-trust-bench}
CT_SLICES=${CT_SLICES:-300}
WADO_REPS=${WADO_REPS:-15}
QIDO_PATIENTS=${QIDO_PATIENTS:-500}
QIDO_QUERIES=${QIDO_QUERIES:-300}
FRESH_QUERIES=${FRESH_QUERIES:-100}
CURL_REPS=${CURL_REPS:-5}
PLAIN_TOKENS=${PLAIN_TOKENS:-1}
PERF=${PERF:-0}
PDU=${PDU:-131072}
BASE_PORT=${BASE_PORT:-11340}
BB_BIN=${BB_BIN:-}
HOST=127.0.0.1
CLIENT=$ROOT/benches/trust_bench.py
ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*'
OWN_URA=12345678
REMOTE_URA=87654321
ROLE=01.015
ISSUER=https://auth.bench.example
AUDIENCE=beeldbrug-trust-bench
export TCP_NODELAY=1 # DCMTK: disable Nagle

# shellcheck source=lib.sh
source "$ROOT/benches/lib.sh"

for tool in storescu echoscu; do
    [ -x "/usr/bin/$tool" ] || die "DCMTK $tool missing: apt-get install -y dcmtk"
done
for tool in curl openssl python3; do
    command -v "$tool" >/dev/null || die "$tool missing: apt-get install -y $tool"
done
python3 -c 'import jwt, cryptography' 2>/dev/null || die "python3 PyJWT/cryptography missing: pip install pyjwt cryptography"
[ "$PERF" = 0 ] || command -v perf >/dev/null || die "PERF=1 needs perf"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f\n", b - a }'; }
json() { python3 -c 'import json, sys; v = json.load(sys.stdin); [v := v[k] for k in sys.argv[1:]]; print(v)' "$@"; }
files_of() { find "$1" -type f -name '*.dcm' | sort; }
bytes_of() { find "$1" -type f -name '*.dcm' -printf '%s\n' | awk '{ s += $1 } END { print s }'; }
study_of() { find "$1" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' -quit; }
patients_of() { find "$1" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort; }

# gen NAME ARGS...: `beeldbrug generate` into $BENCH_DIR/input-NAME once; sets GEN_DIR
gen() {
    GEN_DIR=$BENCH_DIR/input-$1
    shift
    if [ ! -f "$GEN_DIR.complete" ]; then
        log "generating $GEN_DIR"
        rm -rf "$GEN_DIR"
        "$BB" generate -o "$GEN_DIR" "$@" >/dev/null
        touch "$GEN_DIR.complete"
    fi
}

START=$(now)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
# --- build and inputs ---------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
prepare_beeldbrug

gen "ct-$CT_SLICES" --seed 1 --patients 1 --ct-slices "$CT_SLICES" --mr-slices 0
CT_DIR=$GEN_DIR
gen "qido-$QIDO_PATIENTS" --seed 2 --patients "$QIDO_PATIENTS" --ct-slices 1 --mr-slices 1
QIDO_DIR=$GEN_DIR
N=$(files_of "$CT_DIR" | wc -l)
[ "$N" = "$CT_SLICES" ] || die "$CT_DIR holds $N files, expected $CT_SLICES"
QN=$(files_of "$QIDO_DIR" | wc -l)
MB=$(awk -v b="$(bytes_of "$CT_DIR")" 'BEGIN { printf "%.1f", b / 1e6 }')
STUDY=$(study_of "$CT_DIR")
{ patients_of "$CT_DIR"; patients_of "$QIDO_DIR"; } >"$BENCH_DIR/patients.txt"
NPAT=$(wc -l <"$BENCH_DIR/patients.txt")
[ "$(sort -u "$BENCH_DIR/patients.txt" | wc -l)" = "$NPAT" ] || die "the two generated trees share a patient ID"

# --- PKI, token issuer, participants, consent table ---------------------------------------
PKI=$BENCH_DIR/pki
if [ ! -f "$PKI/complete" ]; then
    log "making the test PKI in $PKI (openssl, EC P-256)"
    rm -rf "$PKI"
    mkdir -p "$PKI"
    (
        cd "$PKI"
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -keyout ca.key -out ca.pem -subj "/CN=beeldbrug bench CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        leaf() { # leaf NAME CN EKU SAN
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
            printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' "$3" "$4" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
                -extfile "$1.ext" -out "$1.pem" 2>/dev/null
        }
        leaf server localhost serverAuth "subjectAltName=IP:127.0.0.1,DNS:localhost"
        leaf client "bench remote gateway" clientAuth "subjectAltName=DNS:gateway.bench.example"
        # the token issuer's signing key (PKCS#8 PEM for PyJWT)
        openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out issuer.key
        python3 "$CLIENT" jwks issuer.key bench-1 jwks.json >/dev/null
        touch complete
    )
fi
FPR=$(openssl x509 -noout -fingerprint -sha256 -in "$PKI/client.pem" | cut -d= -f2)
cat >"$BENCH_DIR/participants.toml" <<EOF
[[participant]]
name = "Bench remote gateway"
ura = "$REMOTE_URA"
home_community_id = "urn:oid:2.16.840.1.113883.2.4.6.6.99"
certificate_sha256 = "$FPR"
EOF
awk '{ printf "[[consent]]\nbsn = \"%s\"\nrequester_ura = \"*\"\ndecision = \"Permit\"\n\n", $1 }' \
    "$BENCH_DIR/patients.txt" >"$BENCH_DIR/consents.toml"

# --- the consent simulator --------------------------------------------------------------------
"$BB" mitz-sim --listen "$HOST:0" --consents "$BENCH_DIR/consents.toml" \
    >"$BENCH_DIR/mitz.out" 2>"$BENCH_DIR/mitz.log" &
MITZ_PID=$!
PIDS+=("$MITZ_PID")
for _ in $(seq 1 100); do
    MITZ_URL=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^http/) print $i }' "$BENCH_DIR/mitz.out" | head -1)
    [ -n "$MITZ_URL" ] && break
    kill -0 "$MITZ_PID" 2>/dev/null || { cat "$BENCH_DIR/mitz.log" >&2; die "mitz-sim exited"; }
    sleep 0.1
done
[ -n "$MITZ_URL" ] || die "mitz-sim printed no URL (see $BENCH_DIR/mitz.log)"
log "mitz-sim at $MITZ_URL with $NPAT Permit rows"

# --- the servers ----------------------------------------------------------------------------
MODES=(off on)
[ "$PLAIN_TOKENS" = 1 ] && MODES+=(tokens)
declare -A DPORT=([off]=$BASE_PORT [on]=$((BASE_PORT + 2)) [tokens]=$((BASE_PORT + 4)))
declare -A HPORT=([off]=$((BASE_PORT + 1)) [on]=$((BASE_PORT + 3)) [tokens]=$((BASE_PORT + 5)))
declare -A SPID=() BASEURL=() LOADS=()

trust_toml() { # the [trust] part of `on` and `tokens`
    cat <<EOF
[dicomweb]
allow_anonymous = false
[trust]
participants_file = "$BENCH_DIR/participants.toml"
own_ura = "$OWN_URA"
require_token = true
allowed_roles = ["$ROLE"]
[[trust.jwt.issuers]]
issuer = "$ISSUER"
jwks_file = "$PKI/jwks.json"
audience = "$AUDIENCE"
[trust.consent]
url = "$MITZ_URL"
purposes = ["TREATMENT"]
cache_secs = 3600
timeout_secs = 5
EOF
}

write_config() { # write_config MODE DIR
    {
        cat <<EOF
[dimse]
listen = "$HOST:${DPORT[$1]}"
max_pdu = $PDU
[http]
listen = "$HOST:${HPORT[$1]}"
[storage]
data_dir = "$2/data"
EOF
        case $1 in
        off) printf '[dicomweb]\nallow_anonymous = true\n' ;;
        on)
            cat <<EOF
[tls]
cert_file = "$PKI/server.pem"
key_file = "$PKI/server.key"
client_ca_file = "$PKI/ca.pem"
EOF
            trust_toml
            ;;
        tokens) trust_toml ;;
        esac
    } >"$2/beeldbrug.toml"
}

health() { # health MODE: the HTTP(S) listener answers /health
    if [ "$1" = on ]; then
        curl -sf -o /dev/null --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client.key" \
            "https://$HOST:${HPORT[$1]}/health"
    else
        curl -sf -o /dev/null "http://$HOST:${HPORT[$1]}/health"
    fi
}

start_mode() { # start_mode MODE DIR: sets PID
    BEELDBRUG_LOG=${BEELDBRUG_LOG:-warn} "$BB" serve --config "$2/beeldbrug.toml" >>"$2/beeldbrug.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_ready BEELDBRUG "${DPORT[$1]}" "" "$PID" "$2/beeldbrug.log"
    for _ in $(seq 1 100); do
        health "$1" && return 0
        sleep 0.1
    done
    tail -20 "$2/beeldbrug.log" >&2
    die "$1: /health did not answer"
}

load() { # load MODE DIR SRC: storescu SRC into the mode's server
    /usr/bin/storescu -aet BENCH -aec BEELDBRUG --max-pdu "$PDU" +sd +r +sp "*.dcm" "$HOST" "${DPORT[$1]}" "$3" \
        >>"$2/storescu.log" 2>&1 || { tail -20 "$2/storescu.log" >&2; die "storescu to $1 failed"; }
}

for m in "${MODES[@]}"; do
    dir=$BENCH_DIR/store-$m
    rm -rf "$dir"
    mkdir -p "$dir"
    write_config "$m" "$dir"
    start_mode "$m" "$dir"
    t0=$(now)
    load "$m" "$dir" "$CT_DIR"
    load "$m" "$dir" "$QIDO_DIR"
    LOADS[$m]=$(since "$t0")
    got=$(find "$dir/data/blobs" -type f -name '*.dcm' | wc -l)
    [ "$got" = "$((N + QN))" ] || die "$m holds $got of $((N + QN)) instances after the load (see $dir)"
    # restart, so every server starts the measurement from the same state
    stop "$PID"
    start_mode "$m" "$dir"
    SPID[$m]=$PID
    scheme=http
    [ "$m" = on ] && scheme=https
    BASEURL[$m]=$scheme://$HOST:${HPORT[$m]}/dicomweb
    log "$m: ${BASEURL[$m]} (pid $PID), $((N + QN)) instances loaded in ${LOADS[$m]} s"
done
sync
sleep 2

# --- the measurements ---------------------------------------------------------------------
CONFIG=$BENCH_DIR/run.json
python3 - "$CONFIG" <<EOF
import json, sys
modes = {}
label = {"off": "off (HTTP, anonymous)", "on": "on (HTTPS mTLS + JWT + consent)",
         "tokens": "tokens (HTTP + JWT + consent, no TLS)"}
for m, base, pid in zip("${MODES[*]}".split(), "$(for m in "${MODES[@]}"; do printf '%s ' "${BASEURL[$m]}"; done)".split(),
                        "$(for m in "${MODES[@]}"; do printf '%s ' "${SPID[$m]}"; done)".split()):
    modes[m] = {"label": label[m], "base": base, "pid": int(pid), "token": m != "off"}
    if m == "on":
        modes[m].update(ca="$PKI/ca.pem", cert="$PKI/client.pem", key="$PKI/client.key")
patients = [l.strip() for l in open("$BENCH_DIR/patients.txt") if l.strip()]
json.dump({
    "modes": modes,
    "jwt": {"key_file": "$PKI/issuer.key", "kid": "bench-1", "issuer": "$ISSUER", "audience": "$AUDIENCE",
            "ura": "$REMOTE_URA", "uzi": "900000001", "role": "$ROLE", "purpose_of_use": "TREATMENT"},
    "accept": '$ACCEPT', "study": "$STUDY", "parts": $N,
    "patients": patients[1:],  # the QIDO tree's patients (the first is the CT study's)
    "wado_reps": $WADO_REPS, "qido_queries": $QIDO_QUERIES, "fresh_queries": $FRESH_QUERIES, "curl_reps": $CURL_REPS,
    "mitz_url": "$MITZ_URL", "seed": 1,
}, open(sys.argv[1], "w"), indent=1)
EOF
log "measuring: ${MODES[*]}, interleaved"
RUN_START=$(now)
python3 "$CLIENT" run "$CONFIG" >"$BENCH_DIR/results.json"
RUN_SECS=$(since "$RUN_START")

# audit records written (one per request, every mode)
AUDIT=""
for m in "${MODES[@]}"; do
    n=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute("select count(*) from audit_record").fetchone()[0])' \
        "$BENCH_DIR/store-$m/data/index.db" 2>/dev/null || echo '?')
    AUDIT="$AUDIT${AUDIT:+, }$m $n"
done

if [ "$PERF" = 1 ]; then
    log "perf record of the on server during an extra run (not part of the figures)"
    perf record -F 499 --call-graph dwarf,16384 -p "${SPID[on]}" -o "$BENCH_DIR/perf-on.data" -- sleep 3600 >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 1
    python3 - "$CONFIG" "$BENCH_DIR/run-perf.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["modes"] = {"on": c["modes"]["on"]}
c.update(fresh_queries=0, wado_reps=0, curl_reps=0)
json.dump(c, open(sys.argv[2], "w"))
EOF
    python3 "$CLIENT" run "$BENCH_DIR/run-perf.json" >/dev/null
    kill -INT "$PERF_PID"
    wait "$PERF_PID" || true
    # flat profile, and the share of samples under each part of the trust path (children)
    perf report -i "$BENCH_DIR/perf-on.data" --no-children --sort dso,symbol -g none --percent-limit 0.5 \
        --stdio 2>/dev/null | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' >"$BENCH_DIR/perf-on.txt" || true
    perf report -i "$BENCH_DIR/perf-on.data" --children --sort symbol -g none --stdio 2>/dev/null \
        | grep -E 'trust::|rustls::|dicomweb::|audit|consent|jwt|jsonwebtoken|sqlx|qido|Index' \
        | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -60 >"$BENCH_DIR/perf-on-children.txt" || true
fi
# --- report -----------------------------------------------------------------------------------
REPORT=$BENCH_DIR/results.md
{
    echo "## Trust on/off: results ($START_DATE)"
    echo
    echo "Machine: $(nproc) vCPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; whole run $(since "$START") s (measurements $RUN_SECS s); load average (1/5/15 min) $START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo "Versions: beeldbrug $BB_VERSION, $(/usr/bin/storescu --version | awk 'NR == 1' | tr -d '$'), $(openssl version | awk '{ print $1 " " $2 }'), Python $(python3 -c 'import platform, jwt; print(platform.python_version(), "PyJWT", jwt.__version__)')."
    echo "Data: one CT study of $N slices ($MB MB) retrieved; $QN more instances ($QIDO_PATIENTS patients, a 1-slice CT and MR study each) for QIDO; $NPAT Permit rows in the consent table. Audit records in each store at the end: $AUDIT."
    echo
    python3 "$CLIENT" report "$BENCH_DIR/results.json"
} | tee "$REPORT"
log "report written to $REPORT"
