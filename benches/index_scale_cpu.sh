#!/usr/bin/env bash
# Gateway CPU per request on a national index (issue 16 item 7): for each backend, serve the
# NATIONAL index of a kept benches/index_scale.sh data set with build A, then with build B
# (each on its own copy of the data), run the QIDO-RS/ITI-18 mix of `index_scale.py queries`
# and read utime + stime of the serving process over it. Other processes' load does not
# inflate this figure as it does wall-time percentiles. PERF=1 also records a profile of B
# (perf record -g) to $OUT/perf-BACKEND.data.
#
#   A_DIR=/tmp/ix-gen A_BIN=/tmp/ix-bb-base B_DIR=/tmp/ix-new B_BIN=/tmp/ix-bb-new \
#     PORT_BASE=11520 benches/index_scale_cpu.sh
#
# A_DIR/B_DIR: BENCH_DIRs of `GENERATE_ONLY=1 KEEP=1 benches/index_scale.sh` runs made with
# the same PORT_BASE (their national.toml, keys.json and issuer.key are used as they are).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-100}
PORT_BASE=${PORT_BASE:-11320}
OUT=${OUT:-/tmp}
for backend in ${BACKENDS:-sqlite postgres}; do
  for who in A B; do
    dir_var=${who}_DIR; bin_var=${who}_BIN
    dir=${!dir_var}; bin=${!bin_var}
    if [ "$backend" = sqlite ]; then port=$((PORT_BASE + 3)); else port=$((PORT_BASE + 7)); fi
    "$bin" serve --config "$dir/$backend/national.toml" > "$OUT/cpu-$who-$backend.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
    python3 "$ROOT/benches/index_scale.py" queries "http://127.0.0.1:$port" "$dir/$backend/keys.json" \
        --n 10 --warmup 5 --seed 7 --label warm > /dev/null
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    perfpid=
    if [ "${PERF:-0}" = 1 ] && [ "$who" = B ]; then
      perf record -F 499 -g -p "$pid" -o "$OUT/perf-$backend.data" > /dev/null 2>&1 &
      perfpid=$!
    fi
    out=$(python3 "$ROOT/benches/index_scale.py" queries "http://127.0.0.1:$port" "$dir/$backend/keys.json" \
        --n "$N" --warmup 5 --seed 11 --label "$backend $who" --soap --jwt-key "$dir/issuer.key")
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    if [ -n "$perfpid" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
    reqs=$((N * 8))
    tick=$(getconf CLK_TCK)
    echo "### $backend $who ($bin) $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$out"
    echo "server CPU: $(python3 -c "print(f'{($t1 - $t0) * 1000 / $tick / $reqs:.2f}')") ms per request ($reqs requests)"
    echo
    kill "$pid"; wait "$pid" || true
  done
done
