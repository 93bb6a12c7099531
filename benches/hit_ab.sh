#!/usr/bin/env bash
# A/B of the WADO-RS cache hit (issue 11's "hit ≥ 0.9 × a loopback copy"; docs/performance.md):
# one CT study stored in a beeldbrug data dir once (DCMTK storescu into the first BIN), then for
# each of REPS rounds and each BIN in turn a `serve` on that data dir answers the study's
# WADO-RS retrieve (transfer-syntax=*, benches/gateway_bench.py's client), and BIN `copy` is the
# loopback baseline (gateway_bench.py serve-copy: the same files read and written in the same
# framing). The order of the BINs turns every round. Prints one line per run: wall time, the
# server's CPU (utime + stime), its context switches (voluntary + involuntary), the client's
# CPU, load average; then the medians and each BIN's hit speed against the copy of its round.
#   nice -n -10 unshare -n bash -c 'ip link set lo up; benches/hit_ab.sh 7 copy /tmp/bb-a /tmp/bb-b'
# CT_SLICES [2000] instances of ~0.5 MB; BENCH_DIR [/tmp/beeldbrug-hit-bench].
# The BINs share one data dir: a build with a newer index schema migrates it and older ones then
# refuse it; compare builds of one schema, or give each schema its own BENCH_DIR.
set -euo pipefail
REPS=$1; shift
HOST=127.0.0.1; BBP=11340; HTTP=11341; COPY_PORT=11342
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIENT=$ROOT/benches/gateway_bench.py
B=${BENCH_DIR:-/tmp/beeldbrug-hit-bench}; CT_SLICES=${CT_SLICES:-2000}
source "$ROOT/benches/lib.sh"
ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*'
mkdir -p "$B"
first=""
for bin in "$@"; do [ "$bin" != copy ] && { first=$bin; break; }; done
[ -n "$first" ] || die "name at least one beeldbrug binary"
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
switches() { awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { s += $2 } END { print s }' "/proc/$1/status"; }
threads_switches() { local s=0 t; for t in /proc/$1/task/*/status; do s=$((s + $(awk '/ctxt_switches/ { x += $2 } END { print x }' "$t"))); done; echo $s; }

CT=$B/input-ct-$CT_SLICES
if [ ! -f "$CT.complete" ]; then
    log "generating $CT"
    rm -rf "$CT"; "$first" generate -o "$CT" --seed 1 --patients 1 --ct-slices "$CT_SLICES" --mr-slices 0 >/dev/null
    touch "$CT.complete"
fi
STUDY=$(find "$CT" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' -quit)
D=$B/served
cat >"$B/bb.toml" <<EOF
[dimse]
ae_title = "BEELDBRUG"
listen = "$HOST:$BBP"

[http]
listen = "$HOST:$HTTP"

[storage]
data_dir = "$D"
EOF
serve() { "$1" serve -c "$B/bb.toml" >>"$B/serve.log" 2>&1 & PID=$!; PIDS+=("$PID"); wait_ready BEELDBRUG "$BBP" "http://$HOST:$HTTP/health" "$PID" "$B/serve.log"; }
if [ ! -f "$D.complete" ]; then
    rm -rf "$D"; serve "$first"
    log "storing $CT_SLICES instances with storescu"
    /usr/bin/storescu -aet BENCH -aec BEELDBRUG +sd +r +sp '*.dcm' "$HOST" "$BBP" "$CT" >/dev/null 2>&1 || die "storescu failed"
    stop "$PID"; touch "$D.complete"
fi
URL=http://$HOST:$HTTP/dicomweb/studies/$STUDY
declare -A T C S K
run=0
for rep in $(seq 1 "$REPS"); do
    order=("$@"); [ $((rep % 2)) = 0 ] && order=($(printf '%s\n' "$@" | tac))
    for bin in "${order[@]}"; do
        run=$((run + 1))
        if [ "$bin" = copy ]; then
            python3 "$CLIENT" serve-copy "$D/blobs" --port "$COPY_PORT" >>"$B/copy.log" 2>&1 & PID=$!; PIDS+=("$PID")
            for _ in $(seq 1 50); do curl -s -o /dev/null "http://$HOST:$COPY_PORT/" && break; sleep 0.1; done
            url=http://$HOST:$COPY_PORT/copy
        else
            serve "$bin"; url=$URL
            # one untimed retrieve: index pages and files warm, as for the copy's files
            python3 "$CLIENT" wado "$url" --accept "$ACCEPT" >/dev/null
        fi
        sync; sleep 0.5
        c0=$(cpu "$PID"); s0=$(threads_switches "$PID")
        out=$(python3 "$CLIENT" wado "$url" --accept "$ACCEPT") || die "retrieve from $bin failed"
        c=$(awk -v a="$c0" -v b="$(cpu "$PID")" 'BEGIN { printf "%.3f", b - a }')
        s=$(( $(threads_switches "$PID") - s0 ))
        stop "$PID"
        parts=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["parts"])')
        [ "$parts" = "$CT_SLICES" ] || die "$bin gave $parts parts"
        t=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
        k=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpu"])')
        T[$bin]+="$t "; C[$bin]+="$c "; S[$bin]+="$s "; K[$bin]+="$k "
        printf '%s\trun %d\t%s\ttotal %s s\tserver CPU %s s\tswitches %s\tclient CPU %s s\tload %s\n' \
            "$(date -u +%H:%M:%S)" "$run" "$bin" "$t" "$c" "$s" "$k" "$(cut -d' ' -f1 /proc/loadavg)"
    done
done
med() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "medians of $REPS ($CT_SLICES instances):"
for bin in "$@"; do
    line="$bin: total $(med "${T[$bin]}") s, server CPU $(med "${C[$bin]}") s, switches $(med "${S[$bin]}"), client CPU $(med "${K[$bin]}") s"
    if [ "$bin" != copy ] && [ -n "${T[copy]:-}" ]; then
        # per round: the copy's time over this BIN's (its speed against the copy's)
        r=$(paste -d' ' <(printf '%s\n' ${T[copy]}) <(printf '%s\n' ${T[$bin]}) | awk '{ printf "%.3f\n", $1 / $2 }')
        line+=", speed vs copy $(awk -v a="$(med "${T[copy]}")" -v b="$(med "${T[$bin]}")" 'BEGIN { printf "%.2f", a / b }') (per round median $(med "$r"), $(printf '%s\n' $r | sort -g | head -1)-$(printf '%s\n' $r | sort -g | tail -1))"
    fi
    echo "$line"
done
