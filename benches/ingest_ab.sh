#!/usr/bin/env bash
# One ingest run for A/B comparisons (issue 16 section 5): start TARGET (a beeldbrug binary,
# or "storescp" for DCMTK storescp --fork) on a fresh store, send the 200-slice CT study of
# benches/ingest.sh (CT input made by it first) over ASSOCS storescu associations at once
# (every ASSOCS-th file each), print wall time and the server's CPU seconds (utime + stime,
# children included, from /proc/<pid>/stat). Alternate targets in a loop for A/B:
#   for r in 1 2 3; do for b in storescp ./base ./new; do benches/ingest_ab.sh $b 4; done; done
# STRACE=1 (a beeldbrug TARGET): the server runs under `strace -f -c` for the fsync-family
# calls instead, printed after the run (divide by 200 for calls per instance).
# Usage: [STRACE=1] benches/ingest_ab.sh TARGET [ASSOCS]   (port 11460/11461 on 127.0.0.1)
set -euo pipefail
export TCP_NODELAY=1
BIN=$1; ASSOCS=${2:-1}
D=${BENCH_DIR:-/tmp/beeldbrug-bench}/ab-$$; rm -rf $D; mkdir -p $D
CT=${BENCH_DIR:-/tmp/beeldbrug-bench}/input-ct-200
PORT=11460; HP=11461
if [ "$BIN" = storescp ]; then
  mkdir -p $D/out; /usr/bin/storescp --fork -aet BEELDBRUG --max-pdu 131072 --output-directory $D/out $PORT > $D/log 2>&1 &
else
  trace=()
  [ -n "${STRACE:-}" ] && trace=(strace -f -c -o $D/strace.txt -e trace=fsync,fdatasync,rename,renameat,renameat2,openat,sync_file_range,syncfs)
  BEELDBRUG_DIMSE__LISTEN=127.0.0.1:$PORT BEELDBRUG_HTTP__LISTEN=127.0.0.1:$HP BEELDBRUG_DIMSE__MAX_PDU=131072 \
    BEELDBRUG_STORAGE__DATA_DIR=$D/data BEELDBRUG_LOG=warn "${trace[@]}" "$BIN" serve > $D/log 2>&1 &
fi
SPID=$!
for i in $(seq 1 100); do /usr/bin/echoscu -aec BEELDBRUG 127.0.0.1 $PORT >/dev/null 2>&1 && break; sleep 0.2; done
find $CT -name '*.dcm' | sort > $D/list
cpu() { awk -v hz=$(getconf CLK_TCK) '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13 + $14 + $15) / hz }' /proc/$SPID/stat; }
c0=$(cpu); t0=$(date +%s.%N)
pids=()
for i in $(seq 0 $((ASSOCS-1))); do
  awk -v n=$ASSOCS -v i=$i '(NR-1)%n==i' $D/list > $D/list.$i
  TCP_NODELAY=1 /usr/bin/storescu -aec BEELDBRUG --max-pdu 131072 127.0.0.1 $PORT $(cat $D/list.$i) > $D/scu.$i 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait $p; done
t1=$(date +%s.%N); c1=$(cpu)
echo "$(basename $BIN) assocs=$ASSOCS wall=$(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.3f", b-a}') cpu=$(awk -v a=$c0 -v b=$c1 'BEGIN{printf "%.2f", b-a}') load=$(cut -d' ' -f1 /proc/loadavg)"
if [ -n "${STRACE:-}" ]; then
  # strace prints its counts when the traced server exits
  BPID=$(pgrep -P $SPID); kill -TERM $BPID; wait $SPID || true
  echo "files: $(find $D/data/blobs -name '*.dcm' | wc -l)"
  cat $D/strace.txt
else
  echo "files: $(find $D/data/blobs -name "*.dcm" | wc -l)"; kill $SPID; wait $SPID 2>/dev/null || true
fi
rm -rf $D
