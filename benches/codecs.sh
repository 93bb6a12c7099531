#!/usr/bin/env bash
# Codec speed (issue 13): decode MB/s per codec, beeldbrug's one decode entry
# (`transcode::transcode_file` into Explicit VR LE, in process, release build; and the path it
# took before our own decoders, `decode-dicom-rs`, as the base) against DCMTK
# (dcmdjpls, dcmdjpeg, dcmdrle, dcmconv +te; processes, start-up floor measured) and pydicom
# with its plugins (in process; the only JPEG 2000 reference, Debian's DCMTK has none), on the
# same files made by independent encoders (tests/codecs/codecs.py bench); and the bytes on
# the wire for a study sent uncompressed versus JPEG-LS lossless on request, with the encode
# time. Prints a Markdown table (also $BENCH_DIR/results.md).
#
#   benches/codecs.sh                        # 16 frames of 512 x 512, 7 runs each
#   FRAMES=64 REPS=11 benches/codecs.sh
#   CPU_TIME=1 benches/codecs.sh             # CPU time, not wall time (a machine shared with other work)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-7}
ROWS=${ROWS:-512}
COLS=${COLS:-512}
FRAMES=${FRAMES:-16}
BENCH_DIR=${BENCH_DIR:-/tmp/beeldbrug-codecs-bench}
mkdir -p "$BENCH_DIR"
python3 tests/codecs/codecs.py bench "$BENCH_DIR" "$ROWS" "$COLS" "$FRAMES" > "$BENCH_DIR/manifest.json"
mapfile -t encoded < <(python3 -c 'import json,sys; [print(p) for p in json.load(open(sys.argv[1]))["encoded"].values()]' "$BENCH_DIR/manifest.json")
source_file=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"])' "$BENCH_DIR/manifest.json")
cargo bench --bench codecs --quiet -- decode "$REPS" "${encoded[@]}" > "$BENCH_DIR/decode.tsv"
# The same files through the decode path before our own decoders (the base, same binary).
cargo bench --bench codecs --quiet -- decode-dicom-rs "$REPS" "${encoded[@]}" > "$BENCH_DIR/decode-dicom-rs.tsv"
cargo bench --bench codecs --quiet -- encode "$REPS" 1.2.840.10008.1.2.4.80 "$source_file" > "$BENCH_DIR/encode.tsv"
cargo bench --bench codecs --quiet -- encode "$REPS" 1.2.840.10008.1.2.4.90 "$source_file" >> "$BENCH_DIR/encode.tsv"
cargo bench --bench codecs --quiet -- encode "$REPS" 1.2.840.10008.1.2.5 "$source_file" >> "$BENCH_DIR/encode.tsv"
CPU_TIME=${CPU_TIME:-0} python3 benches/codecs_bench.py "$BENCH_DIR/manifest.json" "$REPS" "$BENCH_DIR/decode.tsv" "$BENCH_DIR/encode.tsv" "$BENCH_DIR/decode-dicom-rs.tsv" | tee "$BENCH_DIR/results.md"
