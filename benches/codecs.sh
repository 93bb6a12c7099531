#!/usr/bin/env bash
# Codec speed (issue 13): decode MB/s per codec, beeldbrug's one decode entry
# (`transcode::transcode_file` into Explicit VR LE, in process, release build; and the path it
# took before our own decoders, `decode-dicom-rs`, as the base) against DCMTK
# (dcmdjpls, dcmdjpeg, dcmdrle, dcmconv +te; processes, start-up floor measured) and pydicom
# with its plugins (in process; the only JPEG 2000 reference, Debian's DCMTK has none), on the
# same files made by independent encoders (tests/codecs/codecs.py bench); and the bytes on
# the wire for a study sent uncompressed versus JPEG-LS lossless on request, with the encode
# time. HTJ2K (OpenJPH) and JPEG XL (libjxl) files are decoded by imagecodecs beside, and
# JPEG 2000 by imagecodecs' OpenJPEG as well as pydicom's. Then, with STUDY=1 (the default),
# benches/codecs_study.sh with the release binary of this same build: the WADO-RS
# default-syntax retrieve of a J2K_MB (1024) MB JPEG 2000 study (time, RSS) and an
# uncompressed study as stored versus JPEG-LS lossless on request (bytes, time): issue 13's
# benchmark in one run. The load average is printed before and after. Prints Markdown tables
# (also $BENCH_DIR/results.md). Part 2 binds ports 11330-11331: run it all in `unshare -n`.
#
#   unshare -n bash -c 'ip link set lo up; CPU_TIME=1 benches/codecs.sh'   # the whole run
#   STUDY=0 benches/codecs.sh                # the per-codec decode table only
#   FRAMES=64 REPS=11 J2K_MB=256 benches/codecs.sh
#   CPU_TIME=1 benches/codecs.sh             # CPU time, not wall time (a machine shared with other work)
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=${STUDY:-1}
REPS=${REPS:-7}
ROWS=${ROWS:-512}
COLS=${COLS:-512}
FRAMES=${FRAMES:-16}
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-codecs-bench}
mkdir -p "$BENCH_DIR"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%H:%M)
# One release build for both parts: the bench binary and the server.
cargo build --release --quiet --bin beeldbrug
cargo bench --bench codecs --quiet --no-run
python3 tests/codecs/codecs.py bench "$BENCH_DIR" "$ROWS" "$COLS" "$FRAMES" > "$BENCH_DIR/manifest.json"
mapfile -t encoded < <(python3 -c 'import json,sys; [print(p) for p in json.load(open(sys.argv[1]))["encoded"].values()]' "$BENCH_DIR/manifest.json")
source_file=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"])' "$BENCH_DIR/manifest.json")
cargo bench --bench codecs --quiet -- decode "$REPS" "${encoded[@]}" > "$BENCH_DIR/decode.tsv"
# The same files through the decode path before our own decoders (the base, same binary).
cargo bench --bench codecs --quiet -- decode-dicom-rs "$REPS" "${encoded[@]}" > "$BENCH_DIR/decode-dicom-rs.tsv"
cargo bench --bench codecs --quiet -- encode "$REPS" 1.2.840.10008.1.2.4.80 "$source_file" > "$BENCH_DIR/encode.tsv"
cargo bench --bench codecs --quiet -- encode "$REPS" 1.2.840.10008.1.2.4.90 "$source_file" >> "$BENCH_DIR/encode.tsv"
cargo bench --bench codecs --quiet -- encode "$REPS" 1.2.840.10008.1.2.5 "$source_file" >> "$BENCH_DIR/encode.tsv"
{
    echo "beeldbrug $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' + uncommitted changes in src/'), started $STARTED UTC, load average $LOAD_BEFORE."
    echo
    CPU_TIME=${CPU_TIME:-0} python3 benches/codecs_bench.py "$BENCH_DIR/manifest.json" "$REPS" "$BENCH_DIR/decode.tsv" "$BENCH_DIR/encode.tsv" "$BENCH_DIR/decode-dicom-rs.tsv"
} | tee "$BENCH_DIR/results.md"
if [ "$STUDY" = 1 ]; then
    echo | tee -a "$BENCH_DIR/results.md"
    BB_BIN=${CARGO_TARGET_DIR:-target}/release/beeldbrug BENCH_DIR=$BENCH_DIR/study benches/codecs_study.sh
    cat "$BENCH_DIR/study/results.md" >>"$BENCH_DIR/results.md"
fi
echo "Ended $(date -u +%H:%M) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)." | tee -a "$BENCH_DIR/results.md"
