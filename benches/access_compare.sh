#!/usr/bin/env bash
# Access events benchmark: generates CloudTrail input files, then runs keywarden's parse +
# classify + count (benches/access_parse.rs, release build, one core) and the plain Python
# reference (benches/access_parse.py) on the same files, prints events/s and peak memory, and
# diffs the per-key counters of both sides (every (secret, event, outcome) count, the records
# and the skipped records) after every run: any difference is printed and the script exits 1.
# Usage: benches/access_compare.sh [N]   (default 50000 records; also runs 4*N for memory)
#        benches/access_compare.sh --quick [N]   (default 2000 records, one pass each, debug
#        build: the counter check only, in seconds; scripts/test runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
if [ "${1:-}" = "--quick" ]; then quick=true; shift; fi
python=python3
command -v "$python" >/dev/null || { echo "python3 is required (apt-get install python3)" >&2; exit 1; }
if $quick; then
  n=${1:-2000}
  sizes=("$n")
  # The debug build `cargo test` already made; `cargo test` runs the bench's main without
  # arguments, which is the streaming mode below.
  rust=(cargo test --locked --quiet --bench access_parse)
  export KEYWARDEN_ACCESS_REPEAT=1
  py_repeat=1
else
  n=${1:-50000}
  sizes=("$n" $((n * 4)))
  rust=(cargo bench --locked --bench access_parse)
  py_repeat=3
fi
out="${CARGO_TARGET_DIR:-target}/access-bench"
mkdir -p "$out"
"${rust[@]}" --no-run >/dev/null 2>&1 || "${rust[@]}" --no-run

# same_counts WHAT RUST PYTHON : diffs two counter files; on any difference prints it and exits 1.
same_counts() {
  if ! diff -u --label "rust $1" --label "python $1" "$2" "$3" >&2; then
    echo "MISMATCH: the per-key counters of keywarden and of the Python reference differ ($1)" >&2
    exit 1
  fi
  echo "counters: identical ($(grep -cv '^records \|^skipped ' "$2") series, $(grep '^records ' "$2"), $(grep '^skipped ' "$2"))"
}

for size in "${sizes[@]}"; do
  file="$out/cloudtrail-$size.jsonl"
  [ -s "$file" ] || "$python" benches/gen_cloudtrail.py "$size" "$file"
  echo "== $size records ($(du -h "$file" | cut -f1))"
  cat "$file" >/dev/null   # both runs read it from the page cache
  # One core each: taskset pins the process when available.
  pin=(); command -v taskset >/dev/null && pin=(taskset -c 0)
  rc="$out/counts-$size-rust.txt"; pc="$out/counts-$size-python.txt"
  rm -f "$rc" "$pc"
  # Streamed: each reads the file line by line from the page cache (memory stays flat).
  KEYWARDEN_ACCESS_COUNTS="$rc" KEYWARDEN_ACCESS_STREAM="$file" "${pin[@]}" "${rust[@]}" 2>/dev/null | grep '^rust'
  "${pin[@]}" "$python" benches/access_parse.py "$file" "$py_repeat" --counts "$pc"
  same_counts "streamed, $size records" "$rc" "$pc"
  $quick && continue
  rm -f "$rc" "$pc"
  # In memory: each reads the whole file first, untimed; only parse + classify + count is timed.
  KEYWARDEN_ACCESS_COUNTS="$rc" KEYWARDEN_ACCESS_MEMORY=1 KEYWARDEN_ACCESS_STREAM="$file" "${pin[@]}" "${rust[@]}" 2>/dev/null | grep '^rust'
  "${pin[@]}" "$python" benches/access_parse.py "$file" 3 --in-memory --counts "$pc"
  same_counts "in memory, $size records" "$rc" "$pc"
done
