#!/usr/bin/env bash
# Runs one fuzz target for a bounded time on the committed seed corpus. New inputs go to a
# scratch corpus in the build tree, never into the source tree; a crash is saved there too.
set -euo pipefail
fuzzer=$1 seeds=$2 seconds=${3:-15}
work="$(dirname "$fuzzer")/fuzz-work/$(basename "$fuzzer")"
mkdir -p "$work/corpus"
exec "$fuzzer" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus" "$seeds"
