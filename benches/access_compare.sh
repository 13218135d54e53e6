#!/usr/bin/env bash
# Access events benchmark: generates CloudTrail input files, then runs keywarden's parse +
# classify + count (benches/access_parse.rs, release build, one core) and the plain Python
# reference (benches/access_parse.py) on the same files, and prints events/s and peak memory.
# Usage: benches/access_compare.sh [N]   (default 50000 records; also runs 4*N for memory)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}
out=target/access-bench
mkdir -p "$out"
python=python3
command -v "$python" >/dev/null || { echo "python3 is required (apt-get install python3)" >&2; exit 1; }
cargo bench --bench access_parse --no-run >/dev/null 2>&1 || cargo bench --bench access_parse --no-run
for size in "$n" $((n * 4)); do
  file="$out/cloudtrail-$size.jsonl"
  [ -s "$file" ] || "$python" benches/gen_cloudtrail.py "$size" "$file"
  echo "== $size records ($(du -h "$file" | cut -f1))"
  cat "$file" >/dev/null   # both runs read it from the page cache
  # One core each: taskset pins the process when available.
  pin=(); command -v taskset >/dev/null && pin=(taskset -c 0)
  # Streamed: each reads the file line by line from the page cache (memory stays flat).
  KEYWARDEN_ACCESS_STREAM="$file" "${pin[@]}" cargo bench --bench access_parse 2>/dev/null | grep '^rust'
  "${pin[@]}" "$python" benches/access_parse.py "$file"
  # In memory: each reads the whole file first, untimed; only parse + classify + count is timed.
  KEYWARDEN_ACCESS_MEMORY=1 KEYWARDEN_ACCESS_STREAM="$file" "${pin[@]}" cargo bench --bench access_parse 2>/dev/null | grep '^rust'
  "${pin[@]}" "$python" benches/access_parse.py "$file" 3 --in-memory
done
