#!/usr/bin/env bash
# fsync-family system calls of a beeldbrug binary while it ingests the 200-slice CT study of
# benches/ingest.sh over ASSOCS storescu associations (strace -f -c; divide by 200 for calls
# per instance). Usage: benches/ingest_fsyncs.sh BINARY [ASSOCS]   (port 11450/11451)
set -euo pipefail
BIN=$1; ASSOCS=${2:-1}
D=${BENCH_DIR:-/tmp/beeldbrug-bench}/st-$$; rm -rf $D; mkdir -p $D
CT=${BENCH_DIR:-/tmp/beeldbrug-bench}/input-ct-200
PORT=11450; HP=11451
BEELDBRUG_DIMSE__LISTEN=127.0.0.1:$PORT BEELDBRUG_HTTP__LISTEN=127.0.0.1:$HP BEELDBRUG_DIMSE__MAX_PDU=131072 \
  BEELDBRUG_STORAGE__DATA_DIR=$D/data BEELDBRUG_LOG=warn \
  strace -f -c -o $D/strace.txt -e trace=fsync,fdatasync,rename,renameat,renameat2,openat,sync_file_range,syncfs "$BIN" serve > $D/log 2>&1 &
SPID=$!
for i in $(seq 1 100); do /usr/bin/echoscu -aec BEELDBRUG 127.0.0.1 $PORT >/dev/null 2>&1 && break; sleep 0.2; done
find $CT -name '*.dcm' | sort > $D/list
pids=()
for i in $(seq 0 $((ASSOCS-1))); do
  awk -v n=$ASSOCS -v i=$i '(NR-1)%n==i' $D/list > $D/list.$i
  TCP_NODELAY=1 /usr/bin/storescu -aec BEELDBRUG --max-pdu 131072 127.0.0.1 $PORT $(cat $D/list.$i) > $D/scu.$i 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait $p; done
BPID=$(pgrep -P $SPID); kill -TERM $BPID; wait $SPID || true
echo "files: $(find $D/data/blobs -name '*.dcm' | wc -l)"
cat $D/strace.txt
tail -3 $D/scu.0; tail -3 $D/log; rm -rf $D
