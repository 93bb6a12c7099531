#!/usr/bin/env bash
# An index at national size (issue 16, item 7): 100,000 studies / 2,000,000 instances, on
# SQLite and on PostgreSQL. Per backend:
#   1. two indexes made by `beeldbrug serve` itself (migrated): EMPTY and NATIONAL;
#   2. a study stored into EMPTY by storescu and published by the XDS-I publisher: its registry
#      rows are the template every generated study's DocumentEntry/SubmissionSet is cloned from;
#   3. NATIONAL filled with generated rows (index_scale.py generate: the real tables, COPY /
#      executemany), then served by `beeldbrug serve` (release build);
#   4. QIDO-RS study searches and ITI-18 FindDocuments against NATIONAL over HTTP/SOAP
#      (index_scale.py queries): p50/p99 per kind;
#   5. C-STORE rate: storescu sends a fresh generated study (MR_SLICES instances) to EMPTY and
#      to NATIONAL in turn, CSTORE_REPS times each: median instances/s and their ratio;
#   6. EXPLAIN (ANALYZE) / EXPLAIN QUERY PLAN of the hot queries on NATIONAL.
# Then the databases and data directories are removed.
#
#   benches/index_scale.sh                       # both backends, defaults
#   BACKENDS=sqlite STUDIES=10000 INSTANCES=200000 benches/index_scale.sh   # quick
#   BB_BIN=/path/to/beeldbrug benches/index_scale.sh                        # no build
#
# Needs dcmtk (storescu, echoscu), python3 with requests and PyJWT, openssl, psql and a PostgreSQL server
# (PG_URL, default postgres://postgres@127.0.0.1:5432/postgres; a user that may CREATE
# DATABASE) for the postgres backend. Disk: about 1.3 GB (SQLite) + 1.7 GB (PostgreSQL)
# while it runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST=127.0.0.1
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-index-scale}
BACKENDS=${BACKENDS:-"sqlite postgres"}
STUDIES=${STUDIES:-100000}
INSTANCES=${INSTANCES:-2000000}
QUERIES=${QUERIES:-300}          # per query kind
LIMIT=${LIMIT:-101}              # QIDO-RS limit of the searches other than PatientID
MR_SLICES=${MR_SLICES:-200}      # instances per C-STORE run (256x256 16-bit MR, ~130 KB each)
CSTORE_REPS=${CSTORE_REPS:-5}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT_BASE=${PORT_BASE:-11320}
KEEP=${KEEP:-0}                  # 1: keep the data (and databases) for a look afterwards
EXPLAIN=${EXPLAIN:-1}            # 0: no EXPLAIN (e.g. BB_BIN of a build before migration 0010)
# Two steps (e.g. generate while a release build is still running): GENERATE_ONLY=1 KEEP=1
# stops after the data sets are made and keeps them; REUSE=1 then measures on them.
GENERATE_ONLY=${GENERATE_ONLY:-0}
REUSE=${REUSE:-0}
PY="python3 $ROOT/benches/index_scale.py"

source "$ROOT/benches/lib.sh"
mkdir -p "$BENCH_DIR"
prepare_beeldbrug
DBS=()
drop_dbs() {
    local db
    [ "$KEEP" = 1 ] && return 0
    for db in "${DBS[@]}"; do
        psql -X -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    done
}
trap 'cleanup; drop_dbs; [ "$KEEP" = 1 ] || rm -rf "$BENCH_DIR"/sqlite "$BENCH_DIR"/postgres' EXIT

pg_db_url() { echo "${PG_URL%/*}/$1"; }

# write_config DIR NAME INDEX_URL DIMSE_PORT HTTP_PORT QUIET
write_config() {
    cat > "$1/$2.toml" <<EOF
[dimse]
ae_title = "BEELDBRUG"
listen = "$HOST:$4"
[http]
listen = "$HOST:$5"
[server]
chain_probe_secs = 0
[storage]
data_dir = "$1/$2-data"
index = "$3"
min_free_bytes = 0
[xds]
enabled = true
quiet_secs = $6
home_community_id = "urn:oid:2.16.528.1.1007.99.1"
repository_unique_id = "2.16.528.1.1007.99.2"
source_id = "2.16.528.1.1007.99.3"
organisation_name = "Ziekenhuis Benchmark"
[trust]
own_ura = "00000123"
[[trust.jwt.issuers]]
issuer = "https://idp.index-scale.test"
jwks_file = "$BENCH_DIR/jwks.json"
audience = "beeldbrug-index-scale"
EOF
}

# serve DIR NAME DIMSE_PORT HTTP_PORT -> sets SERVED_PID
serve() {
    "$BB" serve --config "$1/$2.toml" > "$1/$2.log" 2>&1 &
    SERVED_PID=$!
    PIDS+=("$SERVED_PID")
    wait_ready BEELDBRUG "$3" "http://$HOST:$4/health" "$SERVED_PID" "$1/$2.log"
}

# cstore DIR PORT SEED -> instances/s of one storescu run of a fresh study
cstore() {
    local in="$1/in-$3"
    rm -rf "$in"
    "$BB" generate --out "$in" --seed "$3" --patients 1 --ct-slices 0 --mr-slices "$MR_SLICES" >/dev/null
    local n t0 t1
    n=$(find "$in" -name '*.dcm' | wc -l)
    sync
    t0=$(date +%s.%N)
    /usr/bin/storescu -aec BEELDBRUG +sd +r "$HOST" "$2" "$in" >/dev/null 2>"$1/storescu-$3.err" \
        || die "storescu to port $2 failed: $(tail -3 "$1/storescu-$3.err")"
    t1=$(date +%s.%N)
    rm -rf "$in"
    python3 -c "print(f'{$n / ($t1 - $t0):.1f}')"
}

median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.1f}')" "$@"; }

# ITI-18 needs verified claims: a bearer JWT (ES256) per request, from this key.
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null \
    | openssl pkcs8 -topk8 -nocrypt -out "$BENCH_DIR/issuer.key"
python3 "$ROOT/benches/trust_bench.py" jwks "$BENCH_DIR/issuer.key" bench-1 "$BENCH_DIR/jwks.json" >/dev/null

REPORT=$BENCH_DIR/results.md
{
    echo "# index_scale.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- beeldbrug: $BB_VERSION"
    echo "- machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- STUDIES=$STUDIES INSTANCES=$INSTANCES QUERIES=$QUERIES LIMIT=$LIMIT MR_SLICES=$MR_SLICES CSTORE_REPS=$CSTORE_REPS"
} > "$REPORT"

port=$PORT_BASE
for backend in $BACKENDS; do
    dir=$BENCH_DIR/$backend
    [ "$REUSE" = 1 ] || rm -rf "$dir"
    mkdir -p "$dir"
    e_dimse=$port; e_http=$((port + 1)); n_dimse=$((port + 2)); n_http=$((port + 3))
    port=$((port + 4))
    if [ "$backend" = sqlite ]; then
        e_index="sqlite://$dir/empty.db"; n_index="sqlite://$dir/national.db"
        n_target=(--sqlite "$dir/national.db"); e_target=(--sqlite "$dir/empty.db")
    else
        if [ "$REUSE" = 1 ]; then suffix=$(cat "$dir/suffix"); else suffix=$$; fi
        echo "$suffix" > "$dir/suffix"
        DBS+=("bb_national_$suffix" "bb_empty_$suffix")
        [ "$REUSE" = 1 ] || psql -X -q "$PG_URL" -c "CREATE DATABASE bb_national_$suffix" -c "CREATE DATABASE bb_empty_$suffix"
        e_index=$(pg_db_url "bb_empty_$suffix"); n_index=$(pg_db_url "bb_national_$suffix")
        n_target=(--postgres "$n_index"); e_target=(--postgres "$e_index")
    fi
    if [ "$REUSE" != 1 ]; then
    log "$backend: the template publication (one study into EMPTY, quiet_secs = 1)"
    write_config "$dir" empty "$e_index" "$e_dimse" "$e_http" 1
    serve "$dir" empty "$e_dimse" "$e_http"
    "$BB" generate --out "$dir/template-in" --seed 7 --patients 1 --ct-slices 0 --mr-slices 3 >/dev/null
    /usr/bin/storescu -aec BEELDBRUG +sd +r "$HOST" "$e_dimse" "$dir/template-in" >/dev/null
    for i in $(seq 1 100); do
        if $PY template "${e_target[@]}" "$dir/template.json" 2>/dev/null; then break; fi
        [ "$i" = 100 ] && die "the template study was not published within 20 s (log: $dir/empty.log)"
        sleep 0.2
    done
    stop "$SERVED_PID"
    log "$backend: NATIONAL: migrate, then generate $STUDIES studies / $INSTANCES instances"
    write_config "$dir" national "$n_index" "$n_dimse" "$n_http" 300
    serve "$dir" national "$n_dimse" "$n_http"
    stop "$SERVED_PID"
    t0=$(date +%s)
    $PY generate "${n_target[@]}" --studies "$STUDIES" --instances "$INSTANCES" \
        --xds-template "$dir/template.json" --keys "$dir/keys.json"
    gen_secs=$(( $(date +%s) - t0 ))
    echo "$gen_secs" > "$dir/gen_secs"
    [ "$GENERATE_ONLY" = 1 ] && continue
    fi
    gen_secs=$(cat "$dir/gen_secs")
    if [ "$backend" = sqlite ]; then
        size=$(du -sh "$dir/national.db" | cut -f1)
    else
        size=$(psql -X -qAt "$n_index" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")
    fi
    write_config "$dir" empty "$e_index" "$e_dimse" "$e_http" 300
    serve "$dir" national "$n_dimse" "$n_http"
    national_pid=$SERVED_PID
    serve "$dir" empty "$e_dimse" "$e_http"
    empty_pid=$SERVED_PID

    log "$backend: QIDO-RS and ITI-18 against NATIONAL"
    {
        echo
        echo "## $backend: $STUDIES studies, $INSTANCES instances (generated in ${gen_secs} s; index size $size)"
        echo
        $PY queries "http://$HOST:$n_http" "$dir/keys.json" --n "$QUERIES" --limit "$LIMIT" --soap --label "$backend" \
            --jwt-key "$BENCH_DIR/issuer.key"
    } | tee -a "$REPORT"

    log "$backend: C-STORE rate, EMPTY and NATIONAL in turn"
    empty_rates=(); national_rates=()
    for rep in $(seq 1 "$CSTORE_REPS"); do
        empty_rates+=("$(cstore "$dir" "$e_dimse" $((1000 + 2 * rep)))")
        national_rates+=("$(cstore "$dir" "$n_dimse" $((1001 + 2 * rep)))")
    done
    me=$(median "${empty_rates[@]}"); mn=$(median "${national_rates[@]}")
    {
        echo
        echo "| C-STORE ($backend, storescu, $MR_SLICES instances a run) | median inst/s | runs |"
        echo "|---|---:|---|"
        echo "| empty index | $me | ${empty_rates[*]} |"
        echo "| national index | $mn | ${national_rates[*]} |"
        echo
        echo "national / empty = $(python3 -c "print(f'{$mn / $me:.3f}')"), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    } | tee -a "$REPORT"
    stop "$empty_pid"
    stop "$national_pid"

    [ "$EXPLAIN" = 1 ] && log "$backend: EXPLAIN of the hot queries" && {
    {
        echo
        echo "### EXPLAIN ($backend)"
        echo
        $PY explain "${n_target[@]}" "$dir/keys.json"
    } >> "$REPORT"; }
    [ "$KEEP" = 1 ] || rm -rf "$dir"
done
log "report: $REPORT"
