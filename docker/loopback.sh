#!/usr/bin/env bash
# The two-hospital topology of docker/compose.yml as plain processes on loopback, for a host
# without a container engine (issue 16; docs/operations.md "Two hospitals on loopback"):
#
#   hospital A: gateway A (PostgreSQL database twin_a, bucket hospital-a) before Orthanc A
#   hospital B: gateway B (PostgreSQL database twin_b, bucket hospital-b) before Orthanc B
#   (A's Orthanc finds and fetches B's studies through gateway A: C-FIND, C-MOVE)
#   shared:     PostgreSQL (the machine's), moto's S3 server, mitz-sim, Prometheus
#
# Gateways speak mTLS to each other (one test CA made here) and publish/fetch over XCA-I;
# Prometheus scrapes both gateways' /metrics over mTLS with a monitoring certificate that
# both participant lists name. Every port is a free one picked at start (nothing collides
# with another run); the chosen ones are written to WORKDIR/ports.env.
#
# Usage: docker/loopback.sh WORKDIR      starts everything, writes WORKDIR/ports.env and
#                                        WORKDIR/pids, and returns once all are up
#        docker/loopback.sh --stop WORKDIR
#        docker/loopback.sh --configs-only WORKDIR
#                                        only the certificates and configuration files, with
#                                        the standard ports and the host names of the
#                                        environment: what docker/compose.yml's `setup`
#                                        service runs (HOST_A, HOST_B, HOST_ORTHANC_A,
#                                        HOST_ORTHANC_B, HOST_MITZ, HOST_S3: where each
#                                        service is reached; LISTEN: what the services bind;
#                                        DATA_OWNER: owner of the gateways' data dirs;
#                                        DICOMWEB_PLUGIN: the plugin's path in Orthanc's image)
# Environment: BEELDBRUG (the binary; default target/debug/beeldbrug), PG_URL (an admin URL
# of the PostgreSQL server; default postgres://postgres@127.0.0.1:5432/postgres), PROMETHEUS
# (default /usr/bin/prometheus), ORTHANC (default /usr/sbin/Orthanc), DB_PREFIX (the
# databases are DB_PREFIX_a and DB_PREFIX_b; default twin).
set -euo pipefail

if [ "${1:-}" = --stop ]; then
    [ -f "$2/pids" ] && while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$2/pids"
    exit 0
fi
CONFIGS_ONLY=0
if [ "${1:-}" = --configs-only ]; then
    CONFIGS_ONLY=1
    shift
fi
W=$(mkdir -p "$1" && cd "$1" && pwd)
HOST_A=${HOST_A:-127.0.0.1} HOST_B=${HOST_B:-127.0.0.1} HOST_MITZ=${HOST_MITZ:-127.0.0.1}
HOST_ORTHANC_A=${HOST_ORTHANC_A:-127.0.0.1} HOST_ORTHANC_B=${HOST_ORTHANC_B:-127.0.0.1}
HOST_S3=${HOST_S3:-127.0.0.1} LISTEN=${LISTEN:-127.0.0.1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BB=${BEELDBRUG:-$ROOT/target/debug/beeldbrug}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PROMETHEUS=${PROMETHEUS:-/usr/bin/prometheus}
ORTHANC=${ORTHANC:-/usr/sbin/Orthanc}
DB_PREFIX=${DB_PREFIX:-twin}
DICOMWEB_PLUGIN=${DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
die() { echo "loopback: $*" >&2; exit 1; }
if [ "$CONFIGS_ONLY" = 1 ]; then tools=(openssl python3); else tools=("$BB" "$PROMETHEUS" "$ORTHANC" openssl psql curl python3); fi
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "$tool is missing (bash .ci/run installs it)"
done
: >"$W/pids"
started() { echo "$1" >>"$W/pids"; }
# wait_http NAME URL [CURL ARGS]: until URL answers (any status), or fail with NAME's log
wait_http() {
    local name=$1 url=$2
    shift 2
    for _ in $(seq 1 150); do
        curl -s -o /dev/null "$@" "$url" && return 0
        sleep 0.2
    done
    tail -20 "$W/$name.log" >&2 || true
    die "$name did not come up at $url"
}
# A free port below the kernel's ephemeral range (32768-60999), so that no outgoing
# connection takes it between this pick and the server's bind.
free_port() {
    python3 -c '
import random, socket
while True:
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    s.close()
    print(port)
    break'
}

# --- ports ------------------------------------------------------------------------------------
if [ "$CONFIGS_ONLY" = 1 ]; then
    # one service per container: the standard ports
    printf '%s\n' S3_PORT=5000 MITZ_PORT=8080 PROM_PORT=9090 A_DIMSE_PORT=11112 A_HTTP_PORT=8443 \
        B_DIMSE_PORT=11112 B_HTTP_PORT=8443 OA_DIMSE_PORT=4242 OA_HTTP_PORT=8042 \
        OB_DIMSE_PORT=4242 OB_HTTP_PORT=8042 >"$W/ports.env"
else
    for name in S3 MITZ PROM A_DIMSE A_HTTP B_DIMSE B_HTTP OA_DIMSE OA_HTTP OB_DIMSE OB_HTTP; do
        echo "${name}_PORT=$(free_port)"
    done >"$W/ports.env"
fi
# shellcheck disable=SC1091
. "$W/ports.env"

# --- certificates: one test CA; a certificate per gateway (server and client) and for the
# scraper; A's XUA signing key ----------------------------------------------------------------
cd "$W"
if [ ! -f ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=loopback test CA" -keyout ca-key.pem -out ca.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
    for who in a b monitoring; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
            -keyout "$who-key.pem" -out "$who.csr" 2>/dev/null
        printf "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:gateway-%s\nextendedKeyUsage=serverAuth,clientAuth\n" "$who" >"$who.ext"
        openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
            -out "$who.pem" -extfile "$who.ext" 2>/dev/null
    done
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=xua gateway-a" \
        -keyout xua-a-key.pem -out xua-a.pem 2>/dev/null
fi
fp() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }
FP_A=$(fp a.pem) FP_B=$(fp b.pem) FP_MON=$(fp monitoring.pem)

# --- participant lists: each gateway names the other and the scraper --------------------------
monitoring="[[participant]]
name = \"Monitoring\"
ura = \"33330000\"
home_community_id = \"urn:oid:1.2.3.4.5.33\"
certificate_sha256 = \"$FP_MON\""
cat >participants-a.toml <<EOT
[[participant]]
name = "GtK B"
ura = "22220000"
home_community_id = "urn:oid:1.2.3.4.5.22"
certificate_sha256 = "$FP_B"
query_url = "https://$HOST_B:$B_HTTP_PORT/xca/query"
retrieve_url = "https://$HOST_B:$B_HTTP_PORT/xca/retrieve"

$monitoring
EOT
cat >participants-b.toml <<EOT
[[participant]]
name = "GtK A"
ura = "11110000"
home_community_id = "urn:oid:1.2.3.4.5.21"
certificate_sha256 = "$FP_A"

$monitoring
EOT
cat >consents.toml <<EOT
[[consent]]
bsn = "999999990"
holder_ura = "22220000"
decision = "Permit"
EOT

pg_db() { python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG_URL" "$1"; }

# --- configuration: the PACS of each hospital (Orthanc, knowing its gateway as a modality) ----
orthanc_config() { # orthanc_config NAME DIMSE_PORT HTTP_PORT GATEWAY_HOST GATEWAY_PORT
    mkdir -p "$W/$1"
    cat >"$W/$1/orthanc.json" <<EOT
{
  "Name": "$1", "StorageDirectory": "$W/$1/store", "IndexDirectory": "$W/$1/store",
  "Plugins": ["$DICOMWEB_PLUGIN"], "HttpPort": $3, "RemoteAccessAllowed": $([ "$LISTEN" = 127.0.0.1 ] && echo false || echo true),
  "AuthenticationEnabled": false, "DicomServerEnabled": true, "DicomAet": "ORTHANC",
  "DicomPort": $2, "DicomCheckCalledAet": false, "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowStore": true, "DicomAlwaysAllowFind": true, "DicomAlwaysAllowGet": true,
  "DicomAlwaysAllowMove": true, "UnknownSopClassAccepted": true, "SaveJobs": false,
  "DicomModalities": { "BEELDBRUG": ["BEELDBRUG", "$4", $5] },
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
}
EOT
}
orthanc_config orthanc-a "$OA_DIMSE_PORT" "$OA_HTTP_PORT" "$HOST_A" "$A_DIMSE_PORT"
orthanc_config orthanc-b "$OB_DIMSE_PORT" "$OB_HTTP_PORT" "$HOST_B" "$B_DIMSE_PORT"

# --- configuration: the gateways -------------------------------------------------------------------
gateway_config() { # gateway_config a|b DIMSE HTTP PACS_HOST PACS_PORT URA < extra lines
    local who=$1 dimse=$2 http=$3 pacs_host=$4 pacs=$5 ura=$6
    cat >"$W/$who.toml" <<EOT
[dimse]
listen = "$LISTEN:$dimse"
allow_unknown_callers = false    # only the hospital's PACS below
[[dimse.peers]]                  # the hospital's PACS: a local user and the C-MOVE destination
ae_title = "ORTHANC"
host = "$pacs_host"
port = $pacs
organisation_ura = "$ura"
role = "01.015"
purpose_of_use = "TREAT"
uzi = "900012345"
[http]
listen = "$LISTEN:$http"
[dicomweb]
allow_anonymous = false
[storage]
data_dir = "$W/data-$who"
index = "$(pg_db "${DB_PREFIX}_$who")"
blobs = "s3://hospital-$who/gateway"
[storage.s3]
endpoint = "http://$HOST_S3:$S3_PORT"
region = "eu-central-1"
access_key_id = "loopback"
secret_access_key = "loopback"
allow_http = true
[pacs]
ae_title = "ORTHANC"
host = "$pacs_host"
port = $pacs
retrieve = "c-get"
probe_at_start = false
[tls]
cert_file = "$W/$who.pem"
key_file = "$W/$who-key.pem"
client_ca_file = "$W/ca.pem"
[trust]
participants_file = "$W/participants-$who.toml"
own_ura = "$ura"
$(cat)
EOT
}
gateway_config b "$B_DIMSE_PORT" "$B_HTTP_PORT" "$HOST_ORTHANC_B" "$OB_DIMSE_PORT" 22220000 <<EOT
[[trust.saml.trusted_issuers]]
issuer = "https://xua.gateway-a.test"
cert_file = "$W/xua-a.pem"
gateways = ["GtK A"]
[trust.consent]
url = "http://$HOST_MITZ:$MITZ_PORT/"
purposes = ["TREAT"]
custodian_ura = "22220000"
[xds]
enabled = true
home_community_id = "urn:oid:1.2.3.4.5.22"
repository_unique_id = "1.2.3.4.5.22.1"
source_id = "1.2.3.4.5.22.2"
organisation_name = "Ziekenhuis B"
quiet_secs = 5
EOT
gateway_config a "$A_DIMSE_PORT" "$A_HTTP_PORT" "$HOST_ORTHANC_A" "$OA_DIMSE_PORT" 11110000 <<EOT
[trust.saml]
issuer = "https://xua.gateway-a.test"
signing_cert_file = "$W/xua-a.pem"
signing_key_file = "$W/xua-a-key.pem"
[trust.consent]
url = "http://$HOST_MITZ:$MITZ_PORT/"
[remote]
enabled = true
localisation = "mitz"
timeout_secs = 10
EOT

# --- configuration: Prometheus, both gateways' /metrics over mTLS -----------------------------
cat >"$W/prometheus.yml" <<EOT
global:
  scrape_interval: 2s
scrape_configs:
  - job_name: beeldbrug
    metrics_path: /metrics
    scheme: https
    tls_config:
      ca_file: $W/ca.pem
      cert_file: $W/monitoring.pem
      key_file: $W/monitoring-key.pem
    static_configs:
      - targets: ["$HOST_A:$A_HTTP_PORT"]
        labels: { hospital: a }
      - targets: ["$HOST_B:$B_HTTP_PORT"]
        labels: { hospital: b }
EOT
mkdir -p "$W/data-a" "$W/data-b"
if [ "$CONFIGS_ONLY" = 1 ]; then
    # the gateways' image runs as an unprivileged user (docker/Dockerfile)
    [ -n "${DATA_OWNER:-}" ] && chown -R "$DATA_OWNER" "$W/data-a" "$W/data-b"
    chmod -R a+rX "$W"
    echo "loopback: configuration in $W"
    exit 0
fi

# --- start: PostgreSQL databases (made anew), S3 with a bucket per hospital, Mitz -------------
for db in "${DB_PREFIX}_a" "${DB_PREFIX}_b"; do
    PGOPTIONS=--client-min-messages=warning psql "$PG_URL" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
done
python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$W/s3.log" 2>&1 &
started $!
wait_http s3 "http://127.0.0.1:$S3_PORT/"
for bucket in hospital-a hospital-b; do
    curl -sf -X PUT "http://127.0.0.1:$S3_PORT/$bucket" >/dev/null || die "cannot make bucket $bucket"
done
"$BB" mitz-sim --listen "127.0.0.1:$MITZ_PORT" --consents consents.toml >"$W/mitz.log" 2>&1 &
started $!
wait_http mitz "http://127.0.0.1:$MITZ_PORT/stats"

# --- start: the two Orthanc, the two gateways (B first: A asks it), Prometheus ----------------
for pacs in "orthanc-a $OA_HTTP_PORT" "orthanc-b $OB_HTTP_PORT"; do
    set -- $pacs
    "$ORTHANC" "$W/$1/orthanc.json" >"$W/$1.log" 2>&1 &
    started $!
    wait_http "$1" "http://127.0.0.1:$2/system"
done
for gw in "b $B_HTTP_PORT" "a $A_HTTP_PORT"; do
    set -- $gw
    "$BB" serve --config "$W/$1.toml" >"$W/gateway-$1.log" 2>&1 &
    started $!
    wait_http "gateway-$1" "https://127.0.0.1:$2/health" --cacert ca.pem \
        --cert monitoring.pem --key monitoring-key.pem
done
"$PROMETHEUS" --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$W/prometheus.log" 2>&1 &
started $!
wait_http prometheus "http://127.0.0.1:$PROM_PORT/-/ready"
echo "loopback: up in $W (ports in $W/ports.env; stop with $0 --stop $W)"
