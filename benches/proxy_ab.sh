#!/usr/bin/env bash
# CPU A/B of the DIMSE proxy's cache miss (docs/performance.md, "The proxied miss: CPU per
# instance"): for each of REPS rounds and each BIN in turn, a fresh beeldbrug with
# `[dimse] proxy_pacs = true` (`[pacs] retrieve = "c-get"`) on an empty data dir, then DCMTK
# getscu (or movescu into a fresh storescp) against it for the study of benches/gateway.sh;
# BIN `direct` asks Orthanc itself; BIN `relay` asks Orthanc through socat, a byte relay with no
# parsing and no cache (getscu: client -> socat -> Orthanc; movescu: Orthanc -> socat ->
# storescp): the least any proxy on the data path costs on this machine ("bb" is socat's CPU).
# MODE wado-get / wado-move: the WADO-RS cache miss instead (benches/gateway.sh's client,
# `gateway_bench.py wado`, against a fresh beeldbrug with `[pacs] retrieve = "c-get"` /
# `"c-move"`); there `direct` and `relay` are getscu / movescu (into storescp) as above, so that
# one run compares the WADO-RS miss with both. Other modes: RETRIEVE [c-get] sets how the
# proxying beeldbrug fetches. beeldbrug runs without RUST_BACKTRACE (a deployment default).
# Prints one line per run: wall time, beeldbrug's
# task-clock and context switches (perf stat; Orthanc's for `direct`), Orthanc's CPU and
# context switches, the client's CPU (rusage; + storescp's), files written, load average.
# Needs perf, root, and the inputs benches/gateway.sh prepared in BENCH_DIR (input-ct-2000,
# orthanc-ct-2000). Run in a network namespace of its own (fixed ports):
#   nice -n -10 unshare -n bash -c 'ip link set lo up; benches/proxy_ab.sh 3 getscu BIN_A BIN_B'
# PROFILE=1: also `perf record -g` of beeldbrug, into BENCH_DIR/ab/run-N/perf.data.
# THREADS=1: also beeldbrug's CPU and context switches per thread name (benches/thread_stats.py).
set -euo pipefail
REPS=$1; MODE=$2; shift 2
case $MODE in
  wado-get) TOOL=getscu; RETRIEVE=c-get ;;
  wado-move) TOOL=movescu; RETRIEVE=c-move ;;
  getscu | movescu) TOOL=$MODE; RETRIEVE=${RETRIEVE:-c-get} ;;
  *) echo "MODE: getscu, movescu, wado-get or wado-move" >&2; exit 2 ;;
esac
B=${BENCH_DIR:-/tmp/beeldbrug-gateway-bench}; HOST=127.0.0.1; BBP=11330; OP=11332; MP=11334
STUDY=$(find $B/input-ct-2000 -mindepth 2 -maxdepth 2 -type d -printf '%f\n' -quit)
export TCP_NODELAY=1
W=$B/ab; mkdir -p $W
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
/usr/sbin/Orthanc $B/orthanc-ct-2000/orthanc.json >>$W/orthanc.log 2>&1 &
OPID=$!
trap 'kill $OPID 2>/dev/null; wait $OPID 2>/dev/null' EXIT
for i in $(seq 1 100); do /usr/bin/echoscu -aec ORTHANC $HOST $OP >/dev/null 2>&1 && break; sleep 0.1; done
# warm Orthanc
/usr/bin/getscu -aet GETSCU -aec ORTHANC --max-pdu 131072 -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=$STUDY --ignore $HOST $OP >/dev/null 2>&1
n=0
for rep in $(seq 1 $REPS); do
  for bin in "$@"; do
    n=$((n+1))
    d=$W/run-$n; rm -rf $d; mkdir -p $d/out
    cat >$d/bb.toml <<EOF
[dimse]
ae_title = "BEELDBRUG"
listen = "$HOST:$BBP"
proxy_pacs = true

[[dimse.peers]]
ae_title = "MOVESCU"
host = "$HOST"
port = $MP

[http]
listen = "$HOST:11331"

[storage]
data_dir = "$d/data"

[pacs]
ae_title = "ORTHANC"
host = "$HOST"
port = $OP
retrieve = "$RETRIEVE"
probe_at_start = false
forward_stow = false
EOF
    AEC=BEELDBRUG; PORT=$BBP; SCPP=$MP
    if [ "$bin" = relay ]; then
      # One connection, no fork: perf stat follows the one process that copies the bytes.
      AEC=ORTHANC
      if [ "$TOOL" = getscu ]; then
        socat -b 131072 TCP-LISTEN:$BBP,reuseaddr,nodelay,bind=$HOST TCP:$HOST:$OP,nodelay &
      else
        PORT=$OP; SCPP=$((MP + 1))
        socat -b 131072 TCP-LISTEN:$MP,reuseaddr,nodelay,bind=$HOST TCP:$HOST:$SCPP,nodelay &
      fi
      P=$!
      sleep 0.5; sync
      perf stat -e task-clock,context-switches -p $P -o $d/stat.txt &
      SP=$!
    elif [ "$bin" = direct ]; then
      AEC=ORTHANC; PORT=$OP; sleep 1; sync
      perf stat -e task-clock,context-switches -p $OPID -o $d/stat.txt &
      SP=$!; P=
    else
      env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE BEELDBRUG_LOG=info $bin serve -c $d/bb.toml >$d/bb.log 2>&1 &
      P=$!
      for i in $(seq 1 100); do /usr/bin/echoscu -aec BEELDBRUG $HOST $BBP >/dev/null 2>&1 && break; sleep 0.1; done
      sleep 1; sync
      perf stat -e task-clock,context-switches -p $P -o $d/stat.txt &
      SP=$!
      if [ -n "${THREADS:-}" ]; then
        python3 $(dirname "$0")/thread_stats.py watch $P $d/threads0.json $d/threads1.json &
        TP=$!
      fi
      if [ -n "${PROFILE:-}" ]; then
        perf record -F 999 -g -p $P -o $d/perf.data >/dev/null 2>&1 &
        RP=$!
      fi
    fi
    perf stat -e task-clock,context-switches -p $OPID -o $d/ostat.txt &
    OSP=$!
    sleep 0.3
    o0=$(cpu $OPID)
    if [ -n "$P" ] && [ "$bin" != relay ] && [ "$MODE" != "$TOOL" ]; then
      # the WADO-RS cache miss (parts counted as files)
      t0=$(date +%s.%N)
      python3 $(dirname "$0")/gateway_bench.py wado http://$HOST:11331/dicomweb/studies/$STUDY >$d/client.json
      t1=$(date +%s.%N)
      ccpu=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["cpu"])' <$d/client.json)
      python3 -c 'import json, sys; print(json.load(sys.stdin)["parts"])' <$d/client.json >$d/out/parts
    elif [ "$TOOL" = getscu ]; then
      t0=$(date +%s.%N)
      /usr/bin/time -f '%U %S' -o $d/time.txt /usr/bin/getscu -aet GETSCU -aec $AEC --max-pdu 131072 -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=$STUDY -od $d/out $HOST $PORT >$d/client.log 2>&1
      t1=$(date +%s.%N)
      ccpu=$(awk '{print $1+$2}' $d/time.txt)
    else
      /usr/bin/storescp -aet MOVESCU --max-pdu 131072 -od $d/out $SCPP >$d/scp.log 2>&1 &
      SCP=$!
      for i in $(seq 1 100); do /usr/bin/echoscu -aec MOVESCU $HOST $SCPP >/dev/null 2>&1 && break; sleep 0.1; done
      t0=$(date +%s.%N)
      /usr/bin/time -f '%U %S' -o $d/time.txt /usr/bin/movescu -aet MOVECLIENT -aem MOVESCU -aec $AEC --max-pdu 131072 -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=$STUDY $HOST $PORT >$d/client.log 2>&1
      t1=$(date +%s.%N)
      sc=$(cpu $SCP); kill $SCP; wait $SCP 2>/dev/null || true
      ccpu=$(awk -v a="$(awk '{print $1+$2}' $d/time.txt)" -v b=$sc 'BEGIN{print a+b}')
    fi
    o1=$(cpu $OPID)
    kill -INT $SP $OSP 2>/dev/null || true; wait $SP $OSP 2>/dev/null || true
    if [ -n "${RP:-}" ]; then kill -INT $RP; wait $RP 2>/dev/null || true; RP=; fi
    if [ -n "${TP:-}" ]; then
      touch $d/threads1.json.stop; wait $TP 2>/dev/null || true; TP=
      python3 $(dirname "$0")/thread_stats.py diff $d/threads0.json $d/threads1.json | sed 's/^/    /'
    fi
    ocs=$(awk '/context-switches/ {gsub(",","",$1); print $1}' $d/ostat.txt)
    files=$(find $d/out -type f | wc -l)
    [ -f $d/out/parts ] && files=$(cat $d/out/parts)
    tc=$(awk '/task-clock/ {gsub(",","",$1); print $1/1000}' $d/stat.txt)
    cs=$(awk '/context-switches/ {gsub(",","",$1); print $1}' $d/stat.txt)
    [ -n "$P" ] && { kill $P 2>/dev/null || true; wait $P 2>/dev/null || true; }
    printf '%s wall=%.2f bb=%.2f cs=%s orthanc=%.2f ocs=%s client=%.2f files=%s load=%s\n' "$(basename $bin)" \
      "$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')" "$tc" "$cs" "$(awk -v a=$o0 -v b=$o1 'BEGIN{print b-a}')" "$ocs" "$ccpu" "$files" "$(cut -d' ' -f1 /proc/loadavg)"
    # truncate the outputs (no deletes for ext4's recently_deleted)
    find $d/out $d/data/blobs -type f -exec truncate -s 0 {} + 2>/dev/null || true
  done
done
