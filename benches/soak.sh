#!/usr/bin/env bash
# The kill -9 soak of tests/durability.rs, longer (issue 16, item 4): SIGKILL at random moments
# of concurrent C-STORE and STOW-RS re-sends, restart, check that nothing acknowledged is lost,
# index and blobs agree, no orphans or temp files remain. SQLite + filesystem and PostgreSQL
# (BEELDBRUG_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test).
#
#   benches/soak.sh [SECONDS per backend, default 600]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
SOAK_SECS="$secs" cargo test --release --test durability -- --nocapture --test-threads=1
